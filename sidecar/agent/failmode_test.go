package agent

import (
	"errors"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"

	"podwall.io/podwall/api/policy"
	"podwall.io/podwall/sidecar/ruleset/marktest"
)

// TestFailClosedExitAndCachedRestart stops a fail-closed sidecar: the policy must stay enforced by the
// kernel alone. A sidecar restarted without its policy file must re-apply the cached policy before it
// turns ready.
func TestFailClosedExitAndCachedRestart(t *testing.T) {
	w := newWorld(t)
	w.writePolicy(t, policy.Protect, 7, 80)
	gone, stop := w.start(t, nil)
	stop()
	// A policy arriving after the exit (a long-poll answered late) must not bring the queue rules back.
	if err := gone.Apply(w.policy(policy.Protect, 8, 80, 81)); err == nil {
		t.Fatal("a stopped sidecar applied a policy")
	}
	if _, err := w.dial(w.peerAddr(80)); err != nil {
		t.Fatalf("allowed connection with the sidecar gone (fail-closed): %v", err)
	}
	w.mustRefuseFast(t, w.peerAddr(81))

	if err := os.Remove(w.policyFile); err != nil {
		t.Fatal(err)
	}
	a, _ := w.start(t, nil)
	if got := a.Revision(); got != 7 {
		t.Fatalf("restarted sidecar runs revision %d, want the cached 7", got)
	}
	if _, err := w.dial(w.peerAddr(80)); err != nil {
		t.Fatalf("allowed connection after restart from cache: %v", err)
	}
	w.mustRefuseFast(t, w.peerAddr(81))
}

// TestSidecarPortClosesWithIt: once a fail-closed sidecar has exited, an app (uid 65534) that binds
// the sidecar's port receives nothing the policy does not allow.
func TestSidecarPortClosesWithIt(t *testing.T) {
	w := newWorld(t)
	w.writePolicy(t, policy.Protect, 1, 80)
	_, stop := w.start(t, nil)
	stop()
	_, port, err := net.SplitHostPort(w.httpAddr)
	if err != nil {
		t.Fatal(err)
	}
	app := marktest.New(t, w.pod).Listen(":" + port)
	to := net.JoinHostPort(w.podIP.String(), port)
	if _, err := w.peer.Dial("tcp", to, time.Second); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("connection to the app on the sidecar's port %s: %v, want connection refused", to, err)
	}
	if n := app.Received(); n != 0 {
		t.Errorf("the app on the sidecar's port accepted %d connections, want 0", n)
	}
}

// TestFailOpenExitRemovesTheRuleset: a fail-open sidecar takes its table with it.
func TestFailOpenExitRemovesTheRuleset(t *testing.T) {
	w := newWorld(t)
	w.writePolicy(t, policy.Protect, 1, 80)
	_, stop := w.start(t, func(o *Options) { o.FailOpen = true })
	w.mustRefuseFast(t, w.peerAddr(81))
	stop()
	if _, err := w.dial(w.peerAddr(81)); err != nil {
		t.Fatalf("fail-open sidecar gone, connection still refused: %v", err)
	}
	if out := w.pod.Exec(t, "nft", "list", "tables"); strings.Contains(out, "podwall") {
		t.Fatalf("table left behind after a fail-open exit:\n%s", out)
	}
}

// TestNoPolicyStartsDenyAll: a fail-closed pod that never had a policy refuses everything but its own
// sidecar's traffic.
func TestNoPolicyStartsDenyAll(t *testing.T) {
	w := newWorld(t)
	a, _ := w.start(t, func(o *Options) { o.PolicyFile = "" })
	if a.Revision() != 0 {
		t.Fatalf("revision %d, want the baseline's 0", a.Revision())
	}
	w.mustRefuseFast(t, w.peerAddr(80))
}

// TestInstallBaseline: the init container's ruleset refuses what no policy allows with no verdict loop
// bound, and lets the policy's peers through.
func TestInstallBaseline(t *testing.T) {
	w := newWorld(t)
	w.writePolicy(t, policy.Protect, 2, 80)
	a, err := New(Options{NetNS: w.pod.Path(), PolicyFile: w.policyFile, Stdout: w.out}, testr.New(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := a.InstallBaseline(); err != nil {
		t.Fatal(err)
	}
	if _, err := w.dial(w.peerAddr(80)); err != nil {
		t.Fatalf("allowed connection under the baseline: %v", err)
	}
	w.mustRefuseFast(t, w.peerAddr(81))
}
