package agent

import (
	"net/netip"
	"os"
	"slices"
	"strings"

	"podwall.io/podwall/api/policy"
)

// maxNameservers is how many nameserver lines a resolver uses: glibc and Go's resolver both stop at
// three, so a fourth is never asked and its answers are nobody's.
const maxNameservers = 3

// resolvConf is what the sidecar takes from the pod's resolv.conf: the resolvers whose answers it
// observes (port 53, the only one resolv.conf can name) and the search domains (canonical), under
// which a RestrictDNS policy still lets the pod ask (a short name is tried under each).
type resolvConf struct {
	Servers []netip.AddrPort
	Search  []string
}

// readResolvConf reads and parses the resolv.conf at path.
func readResolvConf(path string) (resolvConf, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return resolvConf{}, err
	}
	return parseResolvConf(data), nil
}

// parseResolvConf reads resolv.conf as the resolvers do: "nameserver" lines, the first three that
// are IP addresses (a link-local address's zone is dropped: packets carry none); the last "search"
// or "domain" line for the search domains (canonical; one with an empty label is skipped); comments from '#' or ';'; anything else ignored.
func parseResolvConf(data []byte) resolvConf {
	var rc resolvConf
	for line := range strings.Lines(string(data)) {
		if i := strings.IndexAny(line, "#;"); i >= 0 {
			line = line[:i]
		}
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		switch f[0] {
		case "nameserver":
			addr, err := netip.ParseAddr(f[1])
			if err != nil || len(rc.Servers) == maxNameservers {
				continue
			}
			rc.Servers = append(rc.Servers, netip.AddrPortFrom(addr.Unmap().WithZone(""), 53))
		case "search", "domain":
			rc.Search = rc.Search[:0]
			for _, d := range f[1:] {
				if d = policy.CanonicalName(d); !slices.Contains(strings.Split(d, "."), "") {
					rc.Search = append(rc.Search, d)
				}
			}
		}
	}
	return rc
}
