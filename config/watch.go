package config

import (
	"bytes"
	"context"
	"fmt"
	"reflect"
	"slices"
	"strings"

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

// WatchSidecar delivers changes of the sidecar's config file to a running sidecar. running is the
// configuration the sidecar started with, loaded by LoadSidecar from the same args. After every change
// of running.File, all sources are read again (flags and environment still win over the file) and:
//
//   - a configuration that does not load or validate goes to onError, and nothing else happens: the
//     last good configuration stays in force;
//   - changed keys that are not live (see SidecarLive) go to onError as a *RestartRequiredError;
//   - if any live key changed, onChange receives the running configuration with the new live settings.
//
// Callbacks run one at a time on the watcher's goroutine. WatchSidecar returns once the watch is in
// place; the returned channel is closed after ctx is done and the watcher has stopped. If the file's
// directory does not exist, there is nothing to watch (no volume is mounted there) and only ctx ends it.
func WatchSidecar(ctx context.Context, args []string, running Sidecar, onChange func(Sidecar), onError func(error)) (<-chan struct{}, error) {
	r := &sidecarReload{args: args, current: running, onChange: onChange, onError: onError}
	return filewatch.Watch(ctx, running.File, r.reload, onError)
}

// sidecarReload holds what a reload compares against.
type sidecarReload struct {
	args     []string
	current  Sidecar
	onChange func(Sidecar)
	onError  func(error)
	// last is the file content of the previous reload, so that the several events of one kubelet
	// update, and a bad file, are handled and reported once.
	last []byte
	read bool
}

func (r *sidecarReload) reload() {
	next, data, err := loadSidecar(r.args)
	if r.read && bytes.Equal(data, r.last) {
		return
	}
	r.last, r.read = data, true
	if err != nil {
		r.onError(fmt.Errorf("reload %s, keeping the running config: %w", r.current.File, err))
		return
	}
	live := settingsByKey(SidecarLive{})
	var restart []string
	liveChanged := false
	for _, key := range changedKeys(settingsByKey(r.current), settingsByKey(next)) {
		if _, ok := live[key]; ok {
			liveChanged = true
		} else {
			restart = append(restart, key)
		}
	}
	if len(restart) > 0 {
		r.onError(&RestartRequiredError{Keys: restart})
	}
	if liveChanged {
		r.current.Live = next.Live
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
