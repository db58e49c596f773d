package pgoutbox_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/loamhq/loam/events/pgoutbox"
)

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  pgoutbox.Config
		want []string // each a problem's text, naming its key
	}{
		{name: "zero value", cfg: pgoutbox.Config{}},
		{name: "url", cfg: pgoutbox.Config{Enabled: true, URL: "postgres://app@db:5432/orders?sslmode=require"}},
		{name: "key=value", cfg: pgoutbox.Config{URL: "host=db user=app dbname=orders"}},
		{name: "names", cfg: pgoutbox.Config{URL: "postgres://db/x", Schema: "events_v1", Table: "_outbox2"}},
		{name: "enabled without url", cfg: pgoutbox.Config{Enabled: true}, want: []string{"events.outbox.url: required when events.outbox.enabled is true"}},
		{name: "password in url", cfg: pgoutbox.Config{URL: "postgres://app:hunter2@db/x"}, want: []string{"events.outbox.url: holds a password"}},
		{name: "password in query", cfg: pgoutbox.Config{URL: "postgresql://db/x?password=hunter2"}, want: []string{"events.outbox.url: holds a password"}},
		{name: "password in key=value", cfg: pgoutbox.Config{URL: "host=db password=hunter2"}, want: []string{"events.outbox.url: holds a password"}},
		{name: "not a url", cfg: pgoutbox.Config{URL: "db:5432"}, want: []string{"events.outbox.url: is not a postgres:// URL"}},
		{
			name: "everything wrong",
			cfg: pgoutbox.Config{
				URL: "postgres://db/x", Schema: "Public", Table: "has-dash", MaxConns: -1,
				Relay: pgoutbox.RelayConfig{
					BatchSize: -1, PollInterval: -time.Second, LockInterval: -time.Second, Timeout: -time.Second,
					InitialBackoff: time.Second, MaxBackoff: time.Millisecond, Retention: -time.Hour, StopTimeout: -time.Second,
				},
			},
			want: []string{
				`events.outbox.schema: "Public" is not a name`,
				`events.outbox.table: "has-dash" is not a name`,
				"events.outbox.max_conns: -1 is negative",
				"events.outbox.relay.batch_size: -1 is negative",
				"events.outbox.relay.poll_interval: -1s is negative",
				"events.outbox.relay.lock_interval: -1s is negative",
				"events.outbox.relay.timeout: -1s is negative",
				"events.outbox.relay.retention: -1h0m0s is negative",
				"events.outbox.relay.stop_timeout: -1s is negative",
				"events.outbox.relay.max_backoff: 1ms is below initial_backoff 1s",
			},
		},
		{name: "table too long", cfg: pgoutbox.Config{Table: strings.Repeat("t", 56)}, want: []string{"events.outbox.table: "}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, pgoutbox.ErrInvalidConfig) {
				t.Fatalf("Validate() = %v, want ErrInvalidConfig", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate() = %v\nwant a problem containing %q", err, w)
				}
			}
			if n := len(strings.Split(err.Error(), "\n")); n != len(tt.want) {
				t.Errorf("Validate() reported %d problems, want %d:\n%v", n, len(tt.want), err)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("Validate() = %v, which prints the password", err)
			}
		})
	}
}
