// Package version is the one version of podwall's binaries: the output of `git describe --tags
// --always --dirty` at build time (hack/version.sh), stamped into every binary by the linker. The
// Makefile's builds, the e2e image builder and the benchmarks stamp it with
//
//	go build -ldflags "-X podwall.io/podwall/internal/version.Version=$(hack/version.sh)"
//
// and the same string tags the images: the injector injects podwall/sidecar:<its own version>, and
// policygen counts the sidecars whose version differs from its own as outdated. A binary built
// without the flag (go test, go run) is version "dev".
package version

import (
	"errors"
	"fmt"
	"runtime"

	"github.com/prometheus/client_golang/prometheus"
)

// Version is set at link time (-X); "dev" when it was not.
var Version = "dev"

// LDFlags are the linker flags that stamp v into a binary, as `go build -ldflags` takes them; the
// Makefile spells the same flag.
func LDFlags(v string) string {
	return "-X podwall.io/podwall/internal/version.Version=" + v
}

// Image is the image of one of podwall's components ("sidecar", "injector", "policygen") at this
// version: podwall/<component>:<Version>, the names manifests/ and the e2e image builder use.
func Image(component string) string {
	return "podwall/" + component + ":" + Version
}

// String is what --version prints for binary: its name, version and Go version.
func String(binary string) string {
	return fmt.Sprintf("%s %s (%s)", binary, Version, runtime.Version())
}

// BuildInfo is the gauge podwall_build_info{version,goversion} 1, as Prometheus' own *_build_info.
func BuildInfo() prometheus.Collector {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "podwall_build_info",
		Help: "A metric with a constant '1' value labelled by the podwall version and the Go version it was built with.",
	}, []string{"version", "goversion"})
	g.WithLabelValues(Version, runtime.Version()).Set(1)
	return g
}

// Register registers BuildInfo with reg. A registry that has it already (controller-runtime's global
// one, when a test process runs a binary's Run twice) is left as it is.
func Register(reg prometheus.Registerer) error {
	err := reg.Register(BuildInfo())
	if are := (prometheus.AlreadyRegisteredError{}); errors.As(err, &are) {
		return nil
	}
	return err
}
