package injector

import (
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"podwall.io/podwall/api/sidecar"
)

// podwallVolumes are the volumes add puts in, with what each holds. Each is the sidecar's alone: whoever
// reads the token speaks to policygen as the workload's sidecar, and whoever writes the cache or (through
// its own volume under the name) the settings chooses what the sidecar enforces. So no app container may
// mount them, and a pod may not declare its own volume under their names.
var podwallVolumes = []struct{ name, holds string }{
	{sidecar.VolumeConfig, "the sidecar's settings"},
	{sidecar.VolumeToken, "the sidecar's token for policygen"},
	{sidecar.VolumeCache, "the sidecar's policy cache"},
}

// injectedVolumes are the names of the volumes add puts in.
func injectedVolumes() []string {
	out := make([]string, 0, len(podwallVolumes))
	for _, v := range podwallVolumes {
		out = append(out, v.name)
	}
	return out
}

// reservedVolume says what podwall's volume of that name holds; ok is false for any other name.
func reservedVolume(name string) (holds string, ok bool) {
	i := slices.IndexFunc(podwallVolumes, func(v struct{ name, holds string }) bool { return v.name == name })
	if i < 0 {
		return "", false
	}
	return podwallVolumes[i].holds, true
}

// checkReservedVolumes refuses a pod, as it came (before removeInjected), that declares a volume under
// one of podwall's names, or whose app containers (ephemeral ones too) mount one. A volume the pod's
// status records is an earlier pass's, which this pass replaces: a pod can forge that status, but then
// its volume is replaced all the same, and no app container may mount it.
func checkReservedVolumes(pod *corev1.Pod) error {
	var problems []string
	st := injectedStatus(pod)
	for _, v := range pod.Spec.Volumes {
		if holds, ok := reservedVolume(v.Name); ok && !slices.Contains(st.Volumes, v.Name) {
			problems = append(problems, fmt.Sprintf("the pod declares its own volume %q (podwall's name for %s)", v.Name, holds))
		}
	}
	mounts := func(kind, name string, list []corev1.VolumeMount) {
		for _, m := range list {
			if holds, ok := reservedVolume(m.Name); ok {
				problems = append(problems, fmt.Sprintf("%s %q mounts volume %q (%s)", kind, name, m.Name, holds))
			}
		}
	}
	// An earlier pass's containers mount podwall's volumes by design; removeInjected takes them out.
	earlier := slices.Concat(st.InitContainers, st.Containers)
	appContainers(&pod.Spec, func(kind string, c *corev1.Container) {
		if !slices.Contains(earlier, c.Name) {
			mounts(kind, c.Name, c.VolumeMounts)
		}
	})
	for _, c := range pod.Spec.EphemeralContainers {
		mounts("ephemeral container", c.Name, c.VolumeMounts)
	}
	if len(problems) == 0 {
		return nil
	}
	return fmt.Errorf("podwall: %s: podwall reserves the volume names %s for its sidecar, and no app container may mount them; "+
		"give the pod's volume another name", strings.Join(problems, "; "), strings.Join(injectedVolumes(), ", "))
}
