// Package images builds container images for the local e2e cluster without a Docker daemon or a
// registry: each image is one layer holding a static Go binary (CGO_ENABLED=0, so it needs no libc;
// built here from a package of this module, or taken as built, like the cached CoreDNS),
// assembled and written as a docker-format tarball with go-containerregistry, then imported into
// containerd's CRI namespace with `ctr images import`. Pods use them with imagePullPolicy Never.
package images

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"podwall.io/podwall/internal/version"
)

// Spec is one image: a Go main package built statically, or a static binary built elsewhere, placed
// at /<Binary> in the image.
type Spec struct {
	// Ref names the image, e.g. "podwall.test/workload:e2e". A tag other than "latest" keeps the
	// kubelet from trying to pull it.
	Ref string
	// Package is the main package to build, as `go build` takes it (e.g. "./cmd/podwall-sidecar"),
	// resolved in the module at Builder.ModuleDir.
	Package string
	// File, instead of Package, is a static binary already built (hack/build-kube.sh's CoreDNS):
	// it goes into the image as it is.
	File string
	// Binary is the file name in the image's root; the default is the last element of Package, or
	// of File.
	Binary string
	// Args follow the binary in the image's entrypoint (e.g. a subcommand).
	Args []string
	// Optional images whose binary does not build are left out (and reported) instead of failing
	// the whole build: a part of podwall still in progress must not stop the tests of the others.
	Optional bool
}

// Builder builds images from one Go module.
type Builder struct {
	// ModuleDir is the folder `go build` runs in.
	ModuleDir string
	// WorkDir holds the built binaries and the tarball; the caller removes it.
	WorkDir string
	// Version is stamped into every binary (package internal/version); empty leaves them "dev".
	Version string
}

// Build compiles every spec's binary and writes all images into one tarball, whose path it returns
// with the build errors of the optional images it left out, by reference.
func (b Builder) Build(ctx context.Context, specs []Spec) (string, map[string]error, error) {
	left := map[string]error{}
	refs := make(map[name.Reference]v1.Image, len(specs))
	built := map[string]string{} // package -> binary: several images may share one binary
	for _, s := range specs {
		ref, err := name.ParseReference(s.Ref)
		if err != nil {
			return "", nil, fmt.Errorf("image %q: %w", s.Ref, err)
		}
		bin, ok := built[s.Package]
		if s.File != "" {
			bin, ok = s.File, true
		}
		if !ok {
			if bin, err = b.compile(ctx, s); err != nil && s.Optional {
				left[s.Ref] = err
				continue
			} else if err != nil {
				return "", nil, err
			}
			built[s.Package] = bin
		}
		img, err := image(bin, s)
		if err != nil {
			return "", nil, fmt.Errorf("image %s: %w", s.Ref, err)
		}
		refs[ref] = img
	}
	out := filepath.Join(b.WorkDir, "images.tar")
	if err := tarball.MultiRefWriteToFile(out, refs); err != nil {
		return "", nil, fmt.Errorf("write %s: %w", out, err)
	}
	return out, left, nil
}

// compile builds the spec's package into WorkDir and returns the binary's path.
func (b Builder) compile(ctx context.Context, s Spec) (string, error) {
	out := filepath.Join(b.WorkDir, "bin", s.binary())
	ldflags := "-s -w"
	if b.Version != "" {
		ldflags += " " + version.LDFlags(b.Version)
	}
	cmd := exec.CommandContext(ctx, "go", "build", "-ldflags="+ldflags, "-o", out, s.Package)
	cmd.Dir = b.ModuleDir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux")
	if msg, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s: %w: %s", s.Package, err, msg)
	}
	return out, nil
}

func (s Spec) binary() string {
	switch {
	case s.Binary != "":
		return s.Binary
	case s.File != "":
		return filepath.Base(s.File)
	}
	return filepath.Base(s.Package)
}

// image wraps the binary in a one-layer image whose entrypoint runs it.
func image(bin string, s Spec) (v1.Image, error) {
	data, err := os.ReadFile(bin)
	if err != nil {
		return nil, err
	}
	layer, err := binaryLayer("/"+s.binary(), data)
	if err != nil {
		return nil, err
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return nil, err
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cfg = cfg.DeepCopy()
	// containerd's import keeps only the host's platform, so the config must name it.
	cfg.OS, cfg.Architecture = "linux", runtime.GOARCH
	cfg.Config.Entrypoint = append([]string{"/" + s.binary()}, s.Args...)
	cfg.Config.Env = []string{"PATH=/"}
	return mutate.ConfigFile(img, cfg)
}

// binaryLayer is an uncompressed layer with one executable file and a world-writable /tmp. (crane.Layer
// would do, but it writes mode 0 entries, which cannot be executed.)
func binaryLayer(path string, data []byte) (v1.Layer, error) {
	var buf bytes.Buffer
	w := tar.NewWriter(&buf)
	epoch := time.Unix(0, 0)
	entries := []struct {
		hdr  tar.Header
		data []byte
	}{
		{tar.Header{Name: "tmp/", Typeflag: tar.TypeDir, Mode: 0o1777, ModTime: epoch}, nil},
		{tar.Header{Name: path[1:], Typeflag: tar.TypeReg, Mode: 0o755, Size: int64(len(data)), ModTime: epoch}, data},
	}
	for _, e := range entries {
		if err := w.WriteHeader(&e.hdr); err != nil {
			return nil, err
		}
		if _, err := w.Write(e.data); err != nil {
			return nil, err
		}
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	layer := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layer)), nil
	})
}

// Import loads a tarball into containerd's "k8s.io" namespace, the one the CRI plugin (and so the
// kubelet) sees, through the containerd socket at address.
func Import(ctx context.Context, address, tarPath string) error {
	cmd := exec.CommandContext(ctx, "ctr", "--address", address, "-n", "k8s.io", "images", "import", tarPath)
	if msg, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("ctr images import: %w: %s", err, msg)
	}
	return nil
}
