package service

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"
)

// tlsReloader serves the service.tls files and reads them again when they
// change. A handshake always sees one consistent certificate and client
// authority pool.
type tlsReloader struct {
	cfg  TLS
	log  *slog.Logger
	cur  atomic.Pointer[tlsFiles]
	w    *fsnotify.Watcher
	once sync.Once
	done chan struct{}
}

// tlsFiles is what the service.tls files held when last read.
type tlsFiles struct {
	cert tls.Certificate
	pool *x509.CertPool // nil without client_ca_file
}

// tlsDebounce lets a rotation that writes several files finish before they
// are read.
const tlsDebounce = 200 * time.Millisecond

func newTLSReloader(c TLS, log *slog.Logger) (*tlsReloader, error) {
	f, err := readTLSFiles(c)
	if err != nil {
		return nil, err
	}
	r := &tlsReloader{cfg: c, log: log, done: make(chan struct{})}
	r.cur.Store(f)
	if r.w, err = fsnotify.NewWatcher(); err != nil {
		return nil, fmt.Errorf("service.tls: watching the files: %w", err)
	}
	// Directories, not files: a Kubernetes secret or an atomic rename
	// replaces the file, which a watch on the old file would not see.
	dirs := map[string]bool{}
	for _, p := range []string{c.CertFile, c.KeyFile, c.ClientCAFile} {
		if p != "" {
			dirs[filepath.Dir(p)] = true
		}
	}
	for d := range dirs {
		if err := r.w.Add(d); err != nil {
			r.w.Close()
			return nil, fmt.Errorf("service.tls: watching %s: %w", d, err)
		}
	}
	go r.watch()
	return r, nil
}

func readTLSFiles(c TLS) (*tlsFiles, error) {
	cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("service.tls.cert_file, key_file: %w", err)
	}
	f := &tlsFiles{cert: cert}
	if c.ClientCAFile != "" {
		pem, err := os.ReadFile(c.ClientCAFile)
		if err != nil {
			return nil, fmt.Errorf("service.tls.client_ca_file: %w", err)
		}
		f.pool = x509.NewCertPool()
		if !f.pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("service.tls.client_ca_file: %s holds no PEM certificate", c.ClientCAFile)
		}
	}
	return f, nil
}

// watch reads the files again, a moment after the last change, until
// close.
func (r *tlsReloader) watch() {
	var timer <-chan time.Time
	for {
		select {
		case <-r.done:
			return
		case ev, ok := <-r.w.Events:
			if !ok {
				return
			}
			if ev.Has(fsnotify.Write) || ev.Has(fsnotify.Create) || ev.Has(fsnotify.Rename) || ev.Has(fsnotify.Remove) {
				timer = time.After(tlsDebounce)
			}
		case err, ok := <-r.w.Errors:
			if !ok {
				return
			}
			r.log.Warn("service.tls: watching the files failed", "error", err)
		case <-timer:
			timer = nil
			r.reload()
		}
	}
}

func (r *tlsReloader) reload() {
	f, err := readTLSFiles(r.cfg)
	if err != nil {
		r.log.Warn("service.tls: the changed files are not usable; serving the last good certificate", "error", err)
		return
	}
	r.cur.Store(f)
	notAfter := ""
	if f.cert.Leaf != nil {
		notAfter = f.cert.Leaf.NotAfter.UTC().Format(time.RFC3339)
	}
	r.log.Info("service.tls: certificate reloaded", "cert_file", r.cfg.CertFile, "not_after", notAfter)
}

// config returns the server's TLS configuration, which hands every
// handshake the files as last read.
func (r *tlsReloader) config() *tls.Config {
	auth := tls.NoClientCert
	switch {
	case r.cfg.RequireClientCert:
		auth = tls.RequireAndVerifyClientCert
	case r.cfg.ClientCAFile != "":
		auth = tls.VerifyClientCertIfGiven
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			f := r.cur.Load()
			return &tls.Config{
				MinVersion:   tls.VersionTLS12,
				Certificates: []tls.Certificate{f.cert},
				ClientCAs:    f.pool,
				ClientAuth:   auth,
				NextProtos:   []string{"h2"}, // gRPC requires HTTP/2 by ALPN
			}, nil
		},
	}
}

func (r *tlsReloader) close() {
	r.once.Do(func() {
		close(r.done)
		if err := r.w.Close(); err != nil && !errors.Is(err, os.ErrClosed) {
			r.log.Warn("service.tls: closing the watcher", "error", err)
		}
	})
}
