package main

import (
	"testing"
	"time"

	"podwall.io/podwall/config"
	"podwall.io/podwall/sidecar/agent"
)

// TestOptionsDNS: the DNS keys reach the agent as loaded.
func TestOptionsDNS(t *testing.T) {
	cfg, err := config.LoadSidecar([]string{"--config=", "--policy-file=/p", "--resolv-conf=/run/resolv.conf",
		"--dns-min-ttl=2s", "--dns-max-ttl=10m", "--dns-max-names=10", "--dns-max-addrs=20"})
	if err != nil {
		t.Fatal(err)
	}
	want := agent.DNS{ResolvConf: "/run/resolv.conf", MinTTL: 2 * time.Second, MaxTTL: 10 * time.Minute, MaxNames: 10, MaxAddrs: 20}
	if got := options(cfg).DNS; got != want {
		t.Fatalf("DNS options %+v, want %+v", got, want)
	}
}

// TestOptionsVerdictWorkers: the worker bounds reach the agent as loaded.
func TestOptionsVerdictWorkers(t *testing.T) {
	cfg, err := config.LoadSidecar([]string{"--config=", "--policy-file=/p", "--verdict-min-workers=2", "--verdict-max-workers=5"})
	if err != nil {
		t.Fatal(err)
	}
	if o := options(cfg); o.MinWorkers != 2 || o.MaxWorkers != 5 {
		t.Fatalf("verdict workers %d..%d, want 2..5", o.MinWorkers, o.MaxWorkers)
	}
}
