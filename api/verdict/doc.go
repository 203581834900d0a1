// Package verdict is the schema of the sidecar's verdict log: what `kubectl logs <pod> -c podwall`
// shows on stdout, one JSON object per line. The field names are stable: tools and alerts may key on
// them, and a field is only ever added, never renamed or given another meaning.
//
// The sidecar writes three kinds of line, all decoded by Line.
//
// # Verdict lines
//
// One line per decided connection:
//
//	{"time":"2026-11-27T03:00:00.123456789Z","pod":"web-5d9c","namespace":"shop","workload":"Deployment/web",
//	 "direction":"egress","proto":"TCP","src":"10.244.0.5:40000","dst":"1.1.1.1:80","peer":"cidr:1.1.1.1/32",
//	 "verdict":"deny","rule":"default","mode":"Protect","policy_revision":7,"evaluator":"default"}
//
//	time             when the sidecar decided, RFC 3339 with nanoseconds, UTC
//	pod              the pod the sidecar guards
//	namespace        its namespace
//	workload         its top owner, "Kind/name" (for example "Deployment/web")
//	direction        "ingress" (a peer connects to the pod), "egress" (the pod connects out) or
//	                 "loopback" (a process in the pod connects to a port of the pod)
//	proto            "TCP", "UDP", "SCTP", "ICMP" or "ICMPv6"; any other protocol as its number
//	src, dst         the connection's source and destination as address:port ([v6]:port), as the
//	                 packet carried them; port 0 for ICMP and ICMPv6, which have no ports (rules match
//	                 an ICMP flow's message type, and its rule's types say which)
//	peer             what the remote end was judged as: "workload:<namespace>/<Kind>/<name>",
//	                 "cidr:<prefix>", or another name the policy gives it
//	dst_name         only when known: the DNS name the destination's address came from (a DNS
//	                 answer the pod received mapped it there: the name the deciding rule's pattern
//	                 matched, else the name the pod asked for), or, on a DNS query's own line
//	                 (dst the resolver), the name the query asked for
//	verdict          "allow", "deny", "audit" (allowed in Monitor mode, would be denied in Protect), or
//	                 "revoked" (an established connection cut, see below)
//	rule             the id of the policy rule that decided; "default" for the mode's default,
//	                 "loopback-default" for loopback traffic no loopback rule names, or
//	                 "search-domain" for a DNS query for a name under the pod's search domains
//	mode             "Learn", "Monitor" or "Protect": the mode enforced, after any override
//	policy_revision  the revision of the policy in force (0: no policy yet, the fail mode's baseline)
//	evaluator        the decision step that decided: "invalid-conn", "origdst-unknown", "loopback",
//	                 "ingress", "egress" (also a DNS query judged as its flow to the resolver),
//	                 "dns-query" (a DNS query judged by its name: restrictDNS), or "default"
//	                 (the mode's default ended the pipeline)
//	original_dst     only on a connection judged behind a mesh proxy's redirect: the destination it
//	                 was judged against, before the redirect
//
// # Revoked lines
//
// After every policy change in Protect (a new revision, or a move from Learn or Monitor to Protect),
// the sidecar judges the pod's established connections again, under the policy now in force, and
// cuts each one it refuses. Each cut connection gets one line of the same shape with verdict
// "revoked": direction, proto, src, dst and original_dst as the connection was opened, and rule,
// evaluator, peer, mode and policy_revision saying what now refuses it:
//
//	{"time":"...","pod":"web-5d9c","namespace":"shop","workload":"Deployment/web","direction":"egress",
//	 "proto":"TCP","src":"10.244.0.5:40000","dst":"10.96.0.7:5432","peer":"workload:shop/Deployment/db",
//	 "verdict":"revoked","rule":"default","mode":"Protect","policy_revision":8,"evaluator":"default"}
//
// # Summary lines
//
// Lines the sidecar did not write — refused by its rate limit, or dropped because stdout stopped
// draining — are counted, and the next line that gets through is preceded by a summary line (the
// sidecar also writes one as it stops, if anything is unreported):
//
//	{"time":"...","pod":"web-5d9c","namespace":"shop","workload":"Deployment/web","suppressed":12,
//	 "rate_limited":12,"dropped":0,"suppressed_deny":12,"suppressed_audit":0,"suppressed_allow":0,
//	 "suppressed_revoked":0,"since":"..."}
//
//	time, pod, namespace, workload  as on a verdict line
//	suppressed                      lines not written since "since": rate_limited + dropped, never 0
//	rate_limited                    of those, refused by the rate limit
//	dropped                         of those, dropped because the writer fell behind
//	suppressed_deny                 of those, the denies
//	suppressed_audit                the audits
//	suppressed_allow                the allows
//	suppressed_revoked              the revoked connections
//	since                           when the first of them was suppressed
//
// A summary line has a suppressed field and no verdict; Line.IsSummary tells it apart.
//
// # Notice lines
//
// What the operator of the pod must know about its guard, written once when it happens:
//
//	{"time":"...","pod":"web-5d9c","namespace":"shop","workload":"Deployment/web","notice":"app-net-raw",
//	 "message":"...","containers":["web"]}
//
//	time, pod, namespace, workload  as on a verdict line
//	notice                          what is told: "app-net-raw", app containers hold CAP_NET_RAW (the pod's
//	                                podwall.io/allow-net-raw annotation, an explicit capability, or a
//	                                privileged container) and can set SO_MARK and open raw and packet sockets
//	                                whose traffic the sidecar does not judge (as the sidecar starts);
//	                                "config-refused", the workload's config file was refused (at start or
//	                                on a reload): the message names the keys, the last good stays in force
//	message                         the same in words
//	containers                      the containers concerned
//
// A notice line has a notice field and no verdict; Line.IsNotice tells it apart.
package verdict
