package cluster

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
)

// journalPath records, while a cluster runs, the host state it must restore and its folder. One
// cluster at a time can run on a host (the bridge, the iptables chains and the sysctls are
// host-wide), so the file is also the lock: a second Start fails at once instead of breaking the first.
// If a run dies without tearing down (killed, or a test binary that panicked), the next Start finds
// the journal and restores the host from it before recording anew.
var journalPath = filepath.Join(os.TempDir(), "podwall-e2e-host.json")

// journal is the JSON form of what a running cluster changed or may change.
type journal struct {
	Dir     string            `json:"dir"`
	OwnDir  bool              `json:"ownDir"`
	Sysctls map[string]string `json:"sysctls"`
	Paths   map[string]bool   `json:"paths"`
	Mounts  map[string]bool   `json:"mounts"`
}

// lockHost takes the host for this cluster, restoring it first if a previous cluster left it changed,
// and records the state to restore. The returned file holds the lock until closed.
func (c *Cluster) lockHost() (*os.File, error) {
	f, err := os.OpenFile(journalPath, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("another local cluster runs on this host (%s is locked): %w", journalPath, err)
	}
	if err := recoverCrashed(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("restore the host after a cluster that did not stop: %w", err)
	}
	if c.host, err = snapshotHost(); err != nil {
		f.Close()
		return nil, fmt.Errorf("record host state: %w", err)
	}
	j := journal{Dir: c.dir, OwnDir: c.ownDir, Sysctls: c.host.sysctls, Paths: c.host.paths, Mounts: c.host.mounts}
	b, err := json.Marshal(j)
	if err == nil {
		err = writeAt0(f, b)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("write %s: %w", journalPath, err)
	}
	return f, nil
}

// recoverCrashed restores the host from a journal left by a cluster that did not stop.
func recoverCrashed(f *os.File) error {
	b, err := io.ReadAll(f)
	if err != nil || len(b) == 0 {
		return err
	}
	var j journal
	if err := json.Unmarshal(b, &j); err != nil {
		return fmt.Errorf("%s: %w", journalPath, err)
	}
	fmt.Fprintf(os.Stderr, "cluster: a previous cluster in %s did not stop; restoring the host first\n", j.Dir)
	killShimsOf(filepath.Join(j.Dir, "containerd.sock"))
	h := hostState{sysctls: j.Sysctls, paths: j.Paths, mounts: j.Mounts}
	err = h.restore(j.Dir)
	if j.OwnDir {
		err = errors.Join(err, os.RemoveAll(j.Dir))
	}
	if err != nil {
		return err
	}
	return writeAt0(f, nil)
}

// unlockHost ends the journal after a complete teardown: nothing is left to restore.
func unlockHost(f *os.File) error {
	err := writeAt0(f, nil)
	return errors.Join(err, f.Close())
}

func writeAt0(f *os.File, b []byte) error {
	if err := f.Truncate(0); err != nil {
		return err
	}
	if _, err := f.WriteAt(b, 0); err != nil {
		return err
	}
	return f.Sync()
}
