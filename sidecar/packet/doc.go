// Package packet parses the raw layer-3 payload that NFQUEUE hands the sidecar (an IPv4 or IPv6 packet,
// starting at the IP header) into the small value a verdict needs: the L4 protocol, the two endpoints
// and, for TCP, the flags.
//
// Parse runs once per queued packet on the verdict path, so it allocates nothing on success and reads
// only the headers it needs. Its input comes from the network: every length field is checked against
// both the bytes captured and the length the IP header declares, IPv6 extension headers are walked a
// bounded number of times, and anything it cannot vouch for is an error rather than a guess. A packet
// whose ports cannot be known (a non-first fragment, say) is an error, because a verdict on ports that
// are not there would be a verdict on nothing; the caller fails closed.
//
// The kernel has already validated the IP header of a packet it queues, so on a real datapath errors
// are rare; they exist so that a bug or a hostile packet can never make the sidecar read out of bounds or
// decide on garbage.
package packet
