package cluster

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// sysctls the kubelet, kube-proxy and the CNI bridge plugin change on the host. The bridge plugin
// turns on net/ipv6/conf/all/forwarding, which the kernel copies to every interface (and to default):
// restoring it copies the old value back.
var sysctls = []string{
	"vm/overcommit_memory", "kernel/panic", "kernel/panic_on_oops", "net/ipv4/ip_forward",
	"net/ipv4/conf/all/route_localnet", "net/bridge/bridge-nf-call-iptables", "net/netfilter/nf_conntrack_max",
	"net/ipv6/conf/all/forwarding", "net/bridge/bridge-nf-call-ip6tables",
}

// hostPaths are folders that the node's components create outside the cluster's folder even when
// told to keep their state inside it (hard-coded in the kubelet, containerd's shims or libcni).
var hostPaths = []string{"/var/lib/kubelet", "/var/log/pods", "/var/log/containers", "/var/lib/cni", "/run/containerd", "/opt/containerd"}

// hostState is what the cluster changes on the host, recorded before it starts.
type hostState struct {
	sysctls map[string]string
	paths   map[string]bool // which hostPaths existed
	mounts  map[string]bool
}

func snapshotHost() (hostState, error) {
	h := hostState{sysctls: map[string]string{}, paths: map[string]bool{}}
	for _, s := range sysctls {
		if v, err := os.ReadFile(filepath.Join("/proc/sys", s)); err == nil {
			h.sysctls[s] = strings.TrimSpace(string(v))
		}
	}
	for _, p := range hostPaths {
		_, err := os.Lstat(p)
		h.paths[p] = err == nil
	}
	var err error
	h.mounts, err = mountPoints()
	return h, err
}

// restore undoes every change the cluster made to the host; it goes on past failures and returns
// them all, so that one stuck mount does not leave the sysctls changed.
func (h hostState) restore(workDir string) error {
	var errs []error
	errs = append(errs, h.unmount(workDir))
	errs = append(errs, removeBridge())
	errs = append(errs, removeIptablesChains())
	errs = append(errs, removeCgroups())
	for s, v := range h.sysctls {
		if err := os.WriteFile(filepath.Join("/proc/sys", s), []byte(v), 0o644); err != nil {
			errs = append(errs, fmt.Errorf("restore sysctl %s: %w", s, err))
		}
	}
	for _, p := range hostPaths {
		if !h.paths[p] {
			if err := os.RemoveAll(p); err != nil {
				errs = append(errs, fmt.Errorf("remove %s: %w", p, err))
			}
		}
	}
	return errors.Join(errs...)
}

// mountPoints lists the host's mount points.
func mountPoints() (map[string]bool, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	m := map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fields := strings.Fields(sc.Text()); len(fields) > 4 {
			m[fields[4]] = true
		}
	}
	return m, sc.Err()
}

// unmount detaches the mounts made since the snapshot by the cluster: under its folder, the
// kubelet's and containerd's paths, and the CNI network namespaces (/run/netns/cni-*). Mounts that
// other programs made meanwhile elsewhere are left alone.
func (h hostState) unmount(workDir string) error {
	now, err := mountPoints()
	if err != nil {
		return err
	}
	prefixes := append([]string{workDir + "/", "/run/netns/cni-"}, hostPaths...)
	var ours []string
	for m := range now {
		if h.mounts[m] {
			continue
		}
		for _, p := range prefixes {
			if strings.HasPrefix(m, p) {
				ours = append(ours, m)
				break
			}
		}
	}
	// Deepest first, lazily: a mount still held open by a dying process must not stop the rest.
	sort.Sort(sort.Reverse(sort.StringSlice(ours)))
	var errs []error
	for _, m := range ours {
		if err := exec.Command("umount", "-l", m).Run(); err != nil {
			errs = append(errs, fmt.Errorf("umount %s: %w", m, err))
		}
		if strings.HasPrefix(m, "/run/netns/cni-") {
			os.Remove(m)
		}
	}
	return errors.Join(errs...)
}

// removeBridge deletes the CNI bridge and the veths still attached to it (a pod whose sandbox was
// not torn down through CNI leaves its host-side veth).
func removeBridge() error {
	if exec.Command("ip", "link", "show", BridgeName).Run() != nil {
		return nil
	}
	out, _ := exec.Command("ip", "-o", "link", "show", "master", BridgeName).Output()
	for _, line := range strings.Split(string(out), "\n") {
		if f := strings.Fields(line); len(f) > 1 {
			dev, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
			exec.Command("ip", "link", "del", dev).Run()
		}
	}
	if msg, err := exec.Command("ip", "link", "del", BridgeName).CombinedOutput(); err != nil {
		return fmt.Errorf("delete bridge %s: %w: %s", BridgeName, err, msg)
	}
	return nil
}

// removeIptablesChains deletes the KUBE-* chains the kubelet and kube-proxy create, and the rules
// that jump to them, in every table of both families.
func removeIptablesChains() error {
	var errs []error
	for _, bin := range []string{"iptables", "ip6tables"} {
		for _, table := range []string{"filter", "nat", "mangle"} {
			errs = append(errs, removeKubeChains(bin, table))
		}
	}
	return errors.Join(errs...)
}

func removeKubeChains(bin, table string) error {
	out, err := exec.Command(bin, "-w", "-t", table, "-S").Output()
	if err != nil {
		return nil // the table does not exist in this family
	}
	var chains []string
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) >= 2 && f[0] == "-N" && strings.HasPrefix(f[1], "KUBE-"):
			chains = append(chains, f[1])
		case len(f) >= 2 && f[0] == "-A" && !strings.HasPrefix(f[1], "KUBE-") && strings.Contains(line, " -j KUBE-"):
			args := append([]string{"-w", "-t", table, "-D"}, splitRule(line)[1:]...)
			exec.Command(bin, args...).Run()
		}
	}
	var errs []error
	for _, ch := range chains {
		exec.Command(bin, "-w", "-t", table, "-F", ch).Run()
	}
	for _, ch := range chains {
		if msg, err := exec.Command(bin, "-w", "-t", table, "-X", ch).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("%s -t %s -X %s: %w: %s", bin, table, ch, err, msg))
		}
	}
	return errors.Join(errs...)
}

// removeCgroups removes the kubelet's cgroup trees (the cgroupfs driver creates "kubepods" in every
// v1 hierarchy). Any process still in them is a container of this cluster whose shim is gone: it is
// killed first, since rmdir works only on empty cgroups (deepest first).
func removeCgroups() error {
	roots, _ := filepath.Glob("/sys/fs/cgroup/*/kubepods")
	killCgroupProcs(roots)
	var errs []error
	for _, root := range roots {
		var dirs []string
		filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		sort.Sort(sort.Reverse(sort.StringSlice(dirs)))
		for _, d := range dirs {
			if err := os.Remove(d); err != nil {
				errs = append(errs, fmt.Errorf("remove cgroup %s: %w", d, err))
			}
		}
	}
	return errors.Join(errs...)
}

// splitRule splits one line of `iptables -S` into arguments; comments are double-quoted there.
func splitRule(line string) []string {
	var args []string
	var cur strings.Builder
	quoted, escaped, started := false, false, false
	for _, r := range line {
		switch {
		case escaped:
			cur.WriteRune(r)
			escaped = false
		case r == '\\':
			escaped = true
		case r == '"':
			quoted, started = !quoted, true
		case r == ' ' && !quoted:
			if started {
				args = append(args, cur.String())
				cur.Reset()
				started = false
			}
		default:
			cur.WriteRune(r)
			started = true
		}
	}
	if started {
		args = append(args, cur.String())
	}
	return args
}

// killCgroupProcs SIGKILLs every process in the cgroup trees and waits (up to 5 s) until they are empty.
func killCgroupProcs(roots []string) {
	procs := func() []int {
		var pids []int
		for _, root := range roots {
			filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
				if err == nil && d.Name() == "cgroup.procs" {
					b, _ := os.ReadFile(p)
					for _, f := range strings.Fields(string(b)) {
						if pid, err := strconv.Atoi(f); err == nil {
							pids = append(pids, pid)
						}
					}
				}
				return nil
			})
		}
		return pids
	}
	deadline := time.Now().Add(5 * time.Second)
	for pids := procs(); len(pids) > 0 && time.Now().Before(deadline); pids = procs() {
		for _, pid := range pids {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
