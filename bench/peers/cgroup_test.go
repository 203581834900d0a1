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

// rss is the resident memory of the container's processes now (VmRSS), in MiB.
func (c container) rss(t testing.TB) float64 {
	t.Helper()
	var kb float64
	for _, pid := range c.pids(t) {
		f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			t.Fatal(err)
		}
		for s := bufio.NewScanner(f); s.Scan(); {
			if v, ok := strings.CutPrefix(s.Text(), "VmRSS:"); ok {
				n, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 64)
				if err != nil {
					t.Fatalf("VmRSS %q of %s: %v", v, c.name, err)
				}
				kb += n
			}
		}
		f.Close()
	}
	return kb / 1024
}
