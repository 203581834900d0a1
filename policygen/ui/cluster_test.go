package ui_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"podwall.io/podwall/api/policy"
	v1 "podwall.io/podwall/api/v1alpha1"
	"podwall.io/podwall/internal/certs"
	"podwall.io/podwall/internal/testutil"
	"podwall.io/podwall/policygen/internal/pgtest"
	"podwall.io/podwall/policygen/kubeauth"
	"podwall.io/podwall/policygen/policyapi"
	"podwall.io/podwall/policygen/ui"
	"podwall.io/podwall/policygen/workload"
)

// replica is one policygen replica's UI, serving on 127.0.0.1 with the Service's certificate.
type replica struct {
	name string
	feed *ui.Feed
	addr string
}

// TestClusterVerdicts runs three replicas' UIs against a real API server, which lists them in their
// Service's EndpointSlices: a, whose cluster stream, map and workloads page the test reads; b, whose
// share a merges; and c, listed but down, which a must name rather than leave out.
func TestClusterVerdicts(t *testing.T) {
	cfg, c := pgtest.Start(t)
	ctx := context.Background()
	cs := kubernetes.NewForConfigOrDie(cfg)
	pgtest.Namespace(t, c, "podwall-system", nil)
	pgtest.Namespace(t, c, "ops", nil)
	k := pgtest.Cluster{T: t, C: c, Cfg: cfg}
	k.Create(&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "podwall-system", Name: "podwall-policygen"},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "api", Port: ui.APIPort}}}})
	serving := certs.Serving{Namespace: "podwall-system", Service: "podwall-policygen"}
	ca, err := certs.NewCA("test-ca", time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.Issue(certs.Request{CommonName: "policygen", Hosts: serving.Hosts(), Now: time.Now(), Validity: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	reviewer, err := kubeauth.New(cs, kubeauth.Options{})
	if err != nil {
		t.Fatal(err)
	}
	// An EndpointSlice may not list a loopback address: the replicas listen on the host's.
	host := hostIP(t)
	peers := &ui.Peers{Namespace: "podwall-system", Service: "podwall-policygen", Port: ui.APIPort, ServerName: serving.Hosts()[0],
		CA: func(context.Context) (*x509.CertPool, error) { return pool, nil }}
	start := func(name string) *replica {
		feed := ui.NewFeed(c, 0)
		srv := httptest.NewUnstartedServer(ui.New(ui.Options{Replica: name, Peers: peers, KeepAlive: 100 * time.Millisecond},
			c, c, reviewer, feed, testr.New(t)).Handler())
		srv.Listener.Close()
		srv.Listener = listen(t, host)
		srv.TLS = &tls.Config{Certificates: []tls.Certificate{leaf.TLSCertificate()}, MinVersion: tls.VersionTLS12}
		srv.StartTLS()
		t.Cleanup(srv.Close)
		return &replica{name: name, feed: feed, addr: srv.Listener.Addr().String()}
	}
	a, b := start("policygen-a"), start("policygen-b")
	ln := listen(t, host)
	down := &replica{name: "policygen-c", addr: ln.Addr().String()}
	ln.Close()
	for _, r := range []*replica{a, b, down} {
		_, port, _ := net.SplitHostPort(r.addr)
		n, _ := strconv.Atoi(port)
		k.Create(&discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: "podwall-system", Name: r.name,
			Labels: map[string]string{discoveryv1.LabelServiceName: "podwall-policygen"}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("api"), Port: ptr.To(int32(n))}},
			Endpoints: []discoveryv1.Endpoint{{Addresses: []string{host}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)},
				TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: "podwall-system", Name: r.name}}}})
	}
	pgtest.Namespace(t, c, "shop", nil)
	for _, name := range []string{"web", "api"} {
		k.Create(&v1.WorkloadPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: workload.PolicyName("Deployment", name)},
			Spec: v1.WorkloadPolicySpec{Workload: v1.WorkloadRef{Kind: "Deployment", Name: name}}})
	}
	viewer := token(t, k, cs, "viewer", "list")
	nobody := token(t, k, cs, "nobody", "get")
	record(a, "web", 5432)
	record(b, "api", 6379)

	https := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: serving.Hosts()[0], MinVersion: tls.VersionTLS12}}}
	// get asks a for ui/api/<path>.
	get := func(ctx context.Context, path, tok, lastID string) *http.Response {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, "GET", "https://"+a.addr+"/ui/api/"+path, nil)
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		if lastID != "" {
			req.Header.Set("Last-Event-ID", lastID)
		}
		resp, err := https.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}

	t.Run("access", func(t *testing.T) {
		for _, tt := range []struct {
			name, query, token string
			want               int
		}{
			{"no token", "follow=false", "", http.StatusUnauthorized},
			{"a user who may not list policies", "follow=false", nobody, http.StatusForbidden},
			{"a bad cursor", "after=7", viewer, http.StatusBadRequest},
			{"a bad follow", "follow=sometimes", viewer, http.StatusBadRequest},
			{"a bad filter", "verdict=allow", viewer, http.StatusBadRequest},
		} {
			resp := get(ctx, "cluster/verdicts?"+tt.query, tt.token, "")
			resp.Body.Close()
			if resp.StatusCode != tt.want {
				t.Errorf("%s: %s, want %d", tt.name, resp.Status, tt.want)
			}
		}
	})

	var last string
	t.Run("every replica's backlog", func(t *testing.T) {
		var resp *http.Response
		// RBAC takes the new binding into account a moment later.
		testutil.Eventually(t, 10*time.Second, func() error {
			if resp = get(ctx, "cluster/verdicts?follow=false", viewer, ""); resp.StatusCode != http.StatusOK {
				resp.Body.Close()
				return errors.New(resp.Status)
			}
			return nil
		})
		defer resp.Body.Close()
		got := map[string]ui.Event{}
		var unreachable []ui.Unreachable
		err := ui.ReadEvents(resp.Body, func(event, id, data string) error {
			switch event {
			case "":
				var v ui.Event
				if err := json.Unmarshal([]byte(data), &v); err != nil {
					return err
				}
				got[v.Replica] = v
				last = id
			case "unreachable":
				var u ui.Unreachable
				if err := json.Unmarshal([]byte(data), &u); err != nil {
					return err
				}
				unreachable = append(unreachable, u)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if v := got["policygen-a"]; v.Workload != "Deployment/web" || v.Port != 5432 {
			t.Errorf("a's verdict: %+v, want web's deny of port 5432", v)
		}
		if v := got["policygen-b"]; v.Workload != "Deployment/api" || v.Port != 6379 {
			t.Errorf("b's verdict: %+v, want api's deny of port 6379 (b checked the viewer's forwarded token)", v)
		}
		if len(got) != 2 {
			t.Errorf("verdicts of %d replicas, want 2: %v", len(got), got)
		}
		if len(unreachable) != 1 || unreachable[0].Replica != "policygen-c" || unreachable[0].Error == "" {
			t.Errorf("unreachable %+v, want policygen-c named with its error", unreachable)
		}
		if last != "policygen-a=1,policygen-b=1" {
			t.Errorf("last id %q, want the cursor policygen-a=1,policygen-b=1", last)
		}
	})

	t.Run("the map and the workloads merge every replica's share", func(t *testing.T) {
		checkMergedShares(t, func(path, tok string) *http.Response { return get(ctx, path, tok, "") }, viewer)
	})

	t.Run("follow resumes at every replica", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		resp := get(ctx, "cluster/verdicts?verdict=deny", viewer, last)
		defer resp.Body.Close()
		record(b, "api", 6380)
		record(a, "web", 5433)
		got := map[uint16]string{}
		err := ui.ReadEvents(resp.Body, func(event, _, data string) error {
			if event != "" {
				return nil
			}
			var v ui.Event
			if err := json.Unmarshal([]byte(data), &v); err != nil {
				return err
			}
			got[v.Port] = v.Replica
			if len(got) == 2 {
				return errDone
			}
			return nil
		})
		if err != errDone {
			t.Fatalf("stream ended: %v, got %v", err, got)
		}
		if got[6380] != "policygen-b" || got[5433] != "policygen-a" {
			t.Errorf("after the cursor: %v, want only the new verdicts, 6380 from b and 5433 from a", got)
		}
	})
}

var errDone = errors.New("done")

// checkMergedShares: the map and the workloads page asked of a hold b's share too (its flows, counts
// and pod states, read with the caller's token), and name c, which does not answer.
func checkMergedShares(t *testing.T, get func(path, tok string) *http.Response, viewer string) {
	decode := func(path string, v any) {
		t.Helper()
		resp := get(path, viewer)
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %s", path, resp.Status)
		}
		if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
			t.Fatal(err)
		}
	}
	var g ui.Graph
	decode("graph?window=1h", &g)
	ports := map[string]uint64{}
	for _, e := range g.Edges {
		for _, p := range e.Ports {
			ports[e.From+" "+p] += e.Count
		}
	}
	if ports["shop/Deployment/web TCP 5432"] != 1 || ports["shop/Deployment/api TCP 6379"] != 1 {
		t.Errorf("map edges by port %v, want web's 5432 (a's) and api's 6379 (b's), once each", ports)
	}
	for _, n := range g.Nodes {
		if n.ID == "shop/Deployment/api" && (len(n.Pods) != 1 || n.Pods[0].Pod != "api-0") {
			t.Errorf("api's node has pods %+v, want api-0 as it reported to b", n.Pods)
		}
	}
	wantReplicas := func(what string, answered []string, unreachable []ui.Unreachable) {
		t.Helper()
		if !slices.Equal(answered, []string{"policygen-a", "policygen-b"}) {
			t.Errorf("%s holds replicas %v, want policygen-a and policygen-b", what, answered)
		}
		if len(unreachable) != 1 || unreachable[0].Replica != "policygen-c" || unreachable[0].Error == "" {
			t.Errorf("%s names unreachable %+v, want policygen-c with its error", what, unreachable)
		}
	}
	wantReplicas("the map", g.Answered, g.Unreachable)

	var w struct {
		Workloads   []ui.Row
		Replicas    []string
		Unreachable []ui.Unreachable
	}
	decode("workloads", &w)
	lastHour := map[string]uint64{}
	for _, r := range w.Workloads {
		lastHour[r.Workload] = r.LastHour
	}
	if lastHour["Deployment/web"] != 1 || lastHour["Deployment/api"] != 1 {
		t.Errorf("last hour's denies by workload %v, want 1 for web (a's) and 1 for api (b's)", lastHour)
	}
	wantReplicas("the workloads page", w.Replicas, w.Unreachable)

	resp := get("local?window=2h", viewer)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("a replica's share of a window it does not offer: %s, want 400", resp.Status)
	}
	resp = get("graph", "")
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("the map without a token: %s, want 401", resp.Status)
	}
}

// hostIP is an IPv4 address of this host other than loopback.
func hostIP(t *testing.T) string {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if p, ok := a.(*net.IPNet); ok && p.IP.To4() != nil && !p.IP.IsLoopback() && !p.IP.IsLinkLocalUnicast() {
			return p.IP.String()
		}
	}
	t.Fatal("this host has no IPv4 address but loopback, which an EndpointSlice may not list")
	return ""
}

func listen(t *testing.T, host string) net.Listener {
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// record has replica r take a report of one deny from a pod of workload name in namespace shop.
func record(r *replica, name string, port uint16) {
	id := policyapi.Identity{Pod: types.NamespacedName{Namespace: "shop", Name: name + "-0"},
		Workload: workload.Key{Namespace: "shop", Kind: "Deployment", Name: name}}
	r.feed.Record(context.Background(), id, &policy.Report{Mode: policy.Protect, Entries: []policy.ReportEntry{{
		Direction: policy.Egress, Peer: netip.MustParseAddr("10.9.0.1"), Protocol: policy.TCP, Port: port, Count: 1,
		Verdict: policy.Deny, Rule: "default", Evaluator: "default", LastSeen: time.Now()}}})
}

// token returns a token of a new ServiceAccount ops/name that may do verbs on WorkloadPolicies in
// every namespace, as kubectl create token would issue it.
func token(t *testing.T, k pgtest.Cluster, cs kubernetes.Interface, name string, verbs ...string) string {
	t.Helper()
	k.Create(&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: "ops", Name: name}})
	k.Create(&rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "ui-" + name},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{"podwall.io"}, Resources: []string{"workloadpolicies"}, Verbs: verbs}}})
	k.Create(&rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "ui-" + name},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "ui-" + name},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Namespace: "ops", Name: name}}})
	tr, err := cs.CoreV1().ServiceAccounts("ops").CreateToken(context.Background(), name, &authnv1.TokenRequest{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return tr.Status.Token
}
