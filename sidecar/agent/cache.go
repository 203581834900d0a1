package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"podwall.io/podwall/api/policy"
)

// cacheFile is the last applied policy inside the cache directory (an emptyDir that outlives the
// container, so that a restarted sidecar re-applies it before it turns ready).
const cacheFile = "policy.json"

// saveCache writes p atomically: a crash leaves either the old file or the new one, never a torn one.
func saveCache(dir string, p *policy.Policy) error {
	if dir == "" {
		return nil
	}
	data, err := json.Marshal(p)
	if err != nil {
		return fmt.Errorf("encode policy cache: %w", err)
	}
	tmp, err := os.CreateTemp(dir, cacheFile+".*")
	if err != nil {
		return fmt.Errorf("write policy cache: %w", err)
	}
	defer os.Remove(tmp.Name()) // no-op once renamed
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write policy cache: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("sync policy cache: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write policy cache: %w", err)
	}
	if err := os.Rename(tmp.Name(), filepath.Join(dir, cacheFile)); err != nil {
		return fmt.Errorf("replace policy cache: %w", err)
	}
	return nil
}

// loadCache returns the cached policy, nil when there is none. A corrupt cache is an error: the caller
// falls back to the fail-mode baseline rather than trusting it.
func loadCache(dir string) (*policy.Policy, error) {
	if dir == "" {
		return nil, nil
	}
	p, err := policy.ReadFile(filepath.Join(dir, cacheFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	return p, err
}
