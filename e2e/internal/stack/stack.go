// Package stack assembles the local cluster that `make e2e` and `make cluster` use: it builds (or
// finds cached) the Kubernetes binaries and CoreDNS, builds the images of podwall's binaries, of the
// test workload and of the cluster DNS, and starts the cluster with those images loaded.
package stack

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"podwall.io/podwall/e2e/internal/cluster"
	"podwall.io/podwall/e2e/internal/images"
)

// WorkloadImage is the test workload's image. Its tag is not "latest", so that pods using it with
// imagePullPolicy IfNotPresent never try a registry (none is reachable here).
const WorkloadImage = "podwall.test/workload:e2e"

// PodwallImage is the image of one of podwall's binaries at version v ("podwall-sidecar" ->
// podwall/sidecar:<v>): the names manifests/ and the injector's default use, so that manifests/ at
// that version (Deploy) runs the images built from this tree, and the injector injects the sidecar
// built with it.
func PodwallImage(binary, v string) string {
	return "podwall/" + strings.TrimPrefix(binary, "podwall-") + ":" + v
}

var versions = struct {
	sync.Mutex
	of map[string]string
}{of: map[string]string{}}

// Version is the version of the tree at root (hack/version.sh), which its binaries are stamped and
// its images tagged with. It is read once per process, so that a file edited during a run (which makes
// the tree -dirty) does not change the tag that Deploy pins after the images were built.
func Version(ctx context.Context, root string) (string, error) {
	versions.Lock()
	defer versions.Unlock()
	if v, ok := versions.of[root]; ok {
		return v, nil
	}
	out, err := exec.CommandContext(ctx, filepath.Join(root, "hack", "version.sh")).Output()
	if err != nil {
		return "", fmt.Errorf("hack/version.sh: %w", err)
	}
	v := strings.TrimSpace(string(out))
	versions.of[root] = v
	return v, nil
}

// Up starts a cluster for the repository at root, with podwall's images at the tree's version
// (LoadPodwall). The caller must Stop it. Missing maps each of podwall's images that could not be
// built (its binary does not compile yet) to the reason.
func Up(ctx context.Context, root string) (c *cluster.Cluster, missing map[string]error, err error) {
	binDir, err := kubeBinaries(ctx, root)
	if err != nil {
		return nil, nil, err
	}
	v, err := Version(ctx, root)
	if err != nil {
		return nil, nil, err
	}
	work, err := os.MkdirTemp("", "podwall-images-")
	if err != nil {
		return nil, nil, err
	}
	defer os.RemoveAll(work)
	tarball, _, err := images.Builder{ModuleDir: root, WorkDir: work, Version: v}.Build(ctx, clusterSpecs(binDir))
	if err != nil {
		return nil, nil, err
	}
	start := time.Now()
	c, err = cluster.Start(ctx, cluster.Options{BinDir: binDir, Images: []string{tarball}, Import: images.Import})
	if err != nil {
		return nil, nil, err
	}
	fmt.Fprintf(os.Stderr, "stack: cluster up in %s\n", time.Since(start).Round(time.Second))
	if missing, err = LoadPodwall(ctx, c, root, v); err != nil {
		c.Stop()
		return nil, nil, err
	}
	return c, missing, nil
}

// LoadPodwall builds the images of podwall's binaries (Podwall) stamped and tagged with version v
// (PodwallImage) and loads them into the cluster's containerd, where pods find them without a
// registry. Missing maps each image whose binary does not build to the reason. A version other than
// the tree's stands for another release of podwall, e.g. the one an upgrade starts from.
func LoadPodwall(ctx context.Context, c *cluster.Cluster, root, v string) (missing map[string]error, err error) {
	names, err := Podwall(root)
	if err != nil {
		return nil, err
	}
	var specs []images.Spec
	for _, n := range names {
		specs = append(specs, images.Spec{Ref: PodwallImage(n, v), Package: "./cmd/" + n, Optional: true})
	}
	work, err := os.MkdirTemp("", "podwall-images-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)
	start := time.Now()
	tarball, missing, err := images.Builder{ModuleDir: root, WorkDir: work, Version: v}.Build(ctx, specs)
	if err != nil {
		return nil, err
	}
	if err := images.Import(ctx, c.ContainerdSocket, tarball); err != nil {
		return nil, err
	}
	fmt.Fprintf(os.Stderr, "stack: podwall's images of version %s built and loaded in %s\n", v, time.Since(start).Round(time.Second))
	return missing, nil
}

// Podwall lists podwall's binaries that run in the cluster and exist in the tree
// (cmd/podwall-<name>/main.go), each of which gets an image. The kubectl plugin (cmd/kubectl-podwall)
// runs on the user's machine, not in a pod: it gets none.
func Podwall(root string) ([]string, error) {
	mains, err := filepath.Glob(filepath.Join(root, "cmd", "podwall-*", "main.go"))
	if err != nil {
		return nil, err
	}
	var names []string
	for _, m := range mains {
		names = append(names, filepath.Base(filepath.Dir(m)))
	}
	return names, nil
}

// clusterSpecs lists the images the cluster needs before podwall's: pause and CoreDNS (from binDir),
// and the test workload's.
func clusterSpecs(binDir string) []images.Spec {
	const workload = "./e2e/cmd/workload"
	return []images.Spec{
		{Ref: cluster.PauseImage, Package: workload, Args: []string{"pause"}},
		{Ref: cluster.DNSImage, File: filepath.Join(binDir, "coredns")},
		{Ref: WorkloadImage, Package: workload},
	}
}

// kubeBinaries runs hack/build-kube.sh for everything the cluster runs (CoreDNS included) and returns
// its folder.
func kubeBinaries(ctx context.Context, root string) (string, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(root, "hack", "build-kube.sh"), "kube-apiserver", "etcd", "node")
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("hack/build-kube.sh: %w", err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	return lines[len(lines)-1], nil
}
