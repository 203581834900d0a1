package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"podwall.io/podwall/api/policy"
	"podwall.io/podwall/api/verdict"
	"podwall.io/podwall/internal/testutil"
	"podwall.io/podwall/sidecar/ruleset"
	"podwall.io/podwall/sidecar/verdictlog"
)

// firstDenyBound is the promise: the deny line of a new key is written within this of the
// connection attempt, whatever floods the queue's other keys.
const firstDenyBound = 100 * time.Millisecond

// TestFloodDoesNotBlindTheLog floods the pod from the peer with SYNs to one denied port (hping3, about
// 10k a second, every SYN from a new source port) under the production log budget (100 lines a second,
// 200 at once). The first SYN is denied and logged; the rest are refused in the kernel by the deny
// memo, counted and not queued. Meanwhile a connection to a new denied key gets its deny line within
// firstDenyBound, an allowed connection gets its allow line, and the kernel drops nothing from the queue.
func TestFloodDoesNotBlindTheLog(t *testing.T) {
	hping, err := exec.LookPath("hping3")
	if err != nil {
		testutil.SkipUnlessCI(t, "hping3 not installed (Debian: apt-get install hping3)")
	}
	w := newWorld(t)
	w.writePolicy(t, policy.Protect, 1, 80)
	w.start(t, func(o *Options) {
		o.Log = verdictlog.Options{Allows: verdictlog.AllowsAll, Rate: 100, Burst: 200}
	})

	ctx, cancel := context.WithCancel(context.Background())
	flood := w.peer.Command(ctx, hping, "-q", "-S", "-p", "81", "-i", "u100", w.podIP.String())
	if err := flood.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); _ = flood.Wait() })
	w.lineFor(t, policy.Deny, netip.AddrPortFrom(w.podIP, 81))
	// The flood is on: thousands refused in the kernel.
	testutil.Eventually(t, 10*time.Second, func() error {
		if n := w.metric(t, "podwall_deny_memo_hits_total"); n < 5000 {
			return fmt.Errorf("%v SYNs refused by the deny memo, want a flood of 5000 or more", n)
		}
		return nil
	})

	for i, port := range []uint16{8080, 82, 83} {
		start := time.Now()
		w.mustRefuseFast(t, w.peerAddr(port))
		line := w.lineFor(t, policy.Deny, w.peerAddr(port))
		took := line.Time.Sub(start)
		t.Logf("new key %d during the flood: deny line after %v", i, took)
		if took > firstDenyBound {
			t.Errorf("deny line for %s after %v during the flood, want within %v", w.peerAddr(port), took, firstDenyBound)
		}
	}
	if _, err := w.dial(w.peerAddr(80)); err != nil {
		t.Fatalf("allowed connection during the flood: %v", err)
	}
	w.lineFor(t, policy.Allow, w.peerAddr(80))

	cancel()
	_ = flood.Wait()
	body := w.metrics(t)
	drops := regexp.MustCompile(`(?m)^podwall_queue_kernel_drops_total\{.*\} (\S+)$`).FindAllStringSubmatch(body, -1)
	if len(drops) == 0 {
		t.Fatalf("no podwall_queue_kernel_drops_total series:\n%s", body)
	}
	for _, d := range drops {
		if d[1] != "0" {
			t.Errorf("kernel queue drops during the flood: %s", d[0])
		}
	}
	// SYNs queued before the first deny planted the key, and one each time the memo expires, reach
	// the verdict loop: a small share of the flood.
	hits := w.metric(t, "podwall_deny_memo_hits_total")
	if n := w.metric(t, `podwall_verdicts_total{direction="ingress",verdict="deny"}`); n > hits/100 {
		t.Errorf("%v flood SYNs decided in user space, %v in the kernel: want under 1%% in user space", n, hits)
	}
}

// forgetDenials empties the ruleset's deny memo sets, as their timeout would.
func (w *world) forgetDenials(t *testing.T) {
	t.Helper()
	var cmds []string
	for _, set := range []string{ruleset.SetDenyMemoIngress4, ruleset.SetDenyMemoIngress6, ruleset.SetDenyMemoEgress4, ruleset.SetDenyMemoEgress6} {
		cmds = append(cmds, "flush set inet "+ruleset.TableName+" "+set)
	}
	w.pod.Exec(t, "nft", strings.Join(cmds, "; "))
}

// lineFor waits for the verdict line of a connection to dst and returns it.
func (w *world) lineFor(t *testing.T, v policy.Verdict, dst netip.AddrPort) verdict.Line {
	t.Helper()
	var found verdict.Line
	testutil.Eventually(t, 5*time.Second, func() error {
		for line := range strings.Lines(w.out.String()) {
			var got verdict.Line
			if err := json.Unmarshal([]byte(line), &got); err != nil {
				t.Fatalf("verdict line %q: %v", line, err)
			}
			if got.Verdict == v && got.Dst == dst {
				found = got
				return nil
			}
		}
		return fmt.Errorf("no %s line for %s", v, dst)
	})
	return found
}

func (w *world) metrics(t *testing.T) string {
	t.Helper()
	resp, err := http.Get("http://" + w.httpAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(body)
}

// metric is the value of one series (name and labels as exposed), 0 if it is absent.
func (w *world) metric(t *testing.T, series string) float64 {
	t.Helper()
	for line := range strings.Lines(w.metrics(t)) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), series+" "); ok {
			n, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("series %s: %v", series, err)
			}
			return n
		}
	}
	return 0
}
