// Package ui is podwall's web UI, served by policygen under /ui on the policy API's listener, its
// assets embedded in the binary (the clusters it runs on may be offline, so nothing comes from a CDN).
//
// Pages: the workloads (mode, rules by origin, sidecars in sync with each pod's reported mode and
// config file state, a weaker mode or a refused file marked, violations of the last hour, pending
// proposals), each policy in plain words (DNS names and what the pod may look up included) with its
// proposals (Accept) and NetworkPolicy export, the flows (the denies and audits reported, as
// server-sent events from a ring buffer the report sink feeds, so a paused or reconnecting view replays
// what it missed; filtered on the server by the stream's query parameters, see ParseFilter; a peer the
// pod resolved from a DNS name shows the name beside its address) and the service map: workloads
// grouped by namespace, outside peers by DNS name or CIDR, one edge per pair and verdict with its
// ports and the connections reported in a window of up to a day (Flows counts every reported
// connection per minute), drawn in the browser with cytoscape.js, which `make ui-assets` bundles from
// npm into assets/vendor/ (generated, not committed). The pages follow the system's light or dark
// theme and work from the keyboard.
//
// Every request carries the caller's Kubernetes bearer token (pasted once into the page, or set by an
// authenticating proxy in front of policygen). Reading needs RBAC to list WorkloadPolicies; changing a
// workload's mode or accepting its proposals needs RBAC to patch that WorkloadPolicy, checked with a SubjectAccessReview for the
// caller, after which policygen patches it with its own client and names the caller in annotations
// (impersonating them would take a right to impersonate anyone). A change must come as JSON from the
// UI's own origin, or from no browser at all, so that another site's page cannot spend a token a proxy
// adds. Everyone else sees the UI read-only.
// The API server's answers are reused (package kubeauth): who a token is for a minute, what they may
// do for 30 seconds, so a revoked permission takes effect within that.
//
// Each replica keeps the verdicts of the reports it received. The cluster stream (clusterStream, which
// the flows page reads) merges every replica's: it lists the others from the Service's EndpointSlices
// (Peers) and reads their own streams with the caller's token, over TLS verified by policygen's CA, so
// each replica checks the caller itself; a replica that does not answer is named, not left out. The
// service map and the workloads page merge the same way, once per request: each other replica's flows
// of the window, last hour's counts and pod states (api/local) are asked for with the caller's token and
// added to this replica's (Server.everywhere). api/explain judges a pod's connection
// with the sidecar's decide package on the policy the pod is served, without sending anything.
package ui
