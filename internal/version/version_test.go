package version_test

import (
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"podwall.io/podwall/internal/testenv"
	"podwall.io/podwall/internal/version"
)

// TestBuildInfo reads podwall_build_info back from a registry, as a scrape would; registering it again
// (a second Run in one test process) is no error.
func TestBuildInfo(t *testing.T) {
	reg := prometheus.NewRegistry()
	for range 2 {
		if err := version.Register(reg); err != nil {
			t.Fatal(err)
		}
	}
	want := `
# HELP podwall_build_info A metric with a constant '1' value labelled by the podwall version and the Go version it was built with.
# TYPE podwall_build_info gauge
podwall_build_info{goversion="` + runtime.Version() + `",version="dev"} 1
`
	if err := promtest.GatherAndCompare(reg, strings.NewReader(want), "podwall_build_info"); err != nil {
		t.Error(err)
	}
	if got := version.Image("sidecar"); got != "podwall/sidecar:dev" {
		t.Errorf("Image(sidecar) = %q", got)
	}
}

// TestStamped builds a binary as the Makefile and the image builder do, with LDFlags, and runs its
// --version: the stamped version must be what it prints.
func TestStamped(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a binary")
	}
	const v = "v9.8.7-1-gabcdef0-dirty"
	bin := filepath.Join(t.TempDir(), "podwall-sidecar")
	build := exec.Command("go", "build", "-ldflags", version.LDFlags(v), "-o", bin, "./cmd/podwall-sidecar")
	build.Dir = testenv.RepoRoot()
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "--version").Output()
	if err != nil {
		t.Fatalf("--version: %v", err)
	}
	if want := "podwall-sidecar " + v + " (" + runtime.Version() + ")\n"; string(out) != want {
		t.Errorf("--version printed %q, want %q", out, want)
	}
}
