//go:build bench

// Package peers measures podwall beside its peers on the local e2e cluster (make bench-peers):
// kubernetes-sigs/kube-network-policies (KNP), a NetworkPolicy agent that judges every new connection
// of the pods its policies select in user space, on the node, and a static nftables ruleset that
// holds the same allow set in the guarded pod's namespace with no queue at all. Each guards the same
// end, the server's ingress, against the same client, beside a server with no policy: new-connection
// rates for repeat and fresh keys, first-connection latency, throughput, the firewall's CPU per
// connection and its memory per node. It runs as root and starts a cluster (take the e2e lock first);
// it is not part of make test.
package peers
