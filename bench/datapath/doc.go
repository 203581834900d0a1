//go:build bench

// Package datapath measures the sidecar's datapath cost against the same network namespaces with no
// firewall, as issue 2 asks: established-flow throughput, new-connection rate in Protect with verdicts
// logged, the time to apply a large policy, how the connection cost grows with the policy's size, and
// the sidecar's peak memory; and the time a policy change takes to cut 1,000 open connections it no
// longer allows; and how soon a new key's deny is logged while a SYN flood of a denied key runs. It runs as root (make bench-datapath) and is not part of make test: the figures need
// seconds of load each and are only meaningful side by side with their baseline.
package datapath
