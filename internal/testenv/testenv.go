// Package testenv starts a real kube-apiserver and etcd for tests (controller-runtime's envtest), from
// the binaries hack/build-kube.sh builds from the Go module proxy and caches outside the repository.
package testenv

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// Options tune the control plane; the zero value starts a bare API server.
type Options struct {
	// CRDDirectoryPaths are installed before Start returns.
	CRDDirectoryPaths []string
}

// Start runs an API server for the test and stops it when the test ends. The binaries come from
// KUBEBUILDER_ASSETS, else from hack/build-kube.sh (which builds them once when the cache is cold).
func Start(t testing.TB, opts Options) *envtest.Environment {
	t.Helper()
	env := &envtest.Environment{
		BinaryAssetsDirectory: Assets(t),
		CRDDirectoryPaths:     opts.CRDDirectoryPaths,
		ErrorIfCRDPathMissing: true,
	}
	if _, err := env.Start(); err != nil {
		t.Fatalf("start kube-apiserver and etcd: %v", err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Errorf("stop control plane: %v", err)
		}
	})
	return env
}

// RepoRoot is the repository's top folder, found from this file so that tests run from any directory.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// CRDDir is manifests/crds, podwall's CustomResourceDefinitions.
func CRDDir() string { return filepath.Join(RepoRoot(), "manifests", "crds") }

// Assets returns the folder that holds kube-apiserver and etcd.
func Assets(t testing.TB) string {
	t.Helper()
	if dir := os.Getenv("KUBEBUILDER_ASSETS"); dir != "" {
		return dir
	}
	script := filepath.Join(RepoRoot(), "hack", "build-kube.sh")
	out, err := exec.Command(script).Output()
	if err != nil {
		t.Fatalf("%s: %v (run make kube-bin)", script, err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	return lines[len(lines)-1]
}
