package ruleset

import (
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/xt"

	"podwall.io/podwall/api/policy"
	"podwall.io/podwall/internal/netnstest"
	"podwall.io/podwall/internal/testutil"
	"podwall.io/podwall/sidecar/ruleset/marktest"
)

var update = flag.Bool("update", false, "rewrite the testdata/*.nft golden files")

// TestMain checks that no test touched the host's podwall table: every test works in namespaces of
// its own. (The rest of the host's ruleset belongs to others, who may change it meanwhile.) Started as
// marktest's attacker, the binary attacks instead.
func TestMain(m *testing.M) {
	marktest.Main()
	flag.Parse()
	host := func() string {
		out, _ := exec.Command("nft", "list", "table", "inet", TableName).CombinedOutput()
		return string(out)
	}
	before := host()
	code := m.Run()
	if after := host(); after != before {
		fmt.Fprintf(os.Stderr, "host table inet %s changed during the tests:\nbefore:\n%s\nafter:\n%s\n", TableName, before, after)
		code = 1
	}
	os.Exit(code)
}

func pfx(s string) []netip.Prefix { return []netip.Prefix{netip.MustParsePrefix(s)} }

func tcp(port uint16) []policy.PortRange {
	return []policy.PortRange{{Protocol: policy.TCP, Port: port}}
}

// samplePolicy has a rule of each shape: a port, a range, no ports (every protocol), IPv6, a loopback
// deny and a loopback allow, and a /24 with one of its addresses on another port (overlap).
func samplePolicy(mode policy.Mode) *policy.Policy {
	return &policy.Policy{Namespace: "shop", Workload: "Deployment/web", Revision: 3, Mode: mode,
		Ingress: []policy.Rule{
			{ID: "in-lb", Origin: policy.OriginManifest, CIDRs: pfx("10.1.0.0/16"), Ports: tcp(8080)},
			{ID: "in-v6", Origin: policy.OriginLearned, CIDRs: pfx("fd00:1::/64"), Ports: tcp(8080)},
		},
		Egress: []policy.Rule{
			{ID: "db", Origin: policy.OriginUser, CIDRs: pfx("10.2.0.5/32"), Ports: tcp(5432)},
			{ID: "dns", Origin: policy.OriginManifest, CIDRs: pfx("fd00:2::53/128"),
				Ports: []policy.PortRange{{Protocol: policy.UDP, Port: 53}, {Protocol: policy.TCP, Port: 53}}},
			{ID: "partner", Origin: policy.OriginUser, CIDRs: pfx("192.0.2.0/24")},
			{ID: "high", Origin: policy.OriginLearned, CIDRs: pfx("192.0.2.9/32"),
				Ports: []policy.PortRange{{Protocol: policy.TCP, Port: 30000, EndPort: 32767}}},
			{ID: "web", Origin: policy.OriginLearned, CIDRs: pfx("198.51.100.0/24"), Ports: tcp(443)},
			{ID: "web-one", Origin: policy.OriginLearned, CIDRs: pfx("198.51.100.7/32"), Ports: tcp(80)},
		},
		Loopback: []policy.LoopbackRule{
			{ID: "admin", Origin: policy.OriginUser, Action: policy.ActionDeny, Ports: tcp(15000)},
			{ID: "app", Origin: policy.OriginManifest, Action: policy.ActionAllow, Ports: tcp(8080)},
		},
	}
}

// sampleSelfDests are a sidecar's own destinations: policygen, and DNS servers, one of them an IPv4
// address written as IPv6.
var sampleSelfDests = []Dest{
	{Proto: policy.TCP, Addr: netip.MustParseAddrPort("10.96.0.7:9443")},
	{Proto: policy.UDP, Addr: netip.MustParseAddrPort("[::ffff:10.96.0.10]:53")},
	{Proto: policy.TCP, Addr: netip.MustParseAddrPort("10.96.0.10:53")},
	{Proto: policy.UDP, Addr: netip.MustParseAddrPort("[fd00:96::a]:53")},
}

// sampleDNSServers are a pod's resolvers: cluster DNS in both families, and one on another port.
var sampleDNSServers = []netip.AddrPort{netip.MustParseAddrPort("10.96.0.10:53"), netip.MustParseAddrPort("[fd00:96::a]:53"),
	netip.MustParseAddrPort("10.96.0.11:5353")}

func dial(t *testing.T, ns *netnstest.NS) *nftables.Conn {
	t.Helper()
	c, err := Dial(ns.Fd())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func apply(t *testing.T, c *nftables.Conn, p *policy.Policy, o Options) {
	t.Helper()
	if err := Apply(c, p, o); err != nil {
		t.Fatalf("apply: %v", err)
	}
}

// compile compiles p.
func compile(t testing.TB, p *policy.Policy) *Compiled {
	t.Helper()
	cp, err := Compile(p)
	if err != nil {
		t.Fatalf("compile: %v", err)
	}
	return cp
}

// listRuleset is nft's text of the namespace's ruleset, for people (stdout only: nft warns on stderr
// that it cannot name the compat target's family).
func listRuleset(t *testing.T, ns *netnstest.NS) string {
	t.Helper()
	out, err := ns.Command(t.Context(), "nft", "list", "ruleset").Output()
	if err != nil {
		t.Fatalf("nft list ruleset: %v", err)
	}
	return string(out)
}

// TestGolden compares nft's listing of the applied ruleset with testdata/<case>.nft; go test -update
// rewrites them.
func TestGolden(t *testing.T) {
	testutil.RequireRoot(t)
	for _, tc := range []struct {
		name string
		p    *policy.Policy
		o    Options
	}{
		{"protect", samplePolicy(policy.Protect), Options{Queue: QueueCompat, SelfPorts: []uint16{9090}, SelfDests: sampleSelfDests}},
		{"monitor-lognone-fanout-failopen", samplePolicy(policy.Monitor),
			Options{Queue: QueueCompat, QueueNum: 4, QueueCount: 2, FailOpen: true, LogAllows: LogAllowsNone}},
		{"learn-logall", samplePolicy(policy.Learn), Options{Queue: QueueCompat, LogAllows: LogAllowsAll}},
		{"offline", samplePolicy(policy.Learn), Options{Offline: true, SelfPorts: []uint16{9090}}},
		{"baseline", nil, Options{Queue: QueueCompat}},
		{"protect-dns-lognone", samplePolicy(policy.Protect), Options{Queue: QueueCompat, QueueCount: 2, DNSQueue: 2,
			DNSServers: sampleDNSServers, LogAllows: LogAllowsNone}},
		{"protect-dns-logged-restricted", restricted(samplePolicy(policy.Protect)), Options{Queue: QueueCompat, DNSQueue: 1,
			DNSServers: sampleDNSServers, DNSLog: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns := netnstest.New(t)
			apply(t, dial(t, ns), tc.p, tc.o)
			got := listRuleset(t, ns)
			path := filepath.Join("testdata", tc.name+".nft")
			if *update {
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(string(want), got); diff != "" {
				t.Errorf("nft list ruleset (-%s +got):\n%s", path, diff)
			}
		})
	}
}

// TestReadBack checks the applied table through netlink: the chains and their hooks, the number of
// rules, every set's elements, and the compat queue target's info bytes.
func TestReadBack(t *testing.T) {
	ns := netnstest.New(t)
	c := dial(t, ns)
	apply(t, c, samplePolicy(policy.Protect), Options{Queue: QueueCompat, QueueNum: 5, QueueCount: 2, SelfPorts: []uint16{9090, 9091},
		SelfDests: sampleSelfDests})
	chains, sets := readBack(t, ns, c)
	wantChains := map[string]chainInfo{
		ChainGuardOutput: {Hook: "output", Priority: -151, Rules: 4},
		ChainOutput:      {Hook: "output", Priority: -150, Rules: 27},
		ChainGuardInput:  {Hook: "input", Priority: -1, Rules: 4},
		ChainInput:       {Hook: "input", Priority: 0, Rules: 29},
		ChainLoopback:    {Rules: 7},
	}
	if diff := cmp.Diff(wantChains, chains); diff != "" {
		t.Errorf("chains (-want +got):\n%s", diff)
	}
	wantSets := map[string][]string{
		SetAllowIngress4:      {"10.1.0.0-10.1.255.255 . 6 . 8080"},
		SetAllowIngress6:      {"fd00:1::-fd00:1::ffff:ffff:ffff:ffff . 6 . 8080"},
		SetAllowIngress4Exact: {}, SetAllowIngress6Exact: {},
		SetAllowEgress4: {
			"192.0.2.0-192.0.2.255 . 132 . 0-65535", "192.0.2.0-192.0.2.255 . 17 . 0-65535",
			"192.0.2.0-192.0.2.255 . 6 . 0-65535",
			"198.51.100.0-198.51.100.6 . 6 . 443", "198.51.100.8-198.51.100.255 . 6 . 443",
		},
		SetAllowEgress4Exact: {"10.2.0.5 . 6 . 5432", "198.51.100.7 . 6 . 443", "198.51.100.7 . 6 . 80"},
		SetAllowEgress6:      {},
		SetAllowEgress6Exact: {"fd00:2::53 . 17 . 53", "fd00:2::53 . 6 . 53"},
		SetFQDNEgress4:       {}, SetFQDNEgress6: {}, SetFQDNEgress4Exact: {}, SetFQDNEgress6Exact: {},
		SetSeenIngress4: {}, SetSeenIngress6: {}, SetSeenEgress4: {}, SetSeenEgress6: {},
		SetDenyMemoIngress4: {}, SetDenyMemoIngress6: {}, SetDenyMemoEgress4: {}, SetDenyMemoEgress6: {},
		SetSelfPorts:    {"9090", "9091"},
		SetSelfDests4:   {"10.96.0.10 . 17 . 53", "10.96.0.10 . 6 . 53", "10.96.0.7 . 6 . 9443"},
		SetSelfDests6:   {"fd00:96::a . 17 . 53"},
		SetLoopbackDeny: {"6 . 15000"},
	}
	if diff := cmp.Diff(wantSets, sets); diff != "" {
		t.Errorf("sets (-want +got):\n%s", diff)
	}

	out, err := c.GetRules(table(), &nftables.Chain{Table: table(), Name: ChainOutput})
	if err != nil {
		t.Fatal(err)
	}
	var targets []string
	for _, r := range out {
		for _, e := range r.Exprs {
			if tg, ok := e.(*expr.Target); ok {
				info, _ := tg.Info.(*xt.Unknown)
				targets = append(targets, fmt.Sprintf("%s rev %d info %x", tg.Name, tg.Rev, []byte(*info)))
			}
		}
	}
	// queue 5, 2 queues, flags 2 (CPU fanout; no bypass), little-endian u16s and two bytes of padding.
	want := []string{"NFQUEUE rev 3 info 0500020002000000", "NFQUEUE rev 3 info 0500020002000000"}
	if diff := cmp.Diff(want, targets); diff != "" {
		t.Errorf("queue targets (-want +got):\n%s", diff)
	}
}

// TestApplyRandomPolicies applies policies of random, overlapping peers and ports: the kernel accepts
// every one (its pipapo sets refuse overlapping elements, its hash sets duplicates).
func TestApplyRandomPolicies(t *testing.T) {
	ns := netnstest.New(t)
	c := dial(t, ns)
	rng := rand.New(rand.NewPCG(3, 4))
	protos := []policy.Protocol{policy.TCP, policy.UDP, policy.SCTP}
	for round := range 30 {
		p := &policy.Policy{Mode: policy.Protect}
		for i := range 1 + rng.IntN(60) {
			a := netip.AddrFrom4([4]byte{10, 0, byte(rng.IntN(4)), byte(rng.IntN(256))})
			if rng.IntN(3) == 0 {
				a = netip.AddrFrom16([16]byte{0xfd, 15: byte(rng.IntN(256))})
			}
			r := policy.Rule{ID: fmt.Sprint(i), Origin: policy.OriginLearned,
				CIDRs: []netip.Prefix{netip.PrefixFrom(a, a.BitLen()-rng.IntN(10)).Masked()}}
			for range rng.IntN(3) {
				lo := uint16(1 + rng.IntN(30))
				r.Ports = append(r.Ports, policy.PortRange{Protocol: protos[rng.IntN(3)], Port: lo, EndPort: lo + uint16(rng.IntN(3))})
			}
			p.Egress = append(p.Egress, r)
		}
		if err := Apply(c, p, Options{Queue: QueueCompat}); err != nil {
			t.Fatalf("round %d: %v\npolicy: %+v", round, err, p.Egress)
		}
	}
}

// TestRuleCountFlat: the number of rules does not depend on the size of the policy.
func TestRuleCountFlat(t *testing.T) {
	ns := netnstest.New(t)
	c := dial(t, ns)
	counts := func(p *policy.Policy) map[string]int {
		apply(t, c, p, Options{Queue: QueueCompat})
		chains, _ := readBack(t, ns, c)
		n := map[string]int{}
		for name, ch := range chains {
			n[name] = ch.Rules
		}
		return n
	}
	small := counts(samplePolicy(policy.Protect))
	large := counts(largePolicy(2000))
	if diff := cmp.Diff(small, large); diff != "" {
		t.Errorf("rules per chain, 8 rules vs 2000 peers (-small +large):\n%s", diff)
	}
}

// TestReapply replaces one policy by another: the second one's elements only, seen keys forgotten.
func TestReapply(t *testing.T) {
	ns := netnstest.New(t)
	c := dial(t, ns)
	o := Options{Queue: QueueCompat}
	apply(t, c, samplePolicy(policy.Protect), o)
	seen := &nftables.Set{Table: table(), Name: SetSeenEgress4, KeyType: keyAddrPort4}
	if err := c.SetAddElements(seen, []nftables.SetElement{{Key: addrKey(nil, addrOf(netip.MustParseAddr("192.0.2.1")), false, 6, 22)}}); err != nil {
		t.Fatal(err)
	}
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	p2 := &policy.Policy{Mode: policy.Monitor, Egress: []policy.Rule{{ID: "only", Origin: policy.OriginUser, CIDRs: pfx("203.0.113.0/25"), Ports: tcp(22)}}}
	apply(t, c, p2, o)
	_, sets := readBack(t, ns, c)
	for name, want := range map[string][]string{
		SetAllowEgress4: {"203.0.113.0-203.0.113.127 . 6 . 22"}, SetAllowEgress4Exact: {}, SetAllowIngress4: {},
		SetSeenEgress4: {}, SetLoopbackDeny: {},
	} {
		if diff := cmp.Diff(want, sets[name]); diff != "" {
			t.Errorf("set %s after re-apply (-want +got):\n%s", name, diff)
		}
	}
	// Monitor accepts what nothing allows: no reject rules at the end of output any more.
	if strings.Contains(lastLines(listRuleset(t, ns), "chain output", 3), "reject") {
		t.Errorf("output chain still ends in a reject after re-apply in Monitor")
	}
}

// lastLines returns the n lines before the closing brace of the block that starts with head.
func lastLines(text, head string, n int) string {
	i := strings.Index(text, head)
	if i < 0 {
		return ""
	}
	block := text[i:]
	block = block[:strings.Index(block, "\t}")]
	lines := strings.Split(strings.TrimSpace(block), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// TestApplyOverOtherShape: a table left by another version (a base chain on another priority, a
// chain and a set that are no longer used, a rule jumping between them) is brought to exactly what
// Apply builds, in one batch.
func TestApplyOverOtherShape(t *testing.T) {
	want := netnstest.New(t)
	apply(t, dial(t, want), samplePolicy(policy.Protect), Options{Queue: QueueCompat})

	ns := netnstest.New(t)
	ns.Exec(t, "nft", "add table inet podwall; add set inet podwall old_set { type ipv4_addr; elements = { 192.0.2.1 } };"+
		" add chain inet podwall output { type filter hook output priority filter; policy drop; };"+
		" add chain inet podwall old; add rule inet podwall output ip daddr @old_set jump old;"+
		" add chain inet podwall loopback { type filter hook prerouting priority raw; }")
	apply(t, dial(t, ns), samplePolicy(policy.Protect), Options{Queue: QueueCompat})
	if diff := cmp.Diff(listRuleset(t, want), listRuleset(t, ns)); diff != "" {
		t.Errorf("ruleset applied over another shape (-fresh +got):\n%s", diff)
	}
}

func TestRemove(t *testing.T) {
	ns := netnstest.New(t)
	c := dial(t, ns)
	if err := Remove(c); err != nil {
		t.Fatalf("remove with no table: %v", err)
	}
	apply(t, c, samplePolicy(policy.Protect), Options{Queue: QueueCompat})
	if err := Remove(c); err != nil {
		t.Fatal(err)
	}
	if got := listRuleset(t, ns); got != "" {
		t.Errorf("ruleset after Remove:\n%s", got)
	}
}

// TestDetectQueue: this kernel has no nft_queue, so the compat target it is; the probe leaves no
// trace, with or without a table in place.
func TestDetectQueue(t *testing.T) {
	ns := netnstest.New(t)
	c := dial(t, ns)
	k, err := DetectQueue(c)
	if err != nil {
		t.Fatal(err)
	}
	if k != QueueCompat {
		t.Errorf("DetectQueue = %v, want compat on this kernel", k)
	}
	if got := listRuleset(t, ns); got != "" {
		t.Errorf("ruleset after DetectQueue on an empty namespace:\n%s", got)
	}
	apply(t, c, samplePolicy(policy.Protect), Options{Queue: QueueCompat})
	before := listRuleset(t, ns)
	if _, err := DetectQueue(c); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(before, listRuleset(t, ns)); diff != "" {
		t.Errorf("DetectQueue changed the ruleset (-before +after):\n%s", diff)
	}
}

// TestFailedApplyKeepsRuleset: a policy that does not validate, one too large, bad options, and a
// batch the kernel refuses (the native queue expression, which this kernel lacks, in the middle of a
// complete replacement) all fail and leave the previous ruleset exactly as it was.
func TestFailedApplyKeepsRuleset(t *testing.T) {
	ns := netnstest.New(t)
	c := dial(t, ns)
	apply(t, c, samplePolicy(policy.Protect), Options{Queue: QueueCompat})
	before := listRuleset(t, ns)

	bad := samplePolicy(policy.Protect)
	bad.Egress[0].CIDRs = pfx("10.2.0.5/16") // host bits set
	unknownMode := samplePolicy("Enforce")
	huge := largePolicy(1)
	huge.Egress[0].CIDRs = nil
	for i := range 1<<19 + 1 { // every other address, so that neighbours do not merge into ranges
		huge.Egress[0].CIDRs = append(huge.Egress[0].CIDRs, netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 15), byte(i >> 7), byte(i << 1)}), 32))
	}
	huge.Egress[0].Ports = []policy.PortRange{{Protocol: policy.TCP, Port: 1}, {Protocol: policy.TCP, Port: 3}}
	for _, tc := range []struct {
		name string
		p    *policy.Policy
		o    Options
		// want is the error's text; a kernel refusal is also checked for the errno the kernel sends.
		want  string
		errno syscall.Errno
	}{
		{"host bits", bad, Options{Queue: QueueCompat},
			"invalid policy: egress[0]: rule db: CIDR 10.2.0.5/16 has host bits set", 0},
		{"unknown mode", unknownMode, Options{Queue: QueueCompat},
			`invalid policy: mode "Enforce": want Learn, Monitor or Protect`, 0},
		{"too many elements", huge, Options{Queue: QueueCompat},
			fmt.Sprintf("policy too large: more than %d set elements", maxElements), 0},
		{"queue past 65535", nil, Options{Queue: QueueCompat, QueueNum: 65535, QueueCount: 2},
			"ruleset options: queues 65535+2 run past 65535", 0},
		// This kernel has no "queue" expression: it answers ENOENT and refuses the whole batch.
		{"kernel refuses the batch", largePolicy(500), Options{Queue: QueueNative},
			"apply ruleset: ", syscall.ENOENT},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Apply(c, tc.p, tc.o)
			if err == nil {
				t.Fatal("Apply succeeded")
			}
			if tc.errno == 0 && err.Error() != tc.want ||
				tc.errno != 0 && (!strings.HasPrefix(err.Error(), tc.want) || !errors.Is(err, tc.errno)) {
				t.Fatalf("Apply = %v, want %q (errno %v)", err, tc.want, tc.errno)
			}
			if diff := cmp.Diff(before, listRuleset(t, ns)); diff != "" {
				t.Errorf("ruleset changed (-before +after):\n%s", diff)
			}
		})
	}
	// The connection is still good for the next Apply.
	apply(t, c, nil, Options{Queue: QueueCompat})
}

// largePolicy has n egress and n ingress peers, each a /32 on one of 50 ports, with some /24s and
// IPv6 peers mixed in.
func largePolicy(n int) *policy.Policy {
	p := &policy.Policy{Mode: policy.Protect}
	for i := range n {
		a := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 32)
		switch i % 10 {
		case 1:
			a = netip.PrefixFrom(netip.AddrFrom4([4]byte{11, byte(i >> 16), byte(i >> 8), 0}), 24)
		case 2:
			a = netip.PrefixFrom(netip.AddrFrom16([16]byte{0xfd, 0, 13: byte(i >> 16), byte(i >> 8), byte(i)}), 128)
		}
		r := policy.Rule{ID: fmt.Sprint("e", i), Origin: policy.OriginLearned, CIDRs: []netip.Prefix{a}, Ports: tcp(uint16(8000 + i%50))}
		p.Egress = append(p.Egress, r)
		r.ID = fmt.Sprint("i", i)
		p.Ingress = append(p.Ingress, r)
	}
	return p
}

// restricted returns p with RestrictDNS set.
func restricted(p *policy.Policy) *policy.Policy {
	p.RestrictDNS = true
	return p
}
