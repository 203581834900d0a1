package cluster

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// proc is one component running as a child process, its output in <folder>/logs/<name>.log.
type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

func (c *Cluster) start(name, bin string, args ...string) error {
	logf, err := os.OpenFile(c.path("logs", name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own process group, so that a terminal's Ctrl-C reaches only the parent, which tears down in
	// order; Pdeathsig so that a parent killed outright does not leave the cluster running.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	c.procs = append(c.procs, p)
	return nil
}

// stop asks the process to end and kills it after grace.
func (p *proc) stop(grace time.Duration) {
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		p.cmd.Process.Kill()
		<-p.done
	}
}

// exited reports a component that died, with the tail of its log, so that a failed start says why.
func (c *Cluster) exited() error {
	for _, p := range c.procs {
		select {
		case <-p.done:
			return fmt.Errorf("%s exited (%v): %s", p.name, p.err, c.logTail(p.name, 15))
		default:
		}
	}
	return nil
}

func (c *Cluster) logTail(name string, n int) string {
	b, _ := os.ReadFile(c.path("logs", name+".log"))
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// waitFor polls cond until it holds, a component dies, or timeout passes.
func (c *Cluster) waitFor(ctx context.Context, what string, timeout time.Duration, cond func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		err := cond(ctx)
		if err == nil {
			return nil
		}
		if perr := c.exited(); perr != nil {
			return fmt.Errorf("wait for %s: %w", what, perr)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for %s: %w (last: %v)", what, ctx.Err(), err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// killShimsOf ends the containerd shims that the cluster's containerd at socket started (found by
// the socket address on their command line) once their containers are gone; shims re-parent
// themselves away from containerd, so stopping containerd does not end them.
func killShimsOf(socket string) {
	paths, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil || !bytes.Contains(b, []byte("containerd-shim")) || !bytes.Contains(b, []byte(socket)) {
			continue
		}
		if pid, err := strconv.Atoi(filepath.Base(filepath.Dir(p))); err == nil {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// killContainers force-deletes every task in containerd's CRI namespace: the containers die with
// their tasks, and their shims then exit.
func (c *Cluster) killContainers() {
	ctr := func(args ...string) ([]byte, error) {
		return exec.Command("ctr", append([]string{"--address", c.ContainerdSocket, "-n", "k8s.io"}, args...)...).Output()
	}
	out, err := ctr("tasks", "ls", "-q")
	if err != nil {
		return
	}
	for _, id := range strings.Fields(string(out)) {
		ctr("tasks", "kill", "-s", "SIGKILL", id)
		ctr("tasks", "delete", "-f", id)
	}
}
