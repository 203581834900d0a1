// Package harness lends the local e2e cluster of e2e/internal to the benchmarks under bench/, which
// Go's internal rule keeps from importing it: the same cluster, images and podwall install that make
// e2e uses, under the same names. It adds nothing of its own.
package harness

import (
	"context"

	"podwall.io/podwall/e2e/internal/cluster"
	"podwall.io/podwall/e2e/internal/images"
	"podwall.io/podwall/e2e/internal/stack"
)

// Cluster is a running local cluster (cluster.Cluster).
type Cluster = cluster.Cluster

// ImageBuilder and ImageSpec build images for the cluster's containerd (package images).
type (
	ImageBuilder = images.Builder
	ImageSpec    = images.Spec
)

// WorkloadImage is the test workload's image, loaded by Up.
const WorkloadImage = stack.WorkloadImage

// Up starts a cluster for the repository at root with podwall's images loaded (stack.Up); the caller
// must Stop it.
func Up(ctx context.Context, root string) (*Cluster, map[string]error, error) {
	return stack.Up(ctx, root)
}

// Deploy installs podwall into the cluster as a user does (stack.Deploy).
func Deploy(ctx context.Context, c *Cluster, root string) error { return stack.Deploy(ctx, c, root) }

// ImportImages loads a tarball that ImageBuilder wrote into the cluster's containerd (images.Import).
func ImportImages(ctx context.Context, c *Cluster, tarball string) error {
	return images.Import(ctx, c.ContainerdSocket, tarball)
}
