// Package ruleset builds and applies the sidecar's nftables ruleset in the pod's network namespace:
// one inet table, "podwall", that the sidecar alone owns and that holds every object it creates.
//
// A policy is compiled first (Compile, or a Builder that policy.Stream hands the rules to one at a
// time): its allow sets' elements encoded end to end, and the few other things of it the ruleset
// depends on. The build functions (buildChains, buildSets and the expression helpers) return rules,
// sets and elements and do no I/O; Compiled.Apply sends the whole table as one netlink batch, so that
// the kernel swaps it atomically and a policy the kernel refuses leaves the previous ruleset in force.
// A policy whose allow sets would make that batch large (past stageBytes) has them staged first, under
// names of their own that no rule refers to yet, in batches of bounded size; the last batch swaps the
// ruleset as for any policy. The memory an Apply holds is thus bounded, and the swap stays atomic:
// until the last batch commits, the previous ruleset enforces exactly as before.
//
// Each judging base chain (output for egress, input for ingress and loopback) has a guard chain just
// before it at the same hook, which clears the podwall bits of the packet mark (an app holding
// CAP_NET_RAW sets any mark it likes) but MarkSelf towards the sidecar's own destinations (the
// self_dests sets). NF_REPEAT re-runs only the judging chain, not the guard, so the verdict marks
// below come from the verdict loop alone. Both judging chains run the same pipeline:
//
//  0. with Options.DNSServers (and a verdict loop), DNS is observed first, since queries and answers
//     after a flow's first packet are established: one match of the transport port against the
//     servers' ports (a bitmap set) is all other traffic pays. On output, a query to one of the
//     servers (UDP, or a TCP segment with data) that carries no podwall mark is released in the
//     kernel if it is UDP, the policy does not restrict DNS, and its flow or key is known (conntrack
//     saw it answered, or the key is seen or allowed where the kernel decides alone); otherwise it
//     goes to Options.DNSQueue, with MarkNewFlow if it opens its flow (the verdict loop judges the
//     flow as a connection then, and each query by its name). One the verdict loop allowed comes
//     back with MarkAllow (its key remembered as seen), one it refused with MarkDeny and is refused
//     (ICMP prohibited, TCP reset). A released UDP query enters the dns_asked sets (ChainDNSTrack).
//     On input, a UDP answer from one of the servers must match a query there (which it deletes),
//     or it is dropped and counted; it is then logged to the netlink group Options.DNSQueue and
//     accepted (Options.DNSLog) or queued. A TCP answer is queued. Neither is taken from loopback
//     (an app holding CAP_NET_RAW can forge any source there) nor from the sidecar's own connections
//     (connection mark MarkSelf), whose queries were not queued either;
//  1. established and related traffic is accepted (conntrack's fast path), invalid dropped;
//  2. mark rules: the sidecar's own sockets (MarkSelf) pass, their connection marked MarkSelf; a
//     packet the verdict loop answered with NF_REPEAT re-enters the chain carrying MarkDeny (refused:
//     TCP reset or ICMP prohibited; in Protect its key is first added to a deny memo set) or MarkAllow (its key is added to a seen set, the connection
//     marked, the packet accepted);
//  3. where what no rule allows is refused, a TCP segment other than a SYN is refused: it opens no
//     connection, and a connection cut by revocation must not be taken up mid-stream by a key;
//  4. keys the kernel may decide alone are accepted: seen keys (unless LogAllowsAll), and what the
//     allow sets and, for egress, the FQDN sets allow with LogAllowsNone or Offline; with
//     Options.AllowLog and the other LogAllows, what the allow sets allow (ICMP aside), copied first to
//     the log group Options.QueueNum (and remembered as seen with LogAllowsFirst); in Protect, keys in the deny memo (denied less
//     than Options.DenyMemoTimeout ago) are refused and counted (CounterDenyMemoHits), so that a flood
//     of a denied key does not crowd new keys out of the queue;
//  5. the opening packet of every other connection is queued (TCP: the SYN itself, since a
//     "ct state new" match lets a few openings through unqueued);
//  6. a final default decides whatever slipped past the queue: refused in Protect and Offline,
//     accepted in Learn and Monitor.
//
// Peers live only in sets, "address . protocol . port": single keys in hash sets, ranges (CIDRs,
// port ranges) in the kernel's pipapo sets, made disjoint first. The number of rules and the cost per
// packet do not grow with the policy.
//
// The FQDN sets hold the addresses DNS answers gave for names of the policy's FQDN rules, for those
// rules' ports, each element with its own timeout (the answer's TTL), split as the allow sets are:
// keys of one port in a hash set (an insert costs the same whatever the set holds), ranges in a
// pipapo set (whose insert copies its lookup table). AddFQDN adds an answer's addresses between Applies (re-adding an element refreshes its timeout); Apply rebuilds them from
// Options.FQDN, so that no resolved address is lost, and Offline keeps allowing them until they
// expire. ForgetSeen deletes seen keys whose names expired, so that they are judged again.
//
// Egress is judged before NAT, so a connection that a mesh proxy's outbound redirect sends to the
// proxy is judged by its real remote. Loopback traffic is judged on input: ports of the policy's
// loopback deny rules (original ports, so a proxy's hairpin redirect does not hide them) are queued,
// so that the deny is logged and refused; the rest is the pod talking to itself and passes. Inbound
// connections are keyed on their original destination port, so that a mesh proxy's inbound redirect
// is judged on the application's port; since their conntrack entry is not confirmed yet at input, the
// port is copied into the queued packet's mark for user space.
package ruleset
