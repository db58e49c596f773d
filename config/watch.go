package config

import (
	"context"
	"fmt"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
)

// Watcher holds the last good configuration of type T and reloads it when
// the files of its directory change. Create it with Watch.
type Watcher[T any] struct {
	mu     sync.RWMutex
	cur    T
	cancel context.CancelFunc
	done   chan struct{}
}

// Watch loads the configuration as Load does and then watches its
// directory (not the files, so editors that write a new file and rename it
// over the old one, and Kubernetes ConfigMap updates, are seen). Events for
// editor temporary files (*.swp, *~, .#*, 4913, other dot files) and
// permission changes are ignored; a burst of events is debounced
// (WithDebounce) into one reload, which re-reads every layer, secret files
// included. Secret files themselves are not watched.
//
// After each reload Watch calls onChange from a single goroutine, never
// concurrently: onChange(v, nil) with the new value when it differs from
// the current one or follows a failed reload, and onChange(current, err)
// when the new configuration is invalid (err is then usually an *Error),
// keeping the last good value. onChange must not call Close.
//
// If the first load fails Watch returns its error and watches nothing; the
// directory must exist. Watching stops when ctx is done or Close is called;
// the Watcher owns its fsnotify watcher and goroutine and releases both.
func Watch[T any](ctx context.Context, onChange func(T, error), opts ...Option) (*Watcher[T], error) {
	o := newOptions(opts)
	v, _, err := load[T](ctx, o)
	if err != nil {
		return nil, err
	}
	fsw, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, fmt.Errorf("config: watching %s: %w", o.dir, err)
	}
	if err := fsw.Add(o.dir); err != nil {
		_ = fsw.Close()
		return nil, fmt.Errorf("config: watching %s: %w", o.dir, err)
	}
	ctx, cancel := context.WithCancel(ctx)
	w := &Watcher[T]{cur: v, cancel: cancel, done: make(chan struct{})}
	go w.run(ctx, fsw, o, onChange)
	return w, nil
}

// Current returns the last good configuration. It is safe for concurrent
// use, also after Close.
func (w *Watcher[T]) Current() T {
	w.mu.RLock()
	defer w.mu.RUnlock()
	return w.cur
}

// Close stops watching and waits until the watching goroutine has returned:
// onChange is not called after Close returns. It may be called more than
// once and always returns nil.
func (w *Watcher[T]) Close() error {
	w.cancel()
	<-w.done
	return nil
}

func (w *Watcher[T]) run(ctx context.Context, fsw *fsnotify.Watcher, o options, onChange func(T, error)) {
	defer close(w.done)
	defer fsw.Close()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	failed := false
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-fsw.Events:
			if !ok {
				return
			}
			if !ignoreEvent(ev) {
				timer.Reset(o.debounce)
			}
		case err, ok := <-fsw.Errors:
			if !ok {
				return
			}
			onChange(w.Current(), fmt.Errorf("config: watching %s: %w", o.dir, err))
		case <-timer.C:
			v, _, err := load[T](ctx, o)
			switch {
			case ctx.Err() != nil:
				return
			case err != nil:
				failed = true
				onChange(w.Current(), err)
			case failed || !reflect.DeepEqual(v, w.Current()):
				failed = false
				w.mu.Lock()
				w.cur = v
				w.mu.Unlock()
				onChange(v, nil)
			}
		}
	}
}

// ignoreEvent reports whether an event cannot change the configuration:
// permission changes and editor temporary files. Kubernetes' "..data"
// symlink swap counts.
func ignoreEvent(ev fsnotify.Event) bool {
	name := filepath.Base(ev.Name)
	switch {
	case ev.Op == fsnotify.Chmod:
		return true
	case name == "..data":
		return false
	case strings.HasPrefix(name, "."), name == "4913", strings.HasSuffix(name, "~"):
		return true
	}
	switch filepath.Ext(name) {
	case ".swp", ".swx", ".swo", ".tmp", ".bak":
		return true
	}
	return false
}
