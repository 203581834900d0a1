//go:build e2e

// Package e2e drives podwall on a real single-node cluster built on this machine (see
// e2e/internal/cluster; CoreDNS serves its cluster DNS): `make e2e`, as root. podwall is installed as
// a user would, `kubectl apply -k manifests/` and nothing else. One cluster serves every test; it is
// torn down, host state included, when the tests end, fail, or the run is interrupted.
package e2e

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
	"time"

	"podwall.io/podwall/e2e/internal/cluster"
	"podwall.io/podwall/e2e/internal/stack"
)

// env is the cluster every test uses, and the repository it was built from.
var env struct {
	*cluster.Cluster
	root    string
	kubectl string
	missing map[string]error // podwall images whose binary did not build
}

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if os.Geteuid() != 0 {
		fmt.Println("e2e: needs root (it runs containerd and the kubelet); skipped")
		return 0
	}
	_, file, _, _ := runtime.Caller(0)
	env.root = filepath.Dir(filepath.Dir(file))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c, missing, err := stack.Up(ctx, env.root)
	env.missing = missing
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e: start cluster:", err)
		return 1
	}
	env.Cluster = c
	env.kubectl = filepath.Join(c.BinDir(), "kubectl")
	// An interrupt (Ctrl-C, or go test's own timeout signal) still tears the cluster down.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-sig
		fmt.Fprintln(os.Stderr, "e2e: interrupted; tearing the cluster down")
		if err := c.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "e2e: teardown:", err)
		}
		os.Exit(2)
	}()
	code := m.Run()
	signal.Stop(sig)
	start := time.Now()
	defer func() { fmt.Fprintf(os.Stderr, "e2e: teardown took %s\n", time.Since(start).Round(time.Second)) }()
	if err := c.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: teardown:", err)
		return 1
	}
	return code
}

// needImage skips the test when podwall's binary did not build into an image.
func needImage(t *testing.T, binary string) string {
	t.Helper()
	v, err := stack.Version(context.Background(), env.root)
	if err != nil {
		t.Fatal(err)
	}
	ref := stack.PodwallImage(binary, v)
	if err, ok := env.missing[ref]; ok {
		t.Skipf("needs cmd/%s to build: %v", binary, err)
	}
	if _, err := os.Stat(filepath.Join(env.root, "cmd", binary, "main.go")); err != nil {
		t.Skipf("needs cmd/%s", binary)
	}
	return ref
}
