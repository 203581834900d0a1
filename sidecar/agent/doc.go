// Package agent is the sidecar: it owns the pod's network namespace, keeps the podwall ruleset in
// place, decides each queued connection and logs every verdict. Run is the whole sidecar; the binary's
// main only loads its configuration and calls it.
//
// An Agent's files follow its concerns:
//
//   - run.go: New and the lifecycle — install the first policy, bind the queues, turn ready, follow
//     changes, and leave the namespace in the fail mode's state;
//   - baseline.go: what is enforced before any policy is known (policy file, cache, fail-mode baseline);
//   - apply.go: making a policy the enforced one, decider and ruleset together;
//   - reconfigure.go: tunables that change while the agent runs;
//   - watch.go: the standalone policy file, followed with internal/filewatch;
//   - datapath.go: the verdict path, from a queued packet to a verdict, a line and a report entry;
//   - dns.go, resolvconf.go: DNS-aware egress — the DNS queue's handler (queries judged, answers
//     learned before the app gets them), the kernel's FQDN sets kept in step, the expiry sweeper, and
//     the pod's resolv.conf;
//   - cache.go, server.go, metrics.go: the policy cache, /readyz and /metrics, the agent's series.
package agent
