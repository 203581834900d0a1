package agent

import (
	"context"
	"crypto/sha256"
	"fmt"

	"podwall.io/podwall/internal/filewatch"
)

// watchPolicyFile applies the policy file whenever its content changes, as internal/filewatch reports
// it (kubelet symlink swaps, renames over the file, writes in place). A file that does not decode or
// validate, or that the kernel refuses, is reported on stderr and the last good policy stays in force.
// last is the hash of the content already in force (zero if none): the watcher keeps hashes, not
// contents, which for a large policy would be tens of MiB. The returned channel is closed once ctx is
// done and the watch has stopped.
func (a *Agent) watchPolicyFile(ctx context.Context, last [sha256.Size]byte) (<-chan struct{}, error) {
	file := a.opts.PolicyFile
	changed := func() {
		sum, err := fileHash(file)
		// One update makes several events: only new content is applied (or reported) again.
		if err != nil || sum == last {
			return
		}
		cache := a.newCache()
		out := newCopies(cache)
		e, err := a.readPolicyFile(file, out)
		last = out.hash() // what was read, should the file have changed again since
		if err != nil {
			a.applyErr.Inc()
			cache.discard()
		} else {
			err = a.applyCompiled(e, cache)
		}
		if err != nil {
			a.log.Error(err, "policy file change refused; the previous policy stays in force", "file", file)
			return
		}
		a.log.Info("policy applied", "revision", e.Revision, "mode", string(e.Mode), "canary", e.Canary)
	}
	onError := func(err error) { a.log.Error(err, "policy file watch", "file", file) }
	done, err := filewatch.Watch(ctx, file, changed, onError)
	if err != nil {
		return nil, fmt.Errorf("policy file: %w", err)
	}
	return done, nil
}
