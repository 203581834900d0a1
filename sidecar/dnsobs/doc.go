// Package dnsobs is the pure DNS logic of DNS-aware egress: it parses the DNS queries the pod sends and
// the answers its resolvers return (as the sidecar's DNS queue hands them over), pairs each answer with
// the query it answers, and keeps the names the pod resolved each address from, with their TTLs.
//
// What it trusts. The answers it learns from come from the pod's own resolvers (the nameservers of the
// pod's resolv.conf): the datapath queues only packets from their address and port, and only an answer
// that matches a query the pod sent on the same flow (Tracker) is learned from at all. The resolver is
// trusted to tell the truth about the name the pod asked for, which is what the app will connect to
// anyway. It is not trusted to speak for any other name: an answer can carry records for names nobody
// asked about (a forwarder may pass on whatever the servers of the asked-for zone added, and whoever
// runs that zone, an attacker if the pod asks for an attacker's name, chooses those). So ParseAnswer
// follows the CNAME chain from the question's name only and ignores every record whose owner is off
// that chain: "x.evil.example" answering with an A record for "api.stripe.com" must not make the
// sidecar believe that address belongs to api.stripe.com. Every name along the chain is reported
// (Record.Names), so that a rule for api.stripe.com allows what the pod got when it asked for an alias
// of it; the resolver vouches for each step.
//
// The input is hostile bytes from the network: parsing uses golang.org/x/net/dns/dnsmessage's Parser
// record by record, the chain is bounded (MaxChain), loops are refused, and truncated answers give the
// records they hold whole. Parsing allocates only the name strings it reports.
//
// Limits. The Tracker holds a bounded number of outstanding queries, each for a bounded time; the
// Cache holds a bounded number of names and addresses and refuses new ones when full rather than
// evicting live ones, so that an app resolving many names cannot flush the addresses of another.
package dnsobs
