package agent

import (
	"bytes"
	"context"
	"os"
	"time"

	"podwall.io/podwall/sidecar/policy"
)

// policyPollInterval is how often the standalone policy file is checked. Polling the content, rather
// than watching inodes, follows every way a file can be replaced (editors, ConfigMap symlink swaps).
const policyPollInterval = time.Second

// watchPolicyFile applies the policy file whenever its content changes. A file that does not decode or
// validate, or that the kernel refuses, is reported on stderr and the last good policy stays in force.
// last is the content already in force (nil if none).
func (s *Sidecar) watchPolicyFile(ctx context.Context, last []byte) {
	tick := time.NewTicker(policyPollInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		data, err := os.ReadFile(s.opts.PolicyFile)
		if err != nil || bytes.Equal(data, last) {
			continue
		}
		last = data
		p, err := policy.Decode(data)
		if err != nil {
			s.applyErr.Inc()
		} else {
			err = s.Apply(p)
		}
		if err != nil {
			s.log.Error(err, "policy file change refused; the previous policy stays in force", "file", s.opts.PolicyFile)
			continue
		}
		s.log.Info("policy applied", "revision", p.Revision, "mode", string(p.Mode))
	}
}
