package config

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"sigs.k8s.io/yaml"
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
	var p problems
	list := func(what string, in map[string]any) corev1.ResourceList {
		var out corev1.ResourceList
		for _, name := range slices.Sorted(maps.Keys(in)) {
			key := resourcesKey + "." + what + "." + name
			if !slices.Contains(platformResourceNames, corev1.ResourceName(name)) {
				p.add(key, "not a resource the platform sets; it sets cpu and memory")
				continue
			}
			value, ok := scalar(in[name])
			if !ok {
				p.add(key, "want a quantity (20m, 64Mi), got %v", in[name])
				continue
			}
			q, err := resource.ParseQuantity(value)
			if err != nil || q.Sign() <= 0 {
				p.add(key, "%q is not a positive Kubernetes quantity (20m, 0.5, 64Mi)", value)
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
	var p problems
	for _, name := range slices.Sorted(maps.Keys(r.Requests)) {
		request := r.Requests[name]
		if limit, ok := r.Limits[name]; ok && request.Cmp(limit) > 0 {
			p.add("requests."+string(name), "%s is above limits.%s %s", request.String(), name, limit.String())
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
