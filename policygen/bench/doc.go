// Package bench holds make bench-policygen: the real podwall-policygen binary against a real API
// server holding 2,000 pods in 200 workloads, with 500 simulated sidecars subscribed. See
// BENCHMARKS.md, section policygen.
package bench
