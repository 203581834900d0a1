package injector

import (
	"fmt"

	"k8s.io/apimachinery/pkg/util/version"
	"k8s.io/client-go/discovery"
)

// nativeSidecarsSince is the first Kubernetes minor with native sidecars (init containers with
// restartPolicy Always) on by default.
var nativeSidecarsSince = version.MajorMinor(1, 29)

// nativeSupported reports whether an API server of gitVersion ("v1.37.2", "v1.28.4-eks-1") runs
// native sidecars.
func nativeSupported(gitVersion string) (bool, error) {
	v, err := version.ParseGeneric(gitVersion)
	if err != nil {
		return false, fmt.Errorf("parse server version: %w", err)
	}
	return v.AtLeast(nativeSidecarsSince), nil
}

// detectNative decides the layout once at start: the operator's choice (force), else the server's
// version. Nodes may lag the API server by up to three minors; an operator whose kubelets are older
// than 1.29 forces the older layout.
func detectNative(force *bool, disc discovery.ServerVersionInterface) (bool, error) {
	if force != nil {
		return *force, nil
	}
	info, err := disc.ServerVersion()
	if err != nil {
		return false, fmt.Errorf("server version: %w", err)
	}
	return nativeSupported(info.GitVersion)
}
