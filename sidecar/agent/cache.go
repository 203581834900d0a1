package agent

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// cacheFile is the last applied policy inside the cache directory (an emptyDir that outlives the
// container, so that a restarted sidecar re-applies it before it turns ready).
const cacheFile = "policy.json"

// pendingCache is the next cache being written, as its policy document is read: a temporary file in
// the cache directory that commit puts in place atomically (a crash leaves either the old file or the
// new one, never a torn one) once the policy is in force, and discard removes otherwise. A nil
// pendingCache (no cache directory) takes nothing. Writes never fail: a write error is kept for
// commit to report, since a policy must not be refused for its cache.
type pendingCache struct {
	f   *os.File
	err error
}

// newCache starts the next cache: nil without a cache directory, or if it cannot be written (logged).
func (a *Agent) newCache() *pendingCache {
	if a.opts.CacheDir == "" {
		return nil
	}
	f, err := os.CreateTemp(a.opts.CacheDir, cacheFile+".*")
	if err != nil {
		a.log.Error(err, "policy cache not written; a restart would re-apply an older policy")
		return nil
	}
	return &pendingCache{f: f}
}

func (c *pendingCache) Write(b []byte) (int, error) {
	if c.err == nil {
		_, c.err = c.f.Write(b)
	}
	return len(b), nil
}

// reset empties the file, to write another document.
func (c *pendingCache) reset() {
	c.err = c.f.Truncate(0)
	if c.err == nil {
		_, c.err = c.f.Seek(0, io.SeekStart)
	}
}

// commit makes the file the cache.
func (c *pendingCache) commit() error {
	if c == nil {
		return nil
	}
	defer os.Remove(c.f.Name()) // no-op once renamed
	err := c.err
	if err == nil {
		err = c.f.Sync()
	}
	if cerr := c.f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write policy cache: %w", err)
	}
	if err := os.Rename(c.f.Name(), filepath.Join(filepath.Dir(c.f.Name()), cacheFile)); err != nil {
		return fmt.Errorf("replace policy cache: %w", err)
	}
	return nil
}

// discard removes the file.
func (c *pendingCache) discard() {
	if c != nil {
		c.f.Close()
		os.Remove(c.f.Name())
	}
}

// loadCache returns the cached policy, nil when there is none. A corrupt cache is an error: the caller
// falls back to the fail-mode baseline rather than trusting it.
func (a *Agent) loadCache() (*enforced, error) {
	if a.opts.CacheDir == "" {
		return nil, nil
	}
	e, err := a.readPolicyFile(filepath.Join(a.opts.CacheDir, cacheFile), nil)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	return e, err
}
