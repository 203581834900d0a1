// Package platform reads the platform's ConfigMap (sidecar.PlatformConfigMap in the injector's
// namespace, key sidecar.PlatformFile), which a cluster admin writes, and the podwall container's
// resources: the injector's part of podwall's configuration that needs Kubernetes' API types. It is
// apart from package config, which the sidecar links, so that the sidecar does not carry them;
// package config still checks each entry's sidecar keys (config.ParsePlatformSettings).
package platform

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"podwall.io/podwall/api/sidecar"
	"podwall.io/podwall/config"
)

// Platform is the platform file (key sidecar.PlatformFile of the ConfigMap sidecar.PlatformConfigMap in
// the injector's namespace), which a cluster admin writes:
//
//	defaults: {mode: Monitor, fail-mode: closed, log-rate: 100}
//	namespaces:
//	  demo: {mode: Protect, resources: {requests: {cpu: 20m}}}
//	workloads:
//	  demo/Deployment/client: {fail-mode: open, resources: {limits: {memory: 256Mi}}}
//
// A pod's settings are, key by key, its workload's entry, else its namespace's, else the defaults,
// else the injector's flag sidecar-<key> (config.InjectedPlatform), else the sidecar's own default.
// The key resources sets the podwall container's requests and limits (cpu, memory) the same way,
// resource by resource, over the injector's flags sidecar-{cpu,memory}-{request,limit}.
type Platform struct {
	Defaults   Entry
	Namespaces map[string]Entry
	// Workloads are keyed "namespace/Kind/name", the workload as the injector names it
	// ("demo/Deployment/client").
	Workloads map[string]Entry
}

// Entry is one entry of the platform file.
type Entry struct {
	// Settings are sidecar settings by key, which the injector passes as the sidecar's environment.
	Settings config.PlatformSettings
	// Resources are the podwall container's requests and limits (cpu and memory only).
	Resources corev1.ResourceRequirements
}

// Parse reads a platform file strictly: unknown fields, keys other than the platform's, values
// the sidecar would not take, resources other than cpu and memory or not positive quantities, and
// workload names that are not namespace/Kind/name are errors that name the entry and the key, all
// reported at once. So is a pod whose resources, resolved over base (the injector's sidecar-*
// resource flags), would ask for more than their limit. An empty file sets nothing.
func Parse(data []byte, base corev1.ResourceRequirements) (Platform, error) {
	var raw struct {
		Defaults   map[string]any            `json:"defaults"`
		Namespaces map[string]map[string]any `json:"namespaces"`
		Workloads  map[string]map[string]any `json:"workloads"`
	}
	if err := yaml.UnmarshalStrict(data, &raw); err != nil {
		return Platform{}, fmt.Errorf("%s: %w", sidecar.PlatformFile, err)
	}
	var errs []error
	entry := func(where string, in map[string]any) Entry {
		e, err := platformEntry(in)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", where, err))
		}
		return e
	}
	out := Platform{Defaults: entry("defaults", raw.Defaults)}
	for _, ns := range slices.Sorted(maps.Keys(raw.Namespaces)) {
		if !config.IsDNSLabel(ns) {
			errs = append(errs, fmt.Errorf("namespaces: %q is not a namespace name", ns))
		}
		out.Namespaces = setEntry(out.Namespaces, ns, entry("namespaces."+ns, raw.Namespaces[ns]))
	}
	for _, w := range slices.Sorted(maps.Keys(raw.Workloads)) {
		ns, kindName, _ := strings.Cut(w, "/")
		kind, name, ok := strings.Cut(kindName, "/")
		if !config.IsDNSLabel(ns) || !ok || kind == "" || !config.IsDNSSubdomain(name) {
			errs = append(errs, fmt.Errorf("workloads: %q is not namespace/Kind/name", w))
		}
		out.Workloads = setEntry(out.Workloads, w, entry("workloads."+w, raw.Workloads[w]))
	}
	if len(errs) == 0 {
		if err := out.checkResolvedResources(base); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return Platform{}, fmt.Errorf("invalid %s: %w", sidecar.PlatformFile, errors.Join(errs...))
	}
	return out, nil
}

func setEntry(m map[string]Entry, k string, e Entry) map[string]Entry {
	if m == nil {
		m = map[string]Entry{}
	}
	m[k] = e
	return m
}

// For is the entry of a pod in namespace whose workload is "Kind/name" (empty for none): key by key
// and resource by resource, the workload's entry over the namespace's over the defaults.
func (p Platform) For(namespace, workload string) Entry {
	out := Entry{Settings: config.PlatformSettings{}}
	entries := []Entry{p.Defaults, p.Namespaces[namespace]}
	if workload != "" {
		entries = append(entries, p.Workloads[namespace+"/"+workload])
	}
	for _, e := range entries {
		maps.Copy(out.Settings, e.Settings)
		out.Resources = MergeResources(out.Resources, e.Resources)
	}
	return out
}

// platformEntry reads one entry: its resources, and its other keys as sidecar settings.
func platformEntry(in map[string]any) (Entry, error) {
	var out Entry
	var errs []error
	if r, ok := in[resourcesKey]; ok {
		res, err := platformResources(r)
		if err != nil {
			errs = append(errs, err)
		}
		out.Resources = res
		in = maps.Clone(in)
		delete(in, resourcesKey)
	}
	settings, err := config.ParsePlatformSettings(in)
	if err != nil {
		errs = append(errs, err)
	}
	out.Settings = settings
	return out, errors.Join(errs...)
}
