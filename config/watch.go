package config

import (
	"bytes"
	"context"
	"fmt"
	"reflect"
	"slices"
	"strings"

	"podwall.io/podwall/api/policy"
	"podwall.io/podwall/internal/filewatch"
)

// RestartRequiredError reports keys whose new value in the file takes effect only at the next start.
// It is not a failure: the running sidecar keeps these keys' old values and applies the rest.
type RestartRequiredError struct {
	// Keys are the changed keys, sorted.
	Keys []string
}

func (e *RestartRequiredError) Error() string {
	return fmt.Sprintf("config keys %s changed; they take effect after a restart", strings.Join(e.Keys, ", "))
}

// WatchSidecar delivers changes of the workload's config file to a running sidecar. running is the
// configuration the sidecar started with (LoadSidecar). The platform layer (flags, environment) does
// not change while the sidecar runs; after every change of running.File, the file is read again and
// layered on it (applyWorkloadFile), and:
//
//   - a file that is refused goes to onChange as the configuration in force with FileState refused:
//     the last good settings stay;
//   - a changed queue-count (not live, see SidecarLive) goes to onError as a *RestartRequiredError;
//   - if any live key or the file's state changed, onChange receives the running configuration with
//     the new live settings and state.
//
// Callbacks run one at a time on the watcher's goroutine. WatchSidecar returns once the watch is in
// place; the returned channel is closed after ctx is done and the watcher has stopped. If the file's
// directory does not exist, there is nothing to watch (no volume is mounted there) and only ctx ends it.
func WatchSidecar(ctx context.Context, running Sidecar, onChange func(Sidecar), onError func(error)) (<-chan struct{}, error) {
	platform := running
	platform.Live = running.Platform
	r := &sidecarReload{platform: platform, current: running, onChange: onChange, onError: onError}
	return filewatch.Watch(ctx, running.File, r.reload, onError)
}

// sidecarReload holds what a reload compares against.
type sidecarReload struct {
	platform Sidecar
	current  Sidecar
	onChange func(Sidecar)
	onError  func(error)
	// last is the file content of the previous reload, so that the several events of one kubelet
	// update, and a bad file, are handled and reported once.
	last []byte
	read bool
}

func (r *sidecarReload) reload() {
	data, err := readConfigFile(r.current.File)
	if r.read && err == nil && bytes.Equal(data, r.last) {
		return
	}
	r.last, r.read = data, err == nil
	var next Sidecar
	if err == nil {
		next, err = applyWorkloadFile(r.platform, r.current.File, data)
	}
	if err != nil {
		r.current.FileState = FileState{State: policy.ConfigRefused,
			Refused: fmt.Sprintf("%v; the running configuration stays in force", err)}
		r.onChange(r.current)
		return
	}
	live := settingsByKey(SidecarLive{})
	var restart []string
	changed := next.FileState != r.current.FileState
	for _, key := range changedKeys(settingsByKey(r.current), settingsByKey(next)) {
		if _, ok := live[key]; ok {
			changed = true
		} else {
			restart = append(restart, key)
		}
	}
	if len(restart) > 0 {
		r.onError(&RestartRequiredError{Keys: restart})
	}
	if changed {
		r.current.Live, r.current.FileState = next.Live, next.FileState
		r.onChange(r.current)
	}
}

// changedKeys lists, sorted, the keys whose values differ between two settings maps of one struct;
// an empty list equals no list.
func changedKeys(a, b map[string]any) []string {
	var keys []string
	for k, va := range a {
		vb := b[k]
		if reflect.DeepEqual(va, vb) || isEmptyList(va) && isEmptyList(vb) {
			continue
		}
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func isEmptyList(x any) bool {
	v := reflect.ValueOf(x)
	return v.Kind() == reflect.Slice && v.Len() == 0
}
