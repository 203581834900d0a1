// Command coredns is CoreDNS with only the plugins the local e2e cluster's DNS uses (see the Corefile
// in e2e/internal/cluster/coredns.yaml): the same code as the release, without the cloud back-ends
// that would multiply what a cold build downloads and compiles. Build with hack/build-kube.sh coredns.
package main

import (
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/ready"
)

func main() {
	coremain.Run()
}
