package config

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/pflag"
	"github.com/spf13/viper"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"podwall.io/podwall/api/sidecar"
)

// platformKeys are the sidecar keys the platform file sets: the floors, the fail mode and the DNS
// limits. The injector passes them as the sidecar's environment, which the pod's own file may only
// tighten (and may not set at all beyond workloadKeys).
var platformKeys = []string{"mode", "fail-mode", "log-allows", "log-allow-interval", "log-rate", "log-burst", "deny-memo-timeout",
	"dns-min-ttl", "dns-max-ttl", "dns-max-names", "dns-max-addrs"}

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
// else the injector's flag sidecar-<key> (InjectedPlatform), else the sidecar's own default. The key
// resources sets the podwall container's requests and limits (cpu, memory) the same way, resource by
// resource, over the injector's flags sidecar-{cpu,memory}-{request,limit}.
type Platform struct {
	Defaults   PlatformEntry
	Namespaces map[string]PlatformEntry
	// Workloads are keyed "namespace/Kind/name", the workload as the injector names it
	// ("demo/Deployment/client").
	Workloads map[string]PlatformEntry
}

// PlatformEntry is one entry of the platform file.
type PlatformEntry struct {
	// Settings are sidecar settings by key, which the injector passes as the sidecar's environment.
	Settings PlatformSettings
	// Resources are the podwall container's requests and limits (cpu and memory only).
	Resources corev1.ResourceRequirements
}

// PlatformSettings are sidecar settings by key, each value as the sidecar's environment spells it.
type PlatformSettings map[string]string

// ParsePlatform reads a platform file strictly: unknown fields, keys other than the platform's, values
// the sidecar would not take, resources other than cpu and memory or not positive quantities, and
// workload names that are not namespace/Kind/name are errors that name the entry and the key, all
// reported at once. So is a pod whose resources, resolved over base (the injector's sidecar-*
// resource flags), would ask for more than their limit. An empty file sets nothing.
func ParsePlatform(data []byte, base corev1.ResourceRequirements) (Platform, error) {
	var raw struct {
		Defaults   map[string]any            `json:"defaults"`
		Namespaces map[string]map[string]any `json:"namespaces"`
		Workloads  map[string]map[string]any `json:"workloads"`
	}
	if err := yaml.UnmarshalStrict(data, &raw); err != nil {
		return Platform{}, fmt.Errorf("%s: %w", sidecar.PlatformFile, err)
	}
	var errs []error
	entry := func(where string, in map[string]any) PlatformEntry {
		e, err := platformEntry(in)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", where, err))
		}
		return e
	}
	out := Platform{Defaults: entry("defaults", raw.Defaults)}
	for _, ns := range slices.Sorted(maps.Keys(raw.Namespaces)) {
		if !isDNSLabel(ns) {
			errs = append(errs, fmt.Errorf("namespaces: %q is not a namespace name", ns))
		}
		out.Namespaces = setEntry(out.Namespaces, ns, entry("namespaces."+ns, raw.Namespaces[ns]))
	}
	for _, w := range slices.Sorted(maps.Keys(raw.Workloads)) {
		ns, kindName, _ := strings.Cut(w, "/")
		kind, name, ok := strings.Cut(kindName, "/")
		if !isDNSLabel(ns) || !ok || kind == "" || !isDNSSubdomain(name) {
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

func setEntry(m map[string]PlatformEntry, k string, e PlatformEntry) map[string]PlatformEntry {
	if m == nil {
		m = map[string]PlatformEntry{}
	}
	m[k] = e
	return m
}

// For is the entry of a pod in namespace whose workload is "Kind/name" (empty for none): key by key
// and resource by resource, the workload's entry over the namespace's over the defaults.
func (p Platform) For(namespace, workload string) PlatformEntry {
	out := PlatformEntry{Settings: PlatformSettings{}}
	entries := []PlatformEntry{p.Defaults, p.Namespaces[namespace]}
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
func platformEntry(in map[string]any) (PlatformEntry, error) {
	var out PlatformEntry
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
	settings, err := platformSettings(in)
	if err != nil {
		errs = append(errs, err)
	}
	out.Settings = settings
	return out, errors.Join(errs...)
}

// platformSettings turns one entry into settings and checks them as the sidecar would: each key is
// parsed by the sidecar's own flag and validated by its own rules.
func platformSettings(in map[string]any) (PlatformSettings, error) {
	var p problems
	out := PlatformSettings{}
	flags := pflag.NewFlagSet("", pflag.ContinueOnError)
	sidecarLoader.flags(flags)
	for _, key := range slices.Sorted(maps.Keys(in)) {
		if !slices.Contains(platformKeys, key) {
			p.add(key, "not a platform key; the platform file sets %s and %s", strings.Join(platformKeys, ", "), resourcesKey)
			continue
		}
		value, ok := scalar(in[key])
		if !ok {
			p.add(key, "want a single value, got %v", in[key])
			continue
		}
		if err := flags.Set(key, value); err != nil {
			p.add(key, "%q: %v", value, err)
			continue
		}
		out[key] = value
	}
	if len(p) > 0 {
		return nil, errors.Join(p...)
	}
	// Decode the flags alone (no environment, no file), then check the keys the entry set.
	v := viper.New()
	if err := v.BindPFlags(flags); err != nil {
		return nil, err
	}
	var s Sidecar
	if err := v.UnmarshalExact(&s, strictDecoding); err != nil {
		return nil, keyedErrors(err)
	}
	s.resolve()
	s.checkTuning(&p)
	if len(p) > 0 {
		return nil, errors.Join(p...)
	}
	if _, ok := out["mode"]; ok {
		out["mode"] = string(s.Live.Mode) // as the sidecar spells it, in any letter case here
	}
	return out, nil
}

// checkPlatformDefaults checks the injector's platform defaults as platformSettings checks an entry,
// naming each key with the injector's flag (sidecar-<key>).
func checkPlatformDefaults(d map[string]string) error {
	var errs []error
	for _, key := range slices.Sorted(maps.Keys(d)) {
		if _, err := platformSettings(map[string]any{key: d[key]}); err != nil {
			errs = append(errs, fmt.Errorf("sidecar-%w", err))
		}
	}
	return errors.Join(errs...)
}

// scalar spells a YAML scalar as the environment would carry it.
func scalar(v any) (string, bool) {
	switch v := v.(type) {
	case string:
		return v, true
	case bool:
		return strconv.FormatBool(v), true
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64), true
	}
	return "", false
}
