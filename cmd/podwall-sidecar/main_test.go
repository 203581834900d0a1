package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"

	"podwall.io/podwall/api/policy"
	"podwall.io/podwall/api/verdict"
	"podwall.io/podwall/config"
	"podwall.io/podwall/internal/netnstest"
	"podwall.io/podwall/internal/testutil"
)

// TestWorkloadFileCannotWeakenProtect is issue 12's ConfigMap attack at the sidecar, through the real
// loading, watching and enforcing: under a Protect policy the workload's file says mode: Learn (a floor
// weaker than the policy's, which changes nothing), then adds fail-mode: open (refused: the last good
// file stays). The peer never receives a connection to the port the policy does not list.
func TestWorkloadFileCannotWeakenProtect(t *testing.T) {
	pod, peer := netnstest.New(t), netnstest.New(t)
	_, peerLink := netnstest.Pair(t, pod, peer)
	peerIP := peerLink.Addr.Addr()
	allowed, unlisted := netip.AddrPortFrom(peerIP, 80), netip.AddrPortFrom(peerIP, 8080)
	peer.Serve(t, allowed.String())
	var received atomic.Int64 // connections the peer accepted on the unlisted port
	l := peer.Listen(t, "tcp", unlisted.String())
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			received.Add(1)
			c.Close()
		}
	}()

	dir := t.TempDir()
	p := policy.Policy{Namespace: "demo", Workload: "Deployment/client", Revision: 1, Mode: policy.Protect,
		Egress: []policy.Rule{{ID: "web", Origin: policy.OriginUser, CIDRs: []netip.Prefix{netip.PrefixFrom(peerIP, 32)},
			Ports: []policy.PortRange{{Protocol: policy.TCP, Port: allowed.Port()}}}}}
	data, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	policyFile, file := filepath.Join(dir, "policy.json"), filepath.Join(dir, "config.yaml")
	replace(t, policyFile, string(data))
	replace(t, file, "mode: Learn\nlog-allows: all\n")
	listen := freeAddr(t)
	cfg, err := config.LoadSidecar([]string{"--config=" + file, "--policy-file=" + policyFile,
		"--policy-cache-dir=", "--listen-addr=" + listen, "--pod-name=client-1", "--pod-namespace=demo"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.FileState.State != policy.ConfigApplied || cfg.Live.Mode != policy.Learn {
		t.Fatalf("file state %+v, mode %q: a Learn floor without a platform mode is a valid file", cfg.FileState, cfg.Live.Mode)
	}
	out := &testutil.Buffer{}
	opts := options(cfg)
	opts.NetNS, opts.Stdout = pod.Path(), out
	ctx, cancel := context.WithCancel(context.Background())
	exited := make(chan error, 1)
	go func() { exited <- run(ctx, cfg, opts, testr.New(t)) }()
	t.Cleanup(func() {
		cancel()
		if err := <-exited; err != nil {
			t.Errorf("sidecar: %v", err)
		}
	})
	testutil.Eventually(t, 10*time.Second, func() error { return testutil.HTTPOK(nil, "http://"+listen+"/readyz") })

	mustNotReach := func(when string) {
		t.Helper()
		if c, err := pod.Dial("tcp", unlisted.String(), 3*time.Second); err == nil {
			c.Close()
			t.Fatalf("%s: the unlisted port %s is reachable", when, unlisted)
		}
		if n := received.Load(); n != 0 {
			t.Fatalf("%s: the peer accepted %d connections on the unlisted port", when, n)
		}
		if c, err := pod.Dial("tcp", allowed.String(), 3*time.Second); err != nil {
			t.Fatalf("%s: the listed port: %v", when, err)
		} else {
			c.Close()
		}
	}
	mustNotReach("mode: Learn under Protect")
	awaitLine(t, out, func(l verdict.Line) bool {
		return l.Verdict == policy.Deny && l.Mode == policy.Protect && l.Dst == unlisted
	})

	// The attack's ConfigMap: refused whole, told in a notice line; the last good file stays (its
	// log-allows: all still logs every allow).
	replace(t, file, "mode: Learn\nfail-mode: open\n")
	awaitLine(t, out, func(l verdict.Line) bool {
		return l.Notice == verdict.NoticeConfigRefused && strings.Contains(l.Message, `key "fail-mode": `+config.PlatformOnly)
	})
	mustNotReach("after the refused file")
	allows := func() int {
		return count(out, func(l verdict.Line) bool { return l.Verdict == policy.Allow && l.Dst == allowed })
	}
	before := allows()
	for range 2 {
		if c, err := pod.Dial("tcp", allowed.String(), 3*time.Second); err != nil {
			t.Fatal(err)
		} else {
			c.Close()
		}
	}
	testutil.Eventually(t, 5*time.Second, func() error {
		if got := allows(); got < before+2 {
			return fmt.Errorf("%d allow lines for %s, want %d: log-allows all of the last good file", got, allowed, before+2)
		}
		return nil
	})
}

// replace writes content to path by renaming a new file over it, as tools and the kubelet do.
func replace(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path+".new", []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".new", path); err != nil {
		t.Fatal(err)
	}
}

func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// count counts the lines on out that match.
func count(out *testutil.Buffer, match func(verdict.Line) bool) int {
	n := 0
	for line := range strings.Lines(out.String()) {
		var l verdict.Line
		if json.Unmarshal([]byte(line), &l) == nil && match(l) {
			n++
		}
	}
	return n
}

// awaitLine waits for a line on out that matches.
func awaitLine(t *testing.T, out *testutil.Buffer, match func(verdict.Line) bool) {
	t.Helper()
	testutil.Eventually(t, 10*time.Second, func() error {
		if count(out, match) == 0 {
			return errors.New("no such line yet:\n" + out.String())
		}
		return nil
	})
}
