// Package filewatch tells a binary when a file it reads may have changed: its configuration, its
// policy. It is the one way podwall binaries watch files. It follows every way a mounted file is
// replaced — the kubelet's symlink swap of a ConfigMap or Secret volume, an editor or tool renaming a
// new file over the old one, a write in place — by watching the file's directory with inotify
// (fsnotify), and leaves reading and judging the file to the caller.
package filewatch

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"

	"github.com/fsnotify/fsnotify"
)

// Watch calls changed once at the start and again after every event that may have replaced the file
// at path: an event on the file's own name or on the kubelet's ..data symlink beside it. It watches the
// directory because the kubelet swaps ..data (and editors rename a new file over the old) and a watch
// on the file would follow the replaced inode. changed may be called for a file that did not change
// (one update makes several events): callers compare the content with what they last saw. Watch
// errors go to onError.
//
// Callbacks run one at a time on the watcher's goroutine. Watch returns once the watch is in place; the
// returned channel is closed after ctx is done and the watcher has stopped. If the file's directory
// does not exist, there is nothing to watch (no volume is mounted there) and only ctx ends it.
func Watch(ctx context.Context, path string, changed func(), onError func(error)) (<-chan struct{}, error) {
	done := make(chan struct{})
	dir := filepath.Dir(path)
	if _, err := os.Stat(dir); path == "" || errors.Is(err, fs.ErrNotExist) {
		go func() {
			<-ctx.Done()
			close(done)
		}()
		return done, nil
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, fmt.Errorf("watch %s: %w", dir, err)
	}
	if err := w.Add(dir); err != nil {
		w.Close()
		return nil, fmt.Errorf("watch %s: %w", dir, err)
	}
	names := []string{filepath.Base(path), "..data"}
	go func() {
		defer close(done)
		defer w.Close()
		changed()
		for {
			select {
			case <-ctx.Done():
				return
			case ev, ok := <-w.Events:
				if !ok {
					return
				}
				if slices.Contains(names, filepath.Base(ev.Name)) {
					changed()
				}
			case err, ok := <-w.Errors:
				if !ok {
					return
				}
				// An overflow loses events: look at the file anyway.
				onError(fmt.Errorf("watch %s: %w", dir, err))
				changed()
			}
		}
	}()
	return done, nil
}
