package filewatch

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// deadline bounds every wait for a callback; events arrive in milliseconds.
const deadline = 10 * time.Second

// start watches path until the test ends and returns the channel each call of changed sends on.
func start(t *testing.T, path string) <-chan struct{} {
	t.Helper()
	calls := make(chan struct{}, 64)
	ctx, cancel := context.WithCancel(context.Background())
	done, err := Watch(ctx, path, func() { calls <- struct{}{} }, func(err error) { t.Errorf("watch error: %v", err) })
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(deadline):
			t.Error("watcher did not stop")
		}
	})
	return calls
}

// called waits for a call of changed, then takes the further calls the same update made.
func called(t *testing.T, calls <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-calls:
	case <-time.After(deadline):
		t.Fatalf("changed not called after %s", what)
	}
	for {
		select {
		case <-calls:
		default:
			return
		}
	}
}

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestWatchFollowsReplacements(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "policy.json")
	write(t, path, "1")
	calls := start(t, path)
	called(t, calls, "the start")

	write(t, path, "2")
	called(t, calls, "a write in place")

	write(t, path+".new", "3")
	if err := os.Rename(path+".new", path); err != nil {
		t.Fatal(err)
	}
	called(t, calls, "a rename over the file")
}

// TestWatchFollowsKubeletSwap lays the file out as the kubelet's atomic writer does (path links through
// ..data to a timestamped directory) and swaps ..data to a new directory.
func TestWatchFollowsKubeletSwap(t *testing.T) {
	dir := t.TempDir()
	for _, ts := range []string{"..v1", "..v2"} {
		if err := os.Mkdir(filepath.Join(dir, ts), 0o755); err != nil {
			t.Fatal(err)
		}
		write(t, filepath.Join(dir, ts, "config.yaml"), ts)
	}
	data := filepath.Join(dir, "..data")
	path := filepath.Join(dir, "config.yaml")
	if err := os.Symlink("..v1", data); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join("..data", "config.yaml"), path); err != nil {
		t.Fatal(err)
	}
	calls := start(t, path)
	called(t, calls, "the start")

	if err := os.Symlink("..v2", data+"_tmp"); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(data+"_tmp", data); err != nil {
		t.Fatal(err)
	}
	called(t, calls, "the ..data swap")
}

func TestWatchNoDirectory(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	done, err := Watch(ctx, filepath.Join(t.TempDir(), "absent", "config.yaml"), func() { t.Error("changed called") }, func(error) {})
	if err != nil {
		t.Fatalf("Watch on a missing directory: %v", err)
	}
	select {
	case <-done:
		t.Fatal("watcher stopped before its context ended")
	default:
	}
	cancel()
	select {
	case <-done:
	case <-time.After(deadline):
		t.Fatal("watcher did not stop")
	}
}
