// Package decide turns one new connection into a verdict under a workload's policy. It is pure: no
// I/O, no clock, no kernel, so that every decision is a table test away.
//
// A Decider is built once per policy revision (New, or a Builder that policy.Stream hands the rules
// to one at a time, so that a large policy is never held whole) and is then read-only and safe for
// concurrent use by every queue worker; a new revision gets a new Decider, swapped in atomically by
// the caller. Of each rule it keeps what it indexes and what a verdict line names, its id and peer.
//
// # The pipeline
//
// Decide runs an ordered list of small named evaluators, each of which allows, denies or passes the
// connection on; the evaluator that decides is named in the Decision, and so in the verdict line:
//
//   - "invalid-conn" denies a connection it cannot judge (unknown direction, no remote address).
//   - "origdst-unknown" denies a connection to a mesh proxy's redirect port whose original destination
//     is unknown: the proxy would forward it to a peer no rule was checked against, so it fails closed.
//   - "loopback" judges in-pod connections by the policy's loopback rules: a matching deny rule
//     denies, else a matching allow rule allows, else the connection is allowed with rule
//     "loopback-default". Loopback traffic is allowed by default because a pod's processes talking
//     to each other (app to sidecar, health checks over localhost, the app to itself) is the pod's
//     own business and never leaves it; what the operator wants to forbid, such as a proxy's admin
//     port, they name with a deny rule. Deny wins over allow so that a broad allow rule never
//     reopens a port a deny rule closes.
//   - "ingress" and "egress" allow a connection that a rule of that direction allows. An egress rule
//     with DNS name patterns (Rule.Names) allows a connection whose remote address the pod resolved
//     from a name one of its patterns matches (Conn.Names, which the datapath fills from the DNS
//     answers the pod received), on the rule's ports: an address that an allowed and a denied name
//     share is allowed only on the allowed name's rule's ports. The Decision's Name is the name that
//     matched, else the most recent name of the address.
//   - "default" ends the pipeline with the mode's default.
//
// DecideQuery judges a DNS query: as its flow to the resolver (Decide, with the name the query asked
// for as Name) where the policy does not restrict DNS, else by its name alone (evaluator "dns-query"):
// only names at or under the pod's search domains and names an egress rule's pattern matches are
// allowed; the mode applies as for connections.
//
// Connections to a mesh proxy's redirect port (Options.MeshPorts) are judged against the destination
// they had before the redirect: an app→proxy loopback connection by the egress rules, with the real
// remote as peer; an inbound connection redirected to the proxy's inbound port by the ingress rules on
// the port it was sent to; a loopback connection whose original destination is the pod itself (a
// loopback address or the connecting side's own address, as when the proxy calls the app through its
// inbound port) by the loopback rules on the original port.
//
// # Modes
//
// The pipeline is the Protect pipeline. In Protect a deny is a deny. In Monitor what Protect would deny
// is allowed with verdict Audit. In Learn everything is allowed and every decision is marked Record, so
// that the caller reports the connection to policygen; the rule and evaluator still say what Protect
// would have done.
//
// # Cost
//
// Decide does not grow with the number of rules. Rules are indexed by protocol and port (single ports
// in a map, port ranges in a short list) and, under each port key, by prefix: one map per address
// family keyed by the masked prefix, probed once per distinct prefix length present under that key. A
// lookup costs a few map probes per matching port key and prefix length, however many peers the rules
// name; only the number of distinct port ranges (scanned as a list) adds to it, and policies have few.
// Rules with name patterns are few (each has at most policy.MaxRuleNames patterns) and are scanned
// in policy order, after the index. When several rules allow a connection, the first in policy order
// is reported, so that the answer does not depend on the index. BenchmarkDecide measures 10 against 100,000 rules per direction.
//
// Decide allocates nothing, except one short string to name a peer that neither a rule nor the
// policy's names do.
package decide
