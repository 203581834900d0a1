package policy

import (
	"net/netip"
	"strings"
	"testing"
)

func TestContentHash(t *testing.T) {
	p := &Policy{Namespace: "shop", Workload: "Deployment/web", Revision: 7, Mode: Protect,
		Egress: []Rule{{ID: "egress/api", Origin: OriginUser, Peer: "cidr:10.0.0.0/8", CIDRs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}},
		Names:  map[netip.Addr]string{netip.MustParseAddr("10.0.0.2"): "b", netip.MustParseAddr("10.0.0.1"): "a"}}
	h := ContentHash(p)
	q := *p
	q.Revision = 8
	if ContentHash(&q) != h {
		t.Error("hash depends on the revision")
	}
	if p.Revision != 7 {
		t.Error("ContentHash changed its argument")
	}
	q.Egress = []Rule{{ID: "egress/api", Origin: OriginUser, Peer: "cidr:10.0.0.0/8", CIDRs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/9")}}}
	if ContentHash(&q) == h {
		t.Error("hash ignores a changed CIDR")
	}
	// Decoding what was encoded gives the same hash (map order, address forms).
	data := []byte(`{"namespace":"shop","workload":"Deployment/web","revision":9,"mode":"Protect","egress":[{"id":"egress/api","origin":"user","peer":"cidr:10.0.0.0/8","cidrs":["10.0.0.0/8"]}],"names":{"10.0.0.2":"b","10.0.0.1":"a"}}`)
	d, err := Decode(data)
	if err != nil {
		t.Fatal(err)
	}
	if ContentHash(d) != h {
		t.Error("a decoded copy hashes differently")
	}
}

// TestHasherStreams: a Hasher fed by Stream gives the decoded policy's ContentHash, whatever order the
// document gives its parts in.
func TestHasherStreams(t *testing.T) {
	for _, doc := range []string{
		`{"namespace":"shop","mode":"Protect","ingress":[{"id":"i","origin":"user"}],"egress":[{"id":"a","origin":"user"},{"id":"b","origin":"learned"}],"names":{"10.0.0.1":"a"}}`,
		`{"egress":[{"id":"a","origin":"user"},{"id":"b","origin":"learned"}],"names":{"10.0.0.1":"a"},"ingress":[{"id":"i","origin":"user"}],"mode":"Protect","namespace":"shop","revision":4}`,
	} {
		var h Hasher
		p, err := Stream(strings.NewReader(doc), h.Rule)
		if err != nil {
			t.Fatal(err)
		}
		whole, err := Decode([]byte(doc))
		if err != nil {
			t.Fatal(err)
		}
		if got, want := h.Sum(p), ContentHash(whole); got != want {
			t.Errorf("%s: streamed hash %s, ContentHash %s", doc, got, want)
		}
	}
	var swapped Hasher
	swapped.Rule(Egress, Rule{ID: "i", Origin: OriginUser})
	p := &Policy{Mode: Protect, Ingress: []Rule{{ID: "i", Origin: OriginUser}}}
	if swapped.Sum(&Policy{Mode: Protect}) == ContentHash(p) {
		t.Error("a rule hashes the same as ingress and as egress")
	}
}
