package config

import (
	"context"
	"errors"
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
// A file the last good value was read from (the base file or the
// environment's) that is deleted, or emptied so that it sets no key, is a
// rejected change too, never a silent fall back to the other layers: err
// is an *Error whose file-level problem names the file, and the last good
// value stays in use until the file sets keys again. A service that means
// to run without the file restarts. The warnings of a reload that is
// delivered go to the logger of WithLogger, as Load's do at start-up.
//
// If the first load fails Watch returns its error and watches nothing; the
// directory must exist. Watching stops when ctx is done or Close is called;
// the Watcher owns its fsnotify watcher and goroutine and releases both.
func Watch[T any](ctx context.Context, onChange func(T, error), opts ...Option) (*Watcher[T], error) {
	o := newOptions(opts)
	v, st, err := load[T](ctx, o)
	st.logWarnings(ctx, o.logger)
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
	go w.run(ctx, fsw, o, st.files, onChange)
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

// run reloads on file events; files are the file layers of the current
// value.
func (w *Watcher[T]) run(ctx context.Context, fsw *fsnotify.Watcher, o options, files map[string]fileLayer, onChange func(T, error)) {
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
			v, st, err := load[T](ctx, o)
			if ctx.Err() != nil {
				return
			}
			err, gone := vanished(files, st, err)
			changed := err == nil && (failed || !reflect.DeepEqual(v, w.Current()))
			if !gone && (err != nil || changed) {
				st.logWarnings(ctx, o.logger)
			}
			if err == nil {
				files = st.files
			}
			switch {
			case err != nil:
				failed = true
				onChange(w.Current(), err)
			case changed:
				failed = false
				w.mu.Lock()
				w.cur = v
				w.mu.Unlock()
				onChange(v, nil)
			}
		}
	}
}

// vanished adds to err, the result of a reload whose state is st, a
// file-level problem for each file of the current value (files) that is
// gone or sets no key any more; gone reports whether there was one.
func vanished(files map[string]fileLayer, st *state, err error) (_ error, gone bool) {
	if st == nil {
		return err, false // the reload failed before reading the files
	}
	var fields []FieldError
	for _, stem := range []string{"base", st.env} {
		was, now := files[stem], st.files[stem]
		if was.path == "" || was.empty {
			continue
		}
		what := "deleted"
		switch {
		case now.path == "":
		case now.empty:
			what = "emptied"
		default:
			continue
		}
		fields = append(fields, FieldError{Source: Source{Kind: SourceFile, Name: was.path},
			Msg: "was " + what + " while watching; the last good configuration stays in use until the file sets keys again (restart to run without it)"})
	}
	if len(fields) == 0 {
		return err, false
	}
	if cerr := (*Error)(nil); errors.As(err, &cerr) {
		cerr.Fields = append(fields, cerr.Fields...)
		return cerr, true
	}
	return &Error{Environment: st.env, Fields: fields}, true
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
