// Package verdictlog writes the sidecar's verdict lines: one JSON object per connection decision, on
// stdout in production, so that `kubectl logs <pod> -c podwall` shows what was allowed and denied.
//
// The lines and their fields are specified, and decoded, by podwall.io/podwall/api/verdict:
//
//	{"time":"2026-11-27T03:00:00.123456789Z","pod":"web-5d9c","namespace":"shop","workload":"Deployment/web",
//	 "direction":"egress","proto":"TCP","src":"10.244.0.5:40000","dst":"1.1.1.1:80","peer":"cidr:1.1.1.1/32",
//	 "verdict":"deny","rule":"default","mode":"Protect","policy_revision":7,"evaluator":"default"}
//
// (one line in the real output). Lines are built by hand into a reused buffer: Log runs on the verdict
// path, once per new connection, and allocates nothing.
//
// # What is logged
//
// Denies, audits and revoked connections are always logged. Allows are logged per Options.Allows: all of them, none, or
// only the first per direction, peer, port and rule in each Options.FirstInterval (the port is the one
// judged: for a redirected connection, the original destination's). Allows left out this way
// are counted (Stats.Filtered) but are not "suppressed": the operator asked for it.
//
// Every line then passes its verdict's token bucket (golang.org/x/time/rate: Options.Rate lines per
// second, Options.Burst at once), so that a port scan cannot flood the node's log pipeline. Allows,
// audits, denies and revoked connections each have a bucket of their own: a flood of one verdict
// (a SYN flood of denied connections) does not use up the budget of the others. Nothing is dropped silently: what
// the bucket refuses is counted, and the next line that gets through is preceded by a summary line
// (verdict.Line with its suppressed counts), which Close also writes if anything is still unreported.
//
// # When stdout blocks
//
// Log never waits for the writer. It appends the line to an in-memory buffer and wakes a writer
// goroutine, which swaps the buffer out and writes it with one Write call (so a busy sidecar makes few
// system calls). If the writer falls Options.BufferBytes behind — stdout is a pipe that the container
// runtime may stop draining — further lines are dropped, counted as suppressed (Stats.Dropped) and
// reported in the summary line once the writer catches up. Memory stays bounded at about twice
// BufferBytes, and the verdict path is delayed at most by a short mutex hold, never by I/O.
//
// Stats returns the counters for the caller to export as metrics; the package registers none itself.
package verdictlog
