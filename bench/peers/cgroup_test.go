//go:build bench

package peers

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// container is one running container of a pod, found through its cgroups (cgroup v1, the kubelet's
// cgroupfs driver: kubepods[/<QoS class>]/pod<uid>/<container id> in every hierarchy).
type container struct {
	name string // namespace/pod/container, for messages
	id   string
	uid  string
}

// containerOf is the container named name of the pod (init containers included: podwall's sidecar is
// a native sidecar).
func containerOf(t testing.TB, pod *corev1.Pod, name string) container {
	t.Helper()
	for _, st := range slices.Concat(pod.Status.InitContainerStatuses, pod.Status.ContainerStatuses) {
		if _, id, ok := strings.Cut(st.ContainerID, "://"); ok && st.Name == name {
			return container{name: pod.Namespace + "/" + pod.Name + "/" + name, id: id, uid: string(pod.UID)}
		}
	}
	t.Fatalf("pod %s/%s has no running container %s", pod.Namespace, pod.Name, name)
	return container{}
}

// cgroup is the container's folder in one cgroup hierarchy (cpuacct, memory...).
func (c container) cgroup(t testing.TB, hierarchy string) string {
	t.Helper()
	for _, pattern := range []string{"kubepods/pod%s/%s", "kubepods/*/pod%s/%s"} {
		dirs, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", hierarchy, fmt.Sprintf(pattern, c.uid, c.id)))
		if len(dirs) == 1 {
			return dirs[0]
		}
	}
	t.Fatalf("no %s cgroup for %s (pod uid %s, container %s)", hierarchy, c.name, c.uid, c.id)
	return ""
}

// pids are the container's processes.
func (c container) pids(t testing.TB) []int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(c.cgroup(t, "cpuacct"), "cgroup.procs"))
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, f := range strings.Fields(string(b)) {
		pid, err := strconv.Atoi(f)
		if err != nil {
			t.Fatalf("cgroup.procs of %s: %v", c.name, err)
		}
		pids = append(pids, pid)
	}
	if len(pids) == 0 {
		t.Fatalf("container %s has no process", c.name)
	}
	return pids
}

// netns is the container's network namespace (the pod's).
func (c container) netns(t testing.TB) netns {
	t.Helper()
	return netns{pid: c.pids(t)[0], name: c.name}
}

// cpu is the CPU time the container's processes used so far (user and system).
func (c container) cpu(t testing.TB) time.Duration {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(c.cgroup(t, "cpuacct"), "cpuacct.usage"))
	if err != nil {
		t.Fatal(err)
	}
	ns, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		t.Fatalf("cpuacct.usage of %s: %v", c.name, err)
	}
	return time.Duration(ns)
}

// memUse is what a container's processes hold in memory now, in MiB: resident (VmRSS), split into
// anonymous memory and file pages (RssAnon, RssFile: for a Go binary, its own mapped code and tables),
// and the proportional share (Pss): a page that n processes map counts 1/n in each, so that the sum
// over the node's processes is the memory they hold together. Sidecars of one image map the same
// binary's page cache.
type memUse struct{ rss, anon, file, pss float64 }

func (m *memUse) add(o memUse) {
	m.rss, m.anon, m.file, m.pss = m.rss+o.rss, m.anon+o.anon, m.file+o.file, m.pss+o.pss
}

func (m memUse) String() string {
	return fmt.Sprintf("RSS %.1f MiB (anonymous %.1f, file %.1f), PSS %.1f MiB", m.rss, m.anon, m.file, m.pss)
}

// mem reads the container's memUse from /proc/<pid>/status and /proc/<pid>/smaps_rollup.
func (c container) mem(t testing.TB) memUse {
	t.Helper()
	var m memUse
	for _, pid := range c.pids(t) {
		for file, fields := range map[string]map[string]*float64{
			"status":       {"VmRSS:": &m.rss, "RssAnon:": &m.anon, "RssFile:": &m.file},
			"smaps_rollup": {"Pss:": &m.pss},
		} {
			f, err := os.Open(fmt.Sprintf("/proc/%d/%s", pid, file))
			if err != nil {
				t.Fatal(err)
			}
			for s := bufio.NewScanner(f); s.Scan(); {
				line := strings.Fields(s.Text()) // "VmRSS:", "1972", "kB"
				if len(line) != 3 || fields[line[0]] == nil {
					continue
				}
				kb, err := strconv.ParseFloat(line[1], 64)
				if err != nil {
					t.Fatalf("%s of %s: %v", s.Text(), c.name, err)
				}
				*fields[line[0]] += kb / 1024
			}
			f.Close()
		}
	}
	return m
}
