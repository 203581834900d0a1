// Package tamper notices changes to the podwall table that the sidecar did not make, and has them
// undone.
//
// A process holding CAP_NET_ADMIN in the pod's network namespace (an ephemeral debug container, a
// binary exec'd into the sidecar's container) can flush a chain, delete a set element or the whole
// table. The kernel numbers every committed nftables batch in a namespace with a generation, one more
// than the last, and announces each batch's changes to the nftables multicast group followed by the
// generation it made. A Guard runs the sidecar's own batches (Write) and notes the generation each one
// made; a batch that changes the podwall table under any other generation is someone else's, however
// the two interleave. Watch then calls the sidecar's restore, which re-applies the policy in force.
//
// Events the monitor misses (its socket buffer overran) and a monitor that cannot be opened at all
// lead to the same check by generation: the namespace's generation is read and, unless it is the one
// the sidecar's last batch made, the ruleset is restored. Without events this check runs every second.
package tamper
