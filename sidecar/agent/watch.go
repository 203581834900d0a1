package agent

import (
	"bytes"
	"context"
	"fmt"
	"os"

	"podwall.io/podwall/api/policy"
	"podwall.io/podwall/internal/filewatch"
)

// watchPolicyFile applies the policy file whenever its content changes, as internal/filewatch reports
// it (kubelet symlink swaps, renames over the file, writes in place). A file that does not decode or
// validate, or that the kernel refuses, is reported on stderr and the last good policy stays in force.
// last is the content already in force (nil if none). The returned channel is closed once ctx is done
// and the watch has stopped.
func (a *Agent) watchPolicyFile(ctx context.Context, last []byte) (<-chan struct{}, error) {
	file := a.opts.PolicyFile
	changed := func() {
		data, err := os.ReadFile(file)
		// One update makes several events: only new content is applied (or reported) again.
		if err != nil || bytes.Equal(data, last) {
			return
		}
		last = data
		p, err := policy.Decode(data)
		if err != nil {
			a.applyErr.Inc()
		} else {
			err = a.Apply(p)
		}
		if err != nil {
			a.log.Error(err, "policy file change refused; the previous policy stays in force", "file", file)
			return
		}
		a.log.Info("policy applied", "revision", p.Revision, "mode", string(p.Mode), "canary", p.Canary)
	}
	onError := func(err error) { a.log.Error(err, "policy file watch", "file", file) }
	done, err := filewatch.Watch(ctx, file, changed, onError)
	if err != nil {
		return nil, fmt.Errorf("policy file: %w", err)
	}
	return done, nil
}
