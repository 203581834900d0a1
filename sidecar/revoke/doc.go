// Package revoke cuts the established connections that the policy now in force refuses.
//
// The ruleset accepts established traffic before anything else (conntrack's fast path), so a
// connection opened while a rule allowed it, or while the pod ran in Learn or Monitor, would outlive
// the rule. After every policy change in Protect the agent calls Revoke, which dumps the pod
// namespace's conntrack table, rebuilds from each entry the decide.Conn the datapath judged when the
// connection opened, decides it with the new Decider, and deletes the entries it denies, one verdict
// line ("revoked") each.
//
// Deleting the entry is enough to cut the connection: its next packet, in either direction, finds no
// entry and is a new, non-opening packet to the ruleset (conntrack picks up a mid-stream TCP segment as
// a new connection, or finds it invalid). In Protect nothing accepts it: TCP gets a reset from the
// chain's final reject, UDP and SCTP are queued as new and denied, or dropped as invalid.
//
// # Which entries are judged
//
// The direction comes from the ends: an entry whose original source and destination are both the
// pod's (its interface addresses or loopback) is loopback, one whose original source is the pod's is
// egress, and one delivered to the pod (its reply source, the destination after NAT, is the pod's) is
// ingress. The datapath's view is rebuilt exactly: egress by the destination before NAT (the output
// chain judges before a mesh proxy's redirect), ingress by the delivered destination with the original
// port (a mesh proxy's inbound redirect), loopback with the original destination.
//
// Left alone, as the ruleset leaves them: the sidecar's own connections (Options.Own: to policygen and
// DNS), TCP connections to the sidecar's own ports (Options.SelfPorts: kubelet probes), protocols
// without ports, entries of neither direction, and connections already over (TCP TIME_WAIT and CLOSE,
// SCTP CLOSED).
package revoke
