package config

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/pflag"
	"github.com/spf13/viper"

	"podwall.io/podwall/api/policy"
)

// PlatformOnly ends the error for a key that the workload's file may not set, or not to that value:
// it says where the setting belongs.
const PlatformOnly = "only the platform sets it: ConfigMap podwall-platform in podwall-system (ask your cluster admin)"

// workloadKeys are the keys a workload's config file may set. The live ones may only tighten what the
// platform set (tighten); queue-count tunes throughput and has no effect on what is allowed. Every
// other key belongs to the platform: fail-mode, the policy source and its CA, the pod's identity, the
// mesh and listen ports, the NFQUEUE numbers, deny-memo-timeout (which sizes a deny flood's share of
// the queue), the DNS limits (how long and how many resolved addresses rules by name allow) and
// resolv-conf (whose answers are believed) would each let a namespace user weaken or misdirect the
// firewall.
var workloadKeys = []string{"mode", "log-allows", "log-allow-interval", "log-rate", "log-burst", "queue-count"}

// FileState is what became of the workload's config file when it was last read.
type FileState struct {
	// State is none (no file, or an empty one), applied or refused.
	State policy.ConfigFileState
	// Refused says why the file was refused, naming each offending key; empty unless refused.
	Refused string
}

// applyWorkloadFile layers the workload's config file (data, read from path) on platform, the
// settings from flags, environment and defaults. The file may set only workloadKeys, and the live ones
// only to tighten platform's; anything else refuses the whole file, with every offending key named.
// nil data (no file) or a file without keys is no file: platform alone.
func applyWorkloadFile(platform Sidecar, path string, data []byte) (Sidecar, error) {
	platform.FileState = FileState{State: policy.ConfigNone}
	if data == nil {
		return platform, nil
	}
	v := viper.New()
	v.SetConfigType("yaml")
	if err := v.ReadConfig(bytes.NewReader(data)); err != nil {
		return Sidecar{}, fmt.Errorf("config file %s: %w", path, err)
	}
	if len(v.AllKeys()) == 0 {
		return platform, nil
	}
	if err := checkWorkloadKeys(v.AllKeys()); err != nil {
		return Sidecar{}, fmt.Errorf("config file %s: %w", path, err)
	}
	// Decode over a copy of platform: the keys the file leaves out keep the platform's values.
	out := platform
	if err := v.UnmarshalExact(&out, strictDecoding); err != nil {
		return Sidecar{}, fmt.Errorf("config file %s: %w", path, keyedErrors(err))
	}
	out.resolve()
	var p problems
	out.Live.check(&p)
	out.Queue.check(&p)
	out.Live.tightens(platform.Live, &p)
	if len(p) > 0 {
		return Sidecar{}, fmt.Errorf("config file %s: %w", path, errors.Join(p...))
	}
	out.FileState = FileState{State: policy.ConfigApplied}
	return out, nil
}

// checkWorkloadKeys refuses, naming each, the file's keys that are not the sidecar's and those that
// only the platform sets.
func checkWorkloadKeys(keys []string) error {
	flags := pflag.NewFlagSet("", pflag.ContinueOnError)
	sidecarLoader.flags(flags)
	var unknown, platform []string
	for _, key := range keys {
		switch {
		case slices.Contains(workloadKeys, key):
		case flags.Lookup(key) == nil && key != fileKey:
			unknown = append(unknown, strconv.Quote(key))
		default:
			platform = append(platform, strconv.Quote(key))
		}
	}
	var errs []error
	if len(unknown) > 0 {
		slices.Sort(unknown)
		errs = append(errs, fmt.Errorf("unknown key %s", strings.Join(unknown, ", ")))
	}
	if len(platform) > 0 {
		slices.Sort(platform)
		errs = append(errs, fmt.Errorf("key %s: %s", strings.Join(platform, ", "), PlatformOnly))
	}
	return errors.Join(errs...)
}

// tightens refuses each live setting of w (the workload file's result) that is looser than the
// platform's: a weaker mode floor, fewer allows logged, a longer allow interval, a lower log rate or
// burst.
func (w SidecarLive) tightens(platform SidecarLive, p *problems) {
	if platform.Mode != "" && w.Mode.Weaker(platform.Mode) {
		p.add("mode", "%s is weaker than the platform's %s; %s", w.Mode, platform.Mode, PlatformOnly)
	}
	if allowRank(w.Log.Allows) < allowRank(platform.Log.Allows) {
		p.add("log-allows", "%s logs fewer allows than the platform's %s; %s", w.Log.Allows, platform.Log.Allows, PlatformOnly)
	}
	if w.Log.AllowInterval > platform.Log.AllowInterval {
		p.add("log-allow-interval", "%v is longer than the platform's %v; %s", w.Log.AllowInterval, platform.Log.AllowInterval, PlatformOnly)
	}
	if w.Log.Rate < platform.Log.Rate {
		p.add("log-rate", "%v is under the platform's %v; %s", w.Log.Rate, platform.Log.Rate, PlatformOnly)
	}
	if w.Log.Burst < platform.Log.Burst {
		p.add("log-burst", "%d is under the platform's %d; %s", w.Log.Burst, platform.Log.Burst, PlatformOnly)
	}
}

// allowRank orders the allow logging choices by how much they log: none < first < all.
func allowRank(a AllowLog) int {
	return slices.Index([]AllowLog{LogNoAllows, LogFirstAllow, LogAllAllows}, a)
}
