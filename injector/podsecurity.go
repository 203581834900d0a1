package injector

import (
	"fmt"
	"slices"
)

// LabelPodSecurityEnforce is the namespace label whose level the API server's PodSecurity admission
// enforces. Its companion enforce-version label does not matter here: every version of baseline and
// restricted refuses an added NET_ADMIN.
const LabelPodSecurityEnforce = "pod-security.kubernetes.io/enforce"

// unmetLevels are the Pod Security levels an injected pod does not meet: the podwall container adds
// NET_ADMIN, which baseline does not allow (nor restricted, which also wants a non-root user), so only
// privileged admits it. The pod sysctl the injector sets, net.ipv4.ping_group_range, is one of
// baseline's safe sysctls and changes nothing here.
var unmetLevels = []string{"baseline", "restricted"}

// checkPodSecurity refuses to inject a pod into a namespace that enforces a level the injected pod
// cannot meet. PodSecurity admission would refuse it anyway, after the injector, with a message that
// names the podwall container's capability but neither podwall nor a way out; this one says both.
func checkPodSecurity(ns Namespace) error {
	if !slices.Contains(unmetLevels, ns.Enforce) {
		return nil
	}
	return fmt.Errorf("podwall: namespace %s enforces Pod Security level %q (label %s), which a pod with podwall's "+
		"sidecar cannot meet: the sidecar adds NET_ADMIN to program the pod's firewall, which only level privileged allows. "+
		"Either label the namespace %s=privileged (keeping pod-security.kubernetes.io/warn and pod-security.kubernetes.io/audit at %s, "+
		"which then warn about and audit what the pod breaks instead of refusing it), or remove its label podwall.io/inject=enabled so podwall leaves its pods alone; "+
		"a CNI-mode podwall, which would need no capability in the pod, is not available yet",
		ns.Name, ns.Enforce, LabelPodSecurityEnforce, LabelPodSecurityEnforce, ns.Enforce)
}
