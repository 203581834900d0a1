package policy

import (
	"net/netip"
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
