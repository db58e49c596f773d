package main

import (
	"bufio"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/loamhq/loam/authn"
	"github.com/loamhq/loam/config"
)

func TestProtoExport(t *testing.T) {
	dir := t.TempDir()
	var out, errs strings.Builder
	if code := run([]string{"proto", "export", dir}, &out, &errs); code != 0 {
		t.Fatalf("export = %d: %s", code, errs.String())
	}
	path := filepath.Join(dir, "loam", "options", "v1", "options.proto")
	body, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(body), "// Exported by `loam proto export`") || !strings.Contains(string(body), `option go_package = "github.com/loamhq/loam/proto/loam/options/v1;optionsv1"`) {
		t.Errorf("exported file does not start with the marker or lacks the Go package:\n%.300s", body)
	}
	if code := run([]string{"proto", "export", "--check", dir}, &out, &errs); code != 0 {
		t.Errorf("--check right after export = %d: %s", code, errs.String())
	}
	os.WriteFile(path, append(body, "// edited\n"...), 0o644)
	errs.Reset()
	if code := run([]string{"proto", "export", "--check", dir}, &out, &errs); code != 1 || !strings.Contains(errs.String(), path) {
		t.Errorf("--check of an edited file = %d %q, want 1 naming it", code, errs.String())
	}
}

func TestDevIssuer(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	pr, pw := io.Pipe()
	done := make(chan int, 1)
	go func() {
		done <- devIssuer(ctx, []string{"--addr", "127.0.0.1:0", "--audience", "trees-api",
			"--client", "worker:s3cret:planter", "--token", "alice:planter,admin"}, pw, io.Discard)
		pw.Close()
	}()
	lines := bufio.NewScanner(pr)
	var url, token string
	for lines.Scan() {
		line := lines.Text()
		if u, ok := strings.CutPrefix(line, "issuer "); ok {
			url, _, _ = strings.Cut(u, ",")
		}
		if strings.HasPrefix(line, "token for alice") && lines.Scan() {
			token = strings.TrimSpace(lines.Text())
		}
		if line == "serving until interrupted" {
			break
		}
	}
	go io.Copy(io.Discard, pr)
	a, err := authn.New(authn.Config{Issuers: []authn.IssuerConfig{{URL: url, Audiences: []string{"trees-api"}}}, RequireAccessTokenType: true})
	if err != nil {
		t.Fatal(err)
	}
	p, err := a.Verify(t.Context(), token)
	if err != nil || p.Subject() != "alice" || !p.Roles().Contains("admin") {
		t.Errorf("the printed token verifies as %v, %v; want alice with planter and admin", p, err)
	}
	creds, err := authn.NewClientCredentials(authn.ClientCredentialsConfig{TokenURL: url + "/token", ClientID: "worker", ClientSecret: config.NewSecret("s3cret")}, authn.WithoutTransportSecurity())
	if err != nil {
		t.Fatal(err)
	}
	md, err := creds.GetRequestMetadata(t.Context())
	if err != nil {
		t.Fatalf("client credentials grant = %v", err)
	}
	if p, err := a.Verify(t.Context(), strings.TrimPrefix(md["authorization"], "Bearer ")); err != nil || !p.Roles().Contains("planter") {
		t.Errorf("the client's token verifies as %v, %v; want the worker with planter", p, err)
	}
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("devIssuer returned %d after its context ended, want 0", code)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("devIssuer did not stop when its context ended")
	}
}
