package images

import (
	"archive/tar"
	"context"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// TestBuild builds two images from one package, and one from a binary built elsewhere, into a
// tarball and reads them back as a runtime would: the platform, the entrypoint, and an executable
// binary at the image's root. A spec whose package does not build is left out and reported when
// optional, and fails the build otherwise.
func TestBuild(t *testing.T) {
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(file), "..", "..", "..")
	b := Builder{ModuleDir: root, WorkDir: t.TempDir()}
	prebuilt := filepath.Join(t.TempDir(), "tool")
	if err := os.WriteFile(prebuilt, []byte("\x7fELF"), 0o600); err != nil {
		t.Fatal(err)
	}
	specs := []Spec{
		{Ref: "podwall.test/pause:t", Package: "./e2e/cmd/workload", Args: []string{"pause"}},
		{Ref: "podwall.test/workload:t", Package: "./e2e/cmd/workload"},
		{Ref: "podwall.test/tool:t", File: prebuilt, Args: []string{"-conf", "x"}},
		{Ref: "podwall.test/broken:t", Package: "./e2e/cmd/nonexistent", Optional: true},
	}
	path, left, err := b.Build(context.Background(), specs)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := left["podwall.test/broken:t"]; !ok || len(left) != 1 {
		t.Errorf("left out %v, want only the broken image", left)
	}
	for _, s := range specs[:3] {
		tag, err := name.NewTag(s.Ref)
		if err != nil {
			t.Fatal(err)
		}
		img, err := tarball.ImageFromPath(path, &tag)
		if err != nil {
			t.Fatalf("read %s back: %v", s.Ref, err)
		}
		cfg, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		want := append([]string{"/" + s.binary()}, s.Args...)
		if diff := cmp.Diff(want, cfg.Config.Entrypoint); diff != "" || cfg.OS != "linux" || cfg.Architecture != runtime.GOARCH {
			t.Errorf("%s: platform %s/%s, entrypoint (-want +got):\n%s", s.Ref, cfg.OS, cfg.Architecture, diff)
		}
		layers, err := img.Layers()
		if err != nil || len(layers) != 1 {
			t.Fatalf("%s: layers %d, %v", s.Ref, len(layers), err)
		}
		if mode := fileMode(t, layers[0].Uncompressed, s.binary()); mode != 0o755 {
			t.Errorf("%s: /%s mode %o, want 755", s.Ref, s.binary(), mode)
		}
	}

	specs[3].Optional = false
	if _, _, err := b.Build(context.Background(), specs); err == nil {
		t.Error("a required image that does not build did not fail the build")
	}
}

// fileMode finds name in the layer and returns its mode (-1 when absent).
func fileMode(t *testing.T, open func() (io.ReadCloser, error), name string) int64 {
	t.Helper()
	rc, err := open()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return -1
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Name == name {
			return h.Mode
		}
	}
}
