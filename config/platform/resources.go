package platform

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"sigs.k8s.io/yaml"

	"podwall.io/podwall/config"
)

// resourcesKey is the key of a platform entry that sets the podwall container's resources rather
// than a sidecar setting:
//
//	resources: {requests: {cpu: 20m, memory: 48Mi}, limits: {memory: 256Mi}}
const resourcesKey = "resources"

// platformResourceNames are the resources a platform entry may set, in requests and in limits.
var platformResourceNames = []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory}

// platformResources reads an entry's resources strictly: only requests and limits of cpu and
// memory, each a positive Kubernetes quantity, no request above the entry's own limit.
func platformResources(in any) (corev1.ResourceRequirements, error) {
	data, err := yaml.Marshal(in)
	if err != nil {
		return corev1.ResourceRequirements{}, fmt.Errorf("%s: %w", resourcesKey, err)
	}
	var raw struct {
		Requests map[string]any `json:"requests"`
		Limits   map[string]any `json:"limits"`
	}
	if err := yaml.UnmarshalStrict(data, &raw); err != nil {
		return corev1.ResourceRequirements{}, fmt.Errorf("%s: want {requests: {cpu, memory}, limits: {cpu, memory}}: %w", resourcesKey, err)
	}
	var p []error
	list := func(what string, in map[string]any) corev1.ResourceList {
		var out corev1.ResourceList
		for _, name := range slices.Sorted(maps.Keys(in)) {
			key := resourcesKey + "." + what + "." + name
			if !slices.Contains(platformResourceNames, corev1.ResourceName(name)) {
				p = append(p, fmt.Errorf("%s: not a resource the platform sets; it sets cpu and memory", key))
				continue
			}
			value, ok := config.Scalar(in[name])
			if !ok {
				p = append(p, fmt.Errorf("%s: want a quantity (20m, 64Mi), got %v", key, in[name]))
				continue
			}
			q, err := resource.ParseQuantity(value)
			if err != nil || q.Sign() <= 0 {
				p = append(p, fmt.Errorf("%s: %q is not a positive Kubernetes quantity (20m, 0.5, 64Mi)", key, value))
				continue
			}
			if out == nil {
				out = corev1.ResourceList{}
			}
			out[corev1.ResourceName(name)] = q
		}
		return out
	}
	res := corev1.ResourceRequirements{Requests: list("requests", raw.Requests), Limits: list("limits", raw.Limits)}
	if len(p) > 0 {
		return corev1.ResourceRequirements{}, errors.Join(p...)
	}
	if err := checkRequestsWithinLimits(res); err != nil {
		return corev1.ResourceRequirements{}, fmt.Errorf("%s: %w", resourcesKey, err)
	}
	return res, nil
}

// MergeResources is base with over's requests and limits set over it, resource by resource.
func MergeResources(base, over corev1.ResourceRequirements) corev1.ResourceRequirements {
	merge := func(a, b corev1.ResourceList) corev1.ResourceList {
		if len(a)+len(b) == 0 {
			return nil
		}
		out := corev1.ResourceList{}
		maps.Copy(out, a)
		maps.Copy(out, b)
		return out
	}
	return corev1.ResourceRequirements{Requests: merge(base.Requests, over.Requests), Limits: merge(base.Limits, over.Limits)}
}

// checkRequestsWithinLimits refuses what the API server would refuse in a pod: a request above the
// limit of the same resource.
func checkRequestsWithinLimits(r corev1.ResourceRequirements) error {
	var p []error
	for _, name := range slices.Sorted(maps.Keys(r.Requests)) {
		request := r.Requests[name]
		if limit, ok := r.Limits[name]; ok && request.Cmp(limit) > 0 {
			p = append(p, fmt.Errorf("requests.%s: %s is above limits.%s %s", name, request.String(), name, limit.String()))
		}
	}
	return errors.Join(p...)
}

// checkResolvedResources checks every pod's resources as p resolves them over base (the injector's
// sidecar-* resource flags): the defaults, each namespace's entry and each workload's, with what they
// inherit. An entry that raises a request over an inherited limit must raise the limit too.
func (p Platform) checkResolvedResources(base corev1.ResourceRequirements) error {
	var errs []error
	check := func(where, namespace, workload string) {
		if err := checkRequestsWithinLimits(MergeResources(base, p.For(namespace, workload).Resources)); err != nil {
			errs = append(errs, fmt.Errorf("%s: %s, with what it inherits (the defaults, its namespace's entry, the injector's sidecar-* flags): %w; set both in the same entry", where, resourcesKey, err))
		}
	}
	check("defaults", "", "")
	for _, ns := range slices.Sorted(maps.Keys(p.Namespaces)) {
		check("namespaces."+ns, ns, "")
	}
	for _, w := range slices.Sorted(maps.Keys(p.Workloads)) {
		ns, kindName, _ := strings.Cut(w, "/")
		check("workloads."+w, ns, kindName)
	}
	return errors.Join(errs...)
}

// SidecarResources are the sidecar's requests and limits that the injector's flags set (an empty
// quantity is left unset). An error names each flag that is not a Kubernetes quantity, or a request
// above its limit, which the API server would refuse in every pod.
func SidecarResources(s config.InjectedSidecar) (corev1.ResourceRequirements, error) {
	var p []error
	res := corev1.ResourceRequirements{}
	for _, q := range []struct {
		list       *corev1.ResourceList
		name       corev1.ResourceName
		key, value string
	}{
		{&res.Requests, corev1.ResourceCPU, "sidecar-cpu-request", s.CPURequest},
		{&res.Requests, corev1.ResourceMemory, "sidecar-memory-request", s.MemoryRequest},
		{&res.Limits, corev1.ResourceCPU, "sidecar-cpu-limit", s.CPULimit},
		{&res.Limits, corev1.ResourceMemory, "sidecar-memory-limit", s.MemoryLimit},
	} {
		if q.value == "" {
			continue
		}
		v, err := resource.ParseQuantity(q.value)
		if err != nil {
			p = append(p, fmt.Errorf("%s: %q is not a Kubernetes quantity", q.key, q.value))
			continue
		}
		if *q.list == nil {
			*q.list = corev1.ResourceList{}
		}
		(*q.list)[q.name] = v
	}
	if len(p) == 0 {
		if err := checkRequestsWithinLimits(res); err != nil {
			return res, fmt.Errorf("sidecar resources (flags sidecar-{cpu,memory}-{request,limit}): %w", err)
		}
	}
	return res, errors.Join(p...)
}
