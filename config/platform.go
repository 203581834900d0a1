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
)

// platformKeys are the sidecar keys the platform file sets: the floors, the fail mode and the DNS
// limits. The injector passes them as the sidecar's environment, which the pod's own file may only
// tighten (and may not set at all beyond workloadKeys).
var platformKeys = []string{"mode", "fail-mode", "log-allows", "log-allow-interval", "log-rate", "log-burst", "deny-memo-timeout",
	"dns-min-ttl", "dns-max-ttl", "dns-max-names", "dns-max-addrs"}

// PlatformSettings are sidecar settings by key, each value as the sidecar's environment spells it:
// those of one entry of the platform file, which package config/platform reads (the file's key
// resources, which needs Kubernetes' API types, is read there).
type PlatformSettings map[string]string

// ParsePlatformSettings turns the sidecar keys of one platform entry (all its keys but resources) into
// settings and checks them as the sidecar would: each key is parsed by the sidecar's own flag and
// validated by its own rules. Errors name the key, all at once.
func ParsePlatformSettings(in map[string]any) (PlatformSettings, error) {
	var p problems
	out := PlatformSettings{}
	flags := pflag.NewFlagSet("", pflag.ContinueOnError)
	sidecarLoader.flags(flags)
	for _, key := range slices.Sorted(maps.Keys(in)) {
		if !slices.Contains(platformKeys, key) {
			p.add(key, "not a platform key; the platform file sets %s and resources", strings.Join(platformKeys, ", "))
			continue
		}
		value, ok := Scalar(in[key])
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

// checkPlatformDefaults checks the injector's platform defaults as ParsePlatformSettings checks an entry,
// naming each key with the injector's flag (sidecar-<key>).
func checkPlatformDefaults(d map[string]string) error {
	var errs []error
	for _, key := range slices.Sorted(maps.Keys(d)) {
		if _, err := ParsePlatformSettings(map[string]any{key: d[key]}); err != nil {
			errs = append(errs, fmt.Errorf("sidecar-%w", err))
		}
	}
	return errors.Join(errs...)
}

// Scalar spells a YAML scalar (a string, a bool or a number, as sigs.k8s.io/yaml decodes them into
// any) as the environment would carry it; ok is false for anything else.
func Scalar(v any) (string, bool) {
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
