package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/types/descriptorpb"

	"github.com/loamhq/loam/config"
	"github.com/loamhq/loam/service"
)

// The service roots of testdata/governance: ready passes every check of
// loam doctor, poor fails every one.
const (
	ready = "testdata/governance/ready"
	poor  = "testdata/governance/poor"
)

// golden compares got with testdata/golden/<name>.golden, or rewrites the
// file with -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", "golden", name+".golden")
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if diff := cmp.Diff(string(want), string(got)); diff != "" {
		t.Errorf("%s mismatch (-want +got):\n%s", path, diff)
	}
}

// runCLI runs the command line and returns its exit code and output.
func runCLI(args ...string) (code int, stdout, stderr string) {
	var out, errs bytes.Buffer
	code = run(args, &out, &errs)
	return code, out.String(), errs.String()
}

// TestCatalogGolden writes the catalog of each service root's contracts
// and compares both files with testdata/golden. The poor contracts'
// problems are listed in the catalog and printed as warnings, without
// failing the command.
func TestCatalogGolden(t *testing.T) {
	tests := []struct {
		name         string
		dir          string
		wantWarnings int
	}{
		{name: "ready", dir: ready + "/proto", wantWarnings: 1},
		{name: "poor", dir: poor + "/proto", wantWarnings: 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base := filepath.Join(t.TempDir(), "catalog")
			code, stdout, stderr := runCLI("catalog", "--out", base, tt.dir)
			if code != 0 {
				t.Fatalf("loam catalog = %d, want 0; stderr:\n%s", code, stderr)
			}
			if want := "wrote " + base + ".md\nwrote " + base + ".json\n"; stdout != want {
				t.Errorf("loam catalog stdout = %q, want %q", stdout, want)
			}
			if got := strings.Count(stderr, "loam catalog: warning: "); got != tt.wantWarnings {
				t.Errorf("loam catalog printed %d warnings, want %d:\n%s", got, tt.wantWarnings, stderr)
			}
			for _, ext := range []string{"md", "json"} {
				got, err := os.ReadFile(base + "." + ext)
				if err != nil {
					t.Fatal(err)
				}
				golden(t, "catalog_"+tt.name+"_"+ext, got)
			}
		})
	}
}

// TestCatalogCheck: --check passes on a catalog just written and fails,
// naming the stale files and the command that rewrites them, on one edited
// or missing.
func TestCatalogCheck(t *testing.T) {
	base := filepath.Join(t.TempDir(), "docs", "catalog")
	dir := ready + "/proto"
	if code, _, stderr := runCLI("catalog", "--out", base, dir); code != 0 {
		t.Fatalf("loam catalog = %d: %s", code, stderr)
	}
	if code, stdout, stderr := runCLI("catalog", "--check", "--out", base, dir); code != 0 || !strings.Contains(stdout, "fresh") {
		t.Errorf("--check of a fresh catalog = %d %q %q, want 0 and fresh", code, stdout, stderr)
	}
	if err := os.WriteFile(base+".md", []byte("edited by hand\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	want := "loam catalog --check: " + base + ".md is not what the contracts give; run: loam catalog --out " + base + " " + dir + "\n"
	if code, _, stderr := runCLI("catalog", dir, "--check", "--out", base); code != 1 || !strings.HasSuffix(stderr, want) {
		t.Errorf("--check of an edited catalog = %d %q, want 1 and %q", code, stderr, want)
	}
	if err := os.Remove(base + ".json"); err != nil {
		t.Fatal(err)
	}
	if code, _, stderr := runCLI("catalog", "--check", "--out", base, dir); code != 1 || !strings.Contains(stderr, base+".md and "+base+".json are not") {
		t.Errorf("--check with a file missing = %d %q, want 1 naming both", code, stderr)
	}
}

// image builds what `buf build -o` writes from the ready contracts: every
// file with its imports, and buf's extension (field 8042, is_import in its
// field 1) on each, marking the files imported as imports.
func image(t *testing.T, imports ...string) string {
	t.Helper()
	ct, err := loadContracts(t.Context(), ready+"/proto", "")
	if err != nil {
		t.Fatal(err)
	}
	set := &descriptorpb.FileDescriptorSet{}
	for _, f := range ct.files {
		fdp := protodesc.ToFileDescriptorProto(f)
		isImport := !ct.own[f.Path()] || slices.Contains(imports, f.Path())
		ext := protowire.AppendTag(nil, 1, protowire.VarintType)
		ext = protowire.AppendVarint(ext, protowire.EncodeBool(isImport))
		unknown := protowire.AppendTag(nil, 8042, protowire.BytesType)
		fdp.ProtoReflect().SetUnknown(protowire.AppendBytes(unknown, ext))
		set.File = append(set.File, fdp)
	}
	b, err := proto.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "image.binpb")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestCatalogImage: a buf image gives the catalog that its directory
// gives, and the files buf marks as imports lend their events but not
// their services.
func TestCatalogImage(t *testing.T) {
	t.Run("same as the directory", func(t *testing.T) {
		base := filepath.Join(t.TempDir(), "catalog")
		if code, _, stderr := runCLI("catalog", "--image", image(t), "--out", base); code != 0 {
			t.Fatalf("loam catalog --image = %d: %s", code, stderr)
		}
		got, err := os.ReadFile(base + ".json")
		if err != nil {
			t.Fatal(err)
		}
		golden(t, "catalog_ready_json", got)
	})
	t.Run("imports", func(t *testing.T) {
		base := filepath.Join(t.TempDir(), "catalog")
		if code, _, stderr := runCLI("catalog", "--image", image(t, "orders/v1/orders.proto"), "--out", base); code != 0 {
			t.Fatalf("loam catalog --image = %d: %s", code, stderr)
		}
		var cat catalog
		b, _ := os.ReadFile(base + ".json")
		if err := json.Unmarshal(b, &cat); err != nil {
			t.Fatal(err)
		}
		var services []string
		for _, s := range cat.Services {
			services = append(services, s.Name)
		}
		if want := []string{"billing.v1.BillingService", "shipping.v1.ShippingService"}; !slices.Equal(services, want) {
			t.Errorf("services = %q, want %q", services, want)
		}
		i := slices.IndexFunc(cat.Events, func(e catalogEvent) bool { return e.Type == "org.example.orders.v1.order_placed" })
		if i < 0 || cat.Events[i].Message != "orders.v1.OrderPlaced" || len(cat.Events[i].Publishers) != 0 {
			t.Errorf("events = %+v, want order_placed declared by the import and published by no service here", cat.Events)
		}
	})
	t.Run("not an image", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "image.binpb")
		os.WriteFile(path, []byte("not protobuf"), 0o644)
		if code, _, stderr := runCLI("catalog", "--image", path); code != 1 || !strings.Contains(stderr, "not a binary buf image") {
			t.Errorf("loam catalog --image of garbage = %d %q, want 1 and a clear error", code, stderr)
		}
	})
}

// TestCatalogFromBufImage: the image buf builds of the examples' contracts
// gives the catalog committed beside them. It builds buf, so it runs only
// with LOAM_TEST_TOOLS=1.
func TestCatalogFromBufImage(t *testing.T) {
	if os.Getenv("LOAM_TEST_TOOLS") != "1" {
		t.Skip("builds buf; set LOAM_TEST_TOOLS=1 to run it")
	}
	img := filepath.Join(t.TempDir(), "image.binpb")
	cmd := exec.Command("scripts/buf", "build", "examples/proto", "-o", img)
	cmd.Dir = filepath.Join("..", "..")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("buf build: %v\n%s", err, out)
	}
	set, err := readImage(img)
	if err != nil {
		t.Fatal(err)
	}
	imports := map[string]bool{}
	for _, f := range set.GetFile() {
		imports[f.GetName()] = bufImport(f)
	}
	if want := map[string]bool{
		"captures/v1/captures.proto": false, "impact/v1/impact.proto": false, "loam/options/v1/options.proto": true,
		"google/protobuf/descriptor.proto": true, "google/protobuf/timestamp.proto": true,
	}; !cmp.Equal(imports, want) {
		t.Errorf("files of buf's image, imports marked = %v, want %v", imports, want)
	}
	base := filepath.Join(t.TempDir(), "catalog")
	if code, _, stderr := runCLI("catalog", "--image", img, "--out", base); code != 0 {
		t.Fatalf("loam catalog --image = %d: %s", code, stderr)
	}
	for _, ext := range []string{".md", ".json"} {
		got, _ := os.ReadFile(base + ext)
		want, err := os.ReadFile(filepath.Join("..", "..", "examples", "catalog"+ext))
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(string(want), string(got)); diff != "" {
			t.Errorf("catalog%s from buf's image differs from the committed one (-want +got):\n%s", ext, diff)
		}
	}
}

// TestDoctorGolden scores the service roots of testdata/governance and
// compares the scorecards with testdata/golden.
func TestDoctorGolden(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		wantCode int
	}{
		{name: "doctor_ready", args: []string{ready}},
		{name: "doctor_ready_json", args: []string{"--json", ready}},
		{name: "doctor_poor", args: []string{poor}, wantCode: 1},
		{name: "doctor_poor_json", args: []string{poor, "--json"}, wantCode: 1},
		{name: "doctor_short_grace", args: []string{"--grace", "25s", "--min-score", "100", ready}, wantCode: 1},
		{name: "doctor_split", args: []string{"--proto", ready + "/proto", "--config", poor + "/config", "--min-score", "0"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := runCLI(append([]string{"doctor"}, tt.args...)...)
			if code != tt.wantCode {
				t.Errorf("loam doctor %q = %d, want %d; stderr:\n%s", tt.args, code, tt.wantCode, stderr)
			}
			golden(t, tt.name, []byte(stdout))
		})
	}
}

// TestDoctorErrors: what keeps loam doctor from scoring is an error that
// names it, with exit status 1, or 2 for a bad command line.
func TestDoctorErrors(t *testing.T) {
	empty := t.TempDir()
	tests := []struct {
		name     string
		args     []string
		wantCode int
		want     string
	}{
		{"no contracts", []string{"--proto", empty, ready}, 1, "no .proto file"},
		{"missing contracts", []string{"testdata/nope"}, 1, "testdata/nope/proto: file does not exist"},
		{"contracts that do not compile", []string{"--proto", "testdata/governance/broken/proto", ready}, 1, `broken/v1/broken.proto:7:3: field broken.v1.Broken.missing: unknown type Missing`},
		{"missing configuration", []string{"--config", "testdata/nope", ready}, 1, "testdata/nope"},
		{"two directories", []string{"a", "b"}, 2, "at most one directory"},
		{"proto and image", []string{"--proto", "a", "--image", "b"}, 2, "not both"},
		{"score out of range", []string{"--min-score", "101", ready}, 2, "not between 0 and 100"},
		{"no grace", []string{"--grace", "0s", ready}, 2, "not above zero"},
		{"unknown flag", []string{"--fast"}, 2, "flag provided but not defined"},
		{"help", []string{"-h"}, 0, "Usage:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, stderr := runCLI(append([]string{"doctor"}, tt.args...)...)
			if code != tt.wantCode || !strings.Contains(stderr, tt.want) {
				t.Errorf("loam doctor %q = %d %q, want %d and %q", tt.args, code, stderr, tt.wantCode, tt.want)
			}
		})
	}
}

// TestDoctorSecrets: a secret set in a file counts as written inline
// unless it is a "file:" reference, for Loam's Secret keys and for keys of
// application sections that look secret alike.
func TestDoctorSecrets(t *testing.T) {
	file := config.Source{Kind: config.SourceFile, Name: "config/production.yaml", Line: 4}
	env := config.Source{Kind: config.SourceEnv, Name: "SHOP_DB__PASSWORD"}
	tests := []struct {
		name       string
		entries    []entry
		wantPassed bool
		want       string
	}{
		{name: "none", wantPassed: true, want: "the files set no secret"},
		{name: "Loam secret mounted", entries: []entry{{Entry: config.Entry{Key: "cache.redis.password", Value: "[redacted]", Source: file, SecretFile: "/run/secrets/redis"}, compare: "[redacted]"}},
			wantPassed: true, want: "read from mounted files: cache.redis.password"},
		{name: "Loam secret inline", entries: []entry{{Entry: config.Entry{Key: "cache.redis.password", Value: "[redacted]", Source: file}, compare: "[redacted]"}},
			want: "written inline: cache.redis.password (file config/production.yaml:4)"},
		{name: "application secret mounted", entries: []entry{{Entry: config.Entry{Key: "db.password", Value: "[redacted]", Source: file}, compare: "file:/run/secrets/db"}},
			wantPassed: true, want: "read from mounted files: db.password"},
		{name: "application secret inline", entries: []entry{{Entry: config.Entry{Key: "db.password", Value: "[redacted]", Source: file}, compare: "hunter2"}},
			want: "written inline: db.password"},
		{name: "from the environment", entries: []entry{{Entry: config.Entry{Key: "db.password", Value: "[redacted]", Source: env}, compare: "hunter2"}},
			wantPassed: true, want: "the files set no secret"},
		{name: "not a secret", entries: []entry{{Entry: config.Entry{Key: "db.url", Value: "postgres://db", Source: file}, compare: "postgres://db"}},
			wantPassed: true, want: "the files set no secret"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := checkSecrets(tt.entries)
			if got.Passed != tt.wantPassed || !strings.Contains(got.Reason, tt.want) {
				t.Errorf("checkSecrets() = %v %q, want %v and %q", got.Passed, got.Reason, tt.wantPassed, tt.want)
			}
		})
	}
}

// TestDoctorShutdown: drain and shutdown fit the grace exactly, and not a
// second more; zero means the documented defaults.
func TestDoctorShutdown(t *testing.T) {
	tests := []struct {
		drain, shutdown, grace time.Duration
		want                   bool
	}{
		{5 * time.Second, 20 * time.Second, 30 * time.Second, true},
		{5 * time.Second, 21 * time.Second, 30 * time.Second, false},
		{0, 0, 20 * time.Second, true}, // 0 + 15s default + 5s
		{0, 0, 19 * time.Second, false},
	}
	for _, tt := range tests {
		cfg := &service.Config{Service: service.Settings{DrainDelay: tt.drain, ShutdownTimeout: tt.shutdown}}
		if got, reason := checkShutdown(cfg, tt.grace); got != tt.want {
			t.Errorf("checkShutdown(drain %v, shutdown %v, grace %v) = %v (%s), want %v", tt.drain, tt.shutdown, tt.grace, got, reason, tt.want)
		}
	}
}

// TestReadsAndJustified: which public methods need a justification, and
// what counts as one, on the contracts of testdata/governance.
func TestReadsAndJustified(t *testing.T) {
	ct, err := loadContracts(t.Context(), ready+"/proto", "")
	if err != nil {
		t.Fatal(err)
	}
	got := map[string][2]bool{}
	for _, sd := range ct.services() {
		for i := range sd.Methods().Len() {
			md := sd.Methods().Get(i)
			got[string(md.Name())] = [2]bool{reads(md), justified(md)}
		}
	}
	want := map[string][2]bool{
		"PlaceOrder": {false, false}, "GetOrder": {true, false}, "ListProducts": {true, false},
		"SubscribeNewsletter": {false, true}, "GetInvoice": {true, false}, "ExportInvoices": {false, false},
		"WatchShipment": {true, false},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("[reads, justified] by method mismatch (-want +got):\n%s", diff)
	}
}

// TestCatalogErrors: what keeps loam catalog from writing is an error that
// names it, with exit status 1, or 2 for a bad command line.
func TestCatalogErrors(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		wantCode int
		want     string
	}{
		{"missing directory", []string{"testdata/nope"}, 1, "testdata/nope: file does not exist"},
		{"contracts that do not compile", []string{"testdata/governance/broken/proto"}, 1, "unknown type Missing"},
		{"missing image", []string{"--image", "testdata/nope.binpb"}, 1, "no such file or directory"},
		{"two directories", []string{"a", "b"}, 2, "at most one directory"},
		{"directory and image", []string{"--image", "x.binpb", "proto"}, 2, "not both"},
		{"unknown flag", []string{"--fast"}, 2, "flag provided but not defined"},
		{"help", []string{"--help"}, 0, "Usage:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, stderr := runCLI(append([]string{"catalog", "--out", filepath.Join(t.TempDir(), "c")}, tt.args...)...)
			if code != tt.wantCode || !strings.Contains(stderr, tt.want) {
				t.Errorf("loam catalog %q = %d %q, want %d and %q", tt.args, code, stderr, tt.wantCode, tt.want)
			}
		})
	}
}

// TestBufImport reads buf's is_import mark, and reads no mark, rather than
// a wrong one, from files without it or with fields that do not parse.
func TestBufImport(t *testing.T) {
	mark := func(ext []byte) *descriptorpb.FileDescriptorProto {
		f := &descriptorpb.FileDescriptorProto{Name: proto.String("a.proto")}
		f.ProtoReflect().SetUnknown(protowire.AppendBytes(protowire.AppendTag(nil, 8042, protowire.BytesType), ext))
		return f
	}
	isImport := func(v uint64) []byte {
		return protowire.AppendVarint(protowire.AppendTag(nil, 1, protowire.VarintType), v)
	}
	tests := []struct {
		name string
		file *descriptorpb.FileDescriptorProto
		want bool
	}{
		{"plain descriptor", &descriptorpb.FileDescriptorProto{Name: proto.String("a.proto")}, false},
		{"marked import", mark(isImport(1)), true},
		{"marked not an import", mark(isImport(0)), false},
		{"the last mark wins", mark(append(isImport(1), isImport(0)...)), false},
		{"other fields of the extension", mark(append(protowire.AppendBytes(protowire.AppendTag(nil, 2, protowire.BytesType), []byte("m")), isImport(1)...)), true},
		{"truncated extension", mark(isImport(1)[:1]), false},
	}
	for _, tt := range tests {
		if got := bufImport(tt.file); got != tt.want {
			t.Errorf("bufImport(%s) = %v, want %v", tt.name, got, tt.want)
		}
	}
}

// TestDoctorImage: the contracts may come from a buf image, with the same
// scorecard as from their directory.
func TestDoctorImage(t *testing.T) {
	_, fromDir, _ := runCLI("doctor", "--json", ready)
	code, fromImage, stderr := runCLI("doctor", "--json", "--image", image(t), "--config", ready+"/config")
	if code != 0 {
		t.Fatalf("loam doctor --image = %d: %s", code, stderr)
	}
	var a, b doctorReport
	if err := json.Unmarshal([]byte(fromDir), &a); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(fromImage), &b); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(a.Checks, b.Checks); diff != "" || b.Score != 100 {
		t.Errorf("scorecard from the image (score %d) differs from the directory's (-dir +image):\n%s", b.Score, diff)
	}
}

// TestLoadContractsCancelled: compiling stops with the context.
func TestLoadContractsCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := loadContracts(ctx, ready+"/proto", ""); !errors.Is(err, context.Canceled) {
		t.Errorf("loadContracts(cancelled) = %v, want context.Canceled", err)
	}
}
