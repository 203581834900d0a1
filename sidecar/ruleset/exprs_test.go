package ruleset

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/xt"
)

// TestQueueExpr covers both queue forms. Only the compat target can be loaded into this machine's
// kernel; the native expression is checked here as built.
func TestQueueExpr(t *testing.T) {
	info := func(b ...byte) *xt.Unknown { u := xt.Unknown(b); return &u }
	for _, tc := range []struct {
		name string
		o    Options
		want expr.Any
	}{
		{"native", Options{Queue: QueueNative, QueueNum: 2, QueueCount: 1}, &expr.Queue{Num: 2, Total: 1}},
		{"native fanout fail-open", Options{Queue: QueueNative, QueueNum: 2, QueueCount: 4, FailOpen: true},
			&expr.Queue{Num: 2, Total: 4, Flag: expr.QueueFlagBypass | expr.QueueFlagFanout}},
		{"compat", Options{Queue: QueueCompat, QueueNum: 0x0102, QueueCount: 1},
			&expr.Target{Name: "NFQUEUE", Rev: 3, Info: info(0x02, 0x01, 1, 0, 0, 0, 0, 0)}},
		{"compat fanout fail-open", Options{Queue: QueueCompat, QueueNum: 7, QueueCount: 3, FailOpen: true},
			&expr.Target{Name: "NFQUEUE", Rev: 3, Info: info(7, 0, 3, 0, 3, 0, 0, 0)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, queueExpr(tc.o)); diff != "" {
				t.Errorf("queueExpr (-want +got):\n%s", diff)
			}
		})
	}
}
