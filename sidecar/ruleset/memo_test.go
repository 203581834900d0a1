package ruleset

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"podwall.io/podwall/api/policy"
	"podwall.io/podwall/internal/testutil"
)

// TestDenyMemo runs the deny path with a real verdict loop: once the loop has denied a key, further
// connections with that key are refused in the kernel, unqueued and counted, until the memo expires;
// a new key is still queued at once; ingress is remembered on its own; Learn and Monitor remember
// nothing, since they never deny.
func TestDenyMemo(t *testing.T) {
	x := newTopo(t)
	v := &verdicts{}
	v.serve(t, x.pod, 5)
	const memo = 500 * time.Millisecond
	o := Options{Queue: QueueCompat, QueueNum: 5, DenyMemoTimeout: memo}
	apply(t, x.c, &policy.Policy{Mode: policy.Protect}, o)

	queued := func(what string, want int32, do func()) {
		t.Helper()
		before := v.queued.Load()
		do()
		if n := v.queued.Load() - before; n != want {
			t.Errorf("%s: %d packets queued, want %d", what, n, want)
		}
	}
	hits := func() uint64 {
		t.Helper()
		n, err := ReadCounter(x.c, CounterDenyMemoHits)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}

	denied := ap(x.peerAddr, 81)
	queued("first connection to a denied key", 1, func() { wantRefused(t, x.pod, denied) })
	queued("repeat connections to the denied key", 0, func() {
		for range 3 {
			wantRefused(t, x.pod, denied)
		}
	})
	if n := hits(); n != 3 {
		t.Errorf("deny memo hits %d, want 3", n)
	}
	queued("a new key", 1, func() { wantRefused(t, x.pod, ap(x.peerAddr, 83)) })
	queued("inbound, first and repeat", 1, func() {
		wantRefused(t, x.peer, ap(x.podAddr, 81))
		wantRefused(t, x.peer, ap(x.podAddr, 81))
	})

	testutil.Eventually(t, 10*memo, func() error {
		if _, sets := readBack(t, x.pod, x.c); len(sets[SetDenyMemoEgress4]) != 0 {
			return fmt.Errorf("memo %v still there after its %s timeout", sets[SetDenyMemoEgress4], memo)
		}
		return nil
	})
	queued("the denied key after the memo expired", 1, func() { wantRefused(t, x.pod, denied) })
	before := hits()
	apply(t, x.c, &policy.Policy{Mode: policy.Protect}, o)
	if n := hits(); n != before {
		t.Errorf("deny memo hits %d after a new Apply, want %d kept", n, before)
	}

	for _, mode := range []policy.Mode{policy.Learn, policy.Monitor} {
		apply(t, x.c, &policy.Policy{Mode: mode}, o)
		queued(string(mode)+": two connections the loop answers with MarkDeny", 2, func() {
			wantRefused(t, x.pod, denied)
			wantRefused(t, x.pod, denied)
		})
	}
}

// forgetDenials empties the deny memo sets, as their timeout would.
func (x *topo) forgetDenials(t *testing.T) {
	t.Helper()
	var cmds []string
	for _, set := range []string{SetDenyMemoIngress4, SetDenyMemoIngress6, SetDenyMemoEgress4, SetDenyMemoEgress6} {
		cmds = append(cmds, "flush set inet "+TableName+" "+set)
	}
	x.pod.Exec(t, "nft", strings.Join(cmds, "; "))
}
