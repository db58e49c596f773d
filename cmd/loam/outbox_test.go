package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestEventsOutboxSection checks that "loam config validate" checks the
// outbox part of the events section, naming its full keys, without printing
// a password.
func TestEventsOutboxSection(t *testing.T) {
	tests := []struct{ outbox, want string }{
		{"    relay:\n      batch_size: -1\n", "events.outbox.relay.batch_size: -1 is below the minimum 0"},
		{"    enabled: true\n    url: postgres://app:hunter2@db/orders\n", "events.outbox.url: holds a password"},
		{"    enabled: true\n", "events.outbox.url: required"},
	}
	for _, tt := range tests {
		dir := t.TempDir()
		yaml := "service:\n  name: x\nevents:\n  outbox:\n" + tt.outbox
		if err := os.WriteFile(filepath.Join(dir, "base.yaml"), []byte(yaml), 0o644); err != nil {
			t.Fatal(err)
		}
		var stdout, stderr bytes.Buffer
		if code := run([]string{"config", "validate", dir}, &stdout, &stderr); code != 1 {
			t.Errorf("validate of\n%s= %d, want 1; stdout:\n%s", yaml, code, stdout.String())
		}
		if !strings.Contains(stdout.String(), tt.want) || strings.Contains(stdout.String(), "hunter2") {
			t.Errorf("validate output:\n%s\nwant a problem containing %q, and no password", stdout.String(), tt.want)
		}
	}
}
