package config

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"podwall.io/podwall/api/policy"
)

// callbackDeadline bounds every wait for a callback; events arrive in milliseconds.
const callbackDeadline = 10 * time.Second

// kubeletVolume lays out a ConfigMap volume as the kubelet's atomic writer does: the data sits in a
// timestamped directory, ..data links to it, and config.yaml links through ..data.
type kubeletVolume struct {
	t   *testing.T
	dir string
	n   int
}

func newKubeletVolume(t *testing.T, content string) *kubeletVolume {
	k := &kubeletVolume{t: t, dir: t.TempDir()}
	k.update(content)
	if err := os.Symlink(filepath.Join("..data", "config.yaml"), k.file()); err != nil {
		t.Fatal(err)
	}
	return k
}

func (k *kubeletVolume) file() string { return filepath.Join(k.dir, "config.yaml") }

// update publishes content the kubelet's way: write a new timestamped directory, point ..data_tmp at
// it, rename ..data_tmp over ..data (the atomic step), and remove the old directory.
func (k *kubeletVolume) update(content string) {
	k.t.Helper()
	k.n++
	ts := fmt.Sprintf("..2026_11_27_03_00_%02d.%d", k.n, 100000+k.n)
	data := filepath.Join(k.dir, "..data")
	old, _ := os.Readlink(data)
	for _, err := range []error{
		os.Mkdir(filepath.Join(k.dir, ts), 0o755),
		os.WriteFile(filepath.Join(k.dir, ts, "config.yaml"), []byte(content), 0o644),
		os.Symlink(ts, data+"_tmp"),
		os.Rename(data+"_tmp", data),
	} {
		if err != nil {
			k.t.Fatal(err)
		}
	}
	if old != "" {
		if err := os.RemoveAll(filepath.Join(k.dir, old)); err != nil {
			k.t.Fatal(err)
		}
	}
}

// callbacks records what a watcher reports, in order: a Sidecar for onChange, an error for onError.
type callbacks chan any

// startSidecarWatch loads the config from args, starts WatchSidecar on it and stops it when the test ends.
func startSidecarWatch(t *testing.T, args []string) (Sidecar, callbacks) {
	t.Helper()
	running, err := LoadSidecar(append(args, "--policy-file=/p"))
	if err != nil {
		t.Fatal(err)
	}
	cb := make(callbacks, 16)
	ctx, cancel := context.WithCancel(context.Background())
	done, err := WatchSidecar(ctx, running, func(s Sidecar) { cb <- s }, func(err error) { cb <- err })
	if err != nil {
		cancel()
		t.Fatalf("WatchSidecar: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(callbackDeadline):
			t.Error("watcher did not stop")
		}
	})
	return running, cb
}

// next waits for the next callback.
func (cb callbacks) next(t *testing.T) any {
	t.Helper()
	select {
	case got := <-cb:
		return got
	case <-time.After(callbackDeadline):
		t.Fatal("no callback")
	}
	return nil
}

// change waits for the next callback and fails unless it is onChange.
func (cb callbacks) change(t *testing.T) Sidecar {
	t.Helper()
	got := cb.next(t)
	s, ok := got.(Sidecar)
	if !ok {
		t.Fatalf("got %v, want a change", got)
	}
	return s
}

// error waits for the next callback and fails unless it is onError.
func (cb callbacks) error(t *testing.T) error {
	t.Helper()
	got := cb.next(t)
	err, ok := got.(error)
	if !ok {
		t.Fatalf("got change %+v, want an error", got)
	}
	return err
}

var applied = FileState{State: policy.ConfigApplied}

func TestWatchSidecarKubeletUpdate(t *testing.T) {
	vol := newKubeletVolume(t, "")
	running, cb := startSidecarWatch(t, []string{"--config", vol.file()})

	vol.update("mode: Protect\nlog-allows: all\n")
	want := running
	want.Live.Mode, want.Live.Log.Allows, want.FileState = policy.Protect, LogAllAllows, applied
	if diff := cmp.Diff(want, cb.change(t), sameConfig); diff != "" {
		t.Errorf("first update (-want +got):\n%s", diff)
	}

	vol.update("mode: Protect\nlog-allows: all\nlog-rate: 700\nlog-burst: 900\n")
	want.Live.Log.Rate, want.Live.Log.Burst = 700, 900
	if diff := cmp.Diff(want, cb.change(t), sameConfig); diff != "" {
		t.Errorf("second update (-want +got):\n%s", diff)
	}

	// Back to the original file: every live key returns to the platform's.
	vol.update("")
	if diff := cmp.Diff(running, cb.change(t), sameConfig); diff != "" {
		t.Errorf("third update (-want +got):\n%s", diff)
	}
}

func TestWatchSidecarKeepsLastGoodConfig(t *testing.T) {
	vol := newKubeletVolume(t, "mode: Monitor\n")
	running, cb := startSidecarWatch(t, []string{"--config", vol.file()})

	// Each refused file is reported once, as the running config with the file refused: the settings
	// in force stay those of the last good file.
	for _, bad := range []struct{ content, want string }{
		{"mode: [Protect\n", "config file"},
		{"mode: Protect\nlog-burst: 0\n", "log-burst: 0"},
		{"\x00\xff", "config file"},
		{"mode: Learn\nfail-mode: open\n", `key "fail-mode": ` + PlatformOnly},
	} {
		vol.update(bad.content)
		got := cb.change(t)
		if got.FileState.State != policy.ConfigRefused || !strings.Contains(got.FileState.Refused, bad.want) ||
			!strings.Contains(got.FileState.Refused, "the running configuration stays in force") {
			t.Errorf("file state for %q = %+v, want refused with %q", bad.content, got.FileState, bad.want)
		}
		if diff := cmp.Diff(running.Live, got.Live); diff != "" {
			t.Errorf("settings in force after %q (-want +got):\n%s", bad.content, diff)
		}
	}

	vol.update("mode: Learn\n")
	want := running
	want.Live.Mode = policy.Learn
	if diff := cmp.Diff(want, cb.change(t), sameConfig); diff != "" {
		t.Errorf("config after the bad files (-want +got):\n%s", diff)
	}
}

func TestWatchSidecarRestartOnlyKeys(t *testing.T) {
	vol := newKubeletVolume(t, "")
	running, cb := startSidecarWatch(t, []string{"--config", vol.file()})

	vol.update("queue-count: 3\nmode: Learn\n")
	var restart *RestartRequiredError
	if err := cb.error(t); !errors.As(err, &restart) {
		t.Fatalf("error = %v, want a RestartRequiredError", err)
	}
	if diff := cmp.Diff([]string{"queue-count"}, restart.Keys); diff != "" {
		t.Errorf("restart keys (-want +got):\n%s", diff)
	}
	want := running
	want.Live.Mode, want.FileState = policy.Learn, applied
	if diff := cmp.Diff(want, cb.change(t), sameConfig); diff != "" {
		t.Errorf("config keeps the running queues (-want +got):\n%s", diff)
	}

	// A restart-only change alone delivers no config.
	vol.update("queue-count: 4\nmode: Learn\n")
	if err := cb.error(t); !errors.As(err, &restart) || fmt.Sprint(restart.Keys) != "[queue-count]" {
		t.Fatalf("error = %v, want a RestartRequiredError for queue-count", err)
	}
	vol.update("queue-count: 4\nmode: Monitor\n")
	if err := cb.error(t); !errors.As(err, &restart) {
		t.Fatalf("error = %v, want the restart still pending", err)
	}
	want.Live.Mode = policy.Monitor
	if diff := cmp.Diff(want, cb.change(t), sameConfig); diff != "" {
		t.Errorf("config after the restart-only change (-want +got):\n%s", diff)
	}
}

// TestWatchSidecarPlatformIsTheFloor: flags and environment stay in force under every reload, and
// the file may only tighten them.
func TestWatchSidecarPlatformIsTheFloor(t *testing.T) {
	t.Setenv("PODWALL_MODE", "Monitor")
	vol := newKubeletVolume(t, "")
	running, cb := startSidecarWatch(t, []string{"--config", vol.file(), "--log-rate=50"})

	vol.update("mode: Protect\nlog-rate: 100\nlog-allows: all\n")
	want := running
	want.Live.Mode, want.Live.Log.Rate, want.Live.Log.Allows, want.FileState = policy.Protect, 100, LogAllAllows, applied
	if diff := cmp.Diff(want, cb.change(t), sameConfig); diff != "" {
		t.Errorf("config (-want +got):\n%s", diff)
	}

	vol.update("mode: Learn\nlog-rate: 1\n")
	got := cb.change(t)
	if diff := cmp.Diff(want.Live, got.Live); diff != "" {
		t.Errorf("a looser file changed the settings in force (-want +got):\n%s", diff)
	}
	for _, key := range []string{"mode: Learn is weaker than the platform's Monitor", "log-rate: 1 is under the platform's 50"} {
		if !strings.Contains(got.FileState.Refused, key) {
			t.Errorf("refusal %q does not name %q", got.FileState.Refused, key)
		}
	}
}

// TestWatchSidecarPlainFile covers a file that is not a kubelet volume, replaced atomically the way
// editors and config tools do: a new file renamed over the old one.
func TestWatchSidecarPlainFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "podwall.yaml")
	replace := func(content string) {
		t.Helper()
		if err := os.WriteFile(path+".new", []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(path+".new", path); err != nil {
			t.Fatal(err)
		}
	}
	replace("")
	running, cb := startSidecarWatch(t, []string{"--config", path})

	replace("log-allow-interval: 5s\n")
	want := running
	want.Live.Log.AllowInterval, want.FileState = 5*time.Second, applied
	if diff := cmp.Diff(want, cb.change(t), sameConfig); diff != "" {
		t.Errorf("config (-want +got):\n%s", diff)
	}

	// The file going away means the platform's settings alone again.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(running, cb.change(t), sameConfig); diff != "" {
		t.Errorf("config without the file (-want +got):\n%s", diff)
	}
}
