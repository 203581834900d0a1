package agent

import (
	"bytes"
	"context"
	"os"
	"syscall"
	"time"

	"podwall.io/podwall/api/policy"
)

// policyPollInterval is how often the standalone policy file is checked. Polling, rather than watching
// inodes, follows every way a file can be replaced (editors, ConfigMap symlink swaps); only a file
// whose size, modification time or inode changed is read again, since a policy can be megabytes.
const policyPollInterval = time.Second

// watchPolicyFile applies the policy file whenever its content changes. A file that does not decode or
// validate, or that the kernel refuses, is reported on stderr and the last good policy stays in force.
// last is the content already in force (nil if none).
func (s *Sidecar) watchPolicyFile(ctx context.Context, last []byte) {
	tick := time.NewTicker(policyPollInterval)
	defer tick.Stop()
	var seen fileStamp
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		stamp, err := stampOf(s.opts.PolicyFile)
		if err != nil || stamp == seen {
			continue
		}
		seen = stamp
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

// fileStamp tells whether a file may have changed without reading it.
type fileStamp struct {
	size, inode uint64
	mtime       time.Time
}

func stampOf(path string) (fileStamp, error) {
	fi, err := os.Stat(path) // follows symlinks: a ConfigMap swap points at a new file
	if err != nil {
		return fileStamp{}, err
	}
	st := fileStamp{size: uint64(fi.Size()), mtime: fi.ModTime()}
	if sys, ok := fi.Sys().(*syscall.Stat_t); ok {
		st.inode = sys.Ino
	}
	return st, nil
}
