package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"

	"github.com/loamhq/loam/authz"
	"github.com/loamhq/loam/config"
	"github.com/loamhq/loam/proto/loam/options"
	optionsv1 "github.com/loamhq/loam/proto/loam/options/v1"
	"github.com/loamhq/loam/service"
	"github.com/loamhq/loam/telemetry"
)

const doctorUsage = `Usage:
  loam doctor [--proto DIR | --image FILE] [--config DIR] [--env NAME]
              [--grace DURATION] [--min-score N] [--json] [DIR]

Scores how ready a service is for production, from its contracts and its
production configuration. DIR is the service's root (default "."): the
contracts are compiled from DIR/proto, as loam catalog compiles them, and
the configuration is read from DIR/config, as loam config reads it, for
the environment --env (default production). --proto, --image and --config
point elsewhere.

Each check passes or fails, with the reason; the score is the sum of the
weights of the checks that pass, out of 100:

  owner          10  every service names its owner team
  access         20  every RPC has a valid access rule, in its contract or in
                     the configuration's authz.rules, and its condition compiles
  public_writes  10  every public method that writes says why it is public, in a
                     comment line "Public: <why>"; a method reads when it is marked
                     idempotency_level = NO_SIDE_EFFECTS or named Get, List,
                     Search, Watch, Read, Lookup, Query, Describe, Count or Check
  config         15  the environment has its own file, and the configuration loads
                     and passes the server's start-up checks (loam config validate)
  authn          10  callers are authenticated: authn.issuers or authn.mtls is set
  reflection     10  gRPC reflection is off
  telemetry      10  traces are exported over OTLP, and metrics over OTLP or to
                     Prometheus
  secrets        10  no secret is written in the files: each comes from a mounted
                     file ("file:/run/secrets/...") or from the environment
  shutdown        5  drain_delay + shutdown_timeout, plus the 5s the server takes
                     to flush telemetry, fit in the pod's termination grace
                     (--grace, default 30s, Kubernetes' default)

Exit status: 0 when the score reaches --min-score (default 80), 1 below it
or when the contracts or the configuration cannot be read, 2 usage error.
`

// doctorCheck is one line of the scorecard.
type doctorCheck struct {
	ID     string `json:"id"`
	Title  string `json:"title"`
	Weight int    `json:"weight"`
	Passed bool   `json:"passed"`
	Reason string `json:"reason"`
}

// doctorReport is the scorecard.
type doctorReport struct {
	Proto       string        `json:"proto"`
	Config      string        `json:"config"`
	Environment string        `json:"environment"`
	Score       int           `json:"score"`
	MinScore    int           `json:"min_score"`
	OK          bool          `json:"ok"`
	Checks      []doctorCheck `json:"checks"`
}

// doctorCmd is the parsed command line of "loam doctor".
type doctorCmd struct {
	proto, image, config, env string
	grace                     time.Duration
	minScore                  int
	json                      bool
	stdout, stderr            io.Writer
}

func runDoctor(args []string, stdout, stderr io.Writer) int {
	c := &doctorCmd{stdout: stdout, stderr: stderr}
	fs := commandFlags("loam doctor", doctorUsage, stderr)
	fs.StringVar(&c.proto, "proto", "", "the contracts' directory (default DIR/proto)")
	fs.StringVar(&c.image, "image", "", "read the contracts from this buf image instead")
	fs.StringVar(&c.config, "config", "", "the configuration directory (default DIR/config)")
	fs.StringVar(&c.env, "env", service.Production, "the environment to check")
	fs.DurationVar(&c.grace, "grace", 30*time.Second, "the pod's termination grace period")
	fs.IntVar(&c.minScore, "min-score", 80, "the least score that passes, 0 to 100")
	fs.BoolVar(&c.json, "json", false, "print JSON")
	positional, code := parseArgs(fs, args)
	if code >= 0 {
		return code
	}
	root := "."
	switch len(positional) {
	case 0:
	case 1:
		root = positional[0]
	default:
		return c.usage("at most one directory, got %q", positional)
	}
	switch {
	case c.proto != "" && c.image != "":
		return c.usage("give --proto or --image, not both")
	case c.minScore < 0 || c.minScore > 100:
		return c.usage("--min-score %d is not between 0 and 100", c.minScore)
	case c.grace <= 0:
		return c.usage("--grace %v is not above zero", c.grace)
	}
	if c.proto == "" && c.image == "" {
		c.proto = filepath.Join(root, "proto")
	}
	if c.config == "" {
		c.config = filepath.Join(root, "config")
	}
	return c.run(context.Background())
}

func (c *doctorCmd) usage(format string, args ...any) int {
	fmt.Fprintf(c.stderr, "loam doctor: "+format+"\n\n%s", append(args, doctorUsage)...)
	return 2
}

func (c *doctorCmd) run(ctx context.Context) int {
	ct, err := loadContracts(ctx, c.proto, c.image)
	if err != nil {
		fmt.Fprintln(c.stderr, "loam doctor:", err)
		return 1
	}
	envs, err := config.Environments(c.config)
	if err != nil {
		fmt.Fprintln(c.stderr, "loam doctor:", err)
		return 1
	}
	var loadErr strings.Builder
	l, code := (&configCmd{dir: c.config, stdout: io.Discard, stderr: &loadErr}).load(c.env)
	if code != 0 {
		fmt.Fprintln(c.stderr, "loam doctor:", strings.TrimSpace(strings.TrimPrefix(loadErr.String(), "loam config: ")))
		return 1
	}
	services := ct.services()
	rep := doctorReport{Proto: c.proto, Config: c.config, Environment: c.env, MinScore: c.minScore}
	if c.image != "" {
		rep.Proto = c.image
	}
	rep.Checks = []doctorCheck{
		checkOwners(services),
		checkAccessRules(services, l.cfg),
		checkPublicWrites(services),
		c.checkConfig(l, slices.Contains(envs, c.env)),
		configured(l, "authn", "callers are authenticated", 10, checkAuthn),
		configured(l, "reflection", "gRPC reflection is off", 10, func(cfg *service.Config) (bool, string) { return checkReflection(cfg, l.entries) }),
		configured(l, "telemetry", "traces and metrics are exported", 10, checkTelemetry),
		checkSecrets(l.entries),
		configured(l, "shutdown", "drain and shutdown fit the pod's grace", 5, func(cfg *service.Config) (bool, string) { return checkShutdown(cfg, c.grace) }),
	}
	for _, ch := range rep.Checks {
		if ch.Passed {
			rep.Score += ch.Weight
		}
	}
	rep.OK = rep.Score >= c.minScore
	if c.json {
		enc := json.NewEncoder(c.stdout)
		enc.SetIndent("", "  ")
		enc.SetEscapeHTML(false)
		_ = enc.Encode(rep)
	} else {
		c.print(rep)
	}
	if !rep.OK {
		return 1
	}
	return 0
}

func (c *doctorCmd) print(rep doctorReport) {
	fmt.Fprintf(c.stdout, "loam doctor: %s readiness of %s and %s\n\n", rep.Environment, rep.Proto, rep.Config)
	tw := tabwriter.NewWriter(c.stdout, 0, 0, 2, ' ', 0)
	for _, ch := range rep.Checks {
		status, points := "FAIL", 0
		if ch.Passed {
			status, points = "PASS", ch.Weight
		}
		fmt.Fprintf(tw, "%s\t%d/%d\t%s\t%s: %s\n", status, points, ch.Weight, ch.ID, ch.Title, ch.Reason)
	}
	_ = tw.Flush()
	verdict := "ready"
	if !rep.OK {
		verdict = "not ready"
	}
	fmt.Fprintf(c.stdout, "\nscore %d/100, %d needed: %s\n", rep.Score, rep.MinScore, verdict)
}

// listed names at most three items, then how many more there are.
func listed(items []string) string {
	if len(items) <= 3 {
		return strings.Join(items, "; ")
	}
	return strings.Join(items[:3], "; ") + fmt.Sprintf("; and %d more", len(items)-3)
}

func checkOwners(services []protoreflect.ServiceDescriptor) doctorCheck {
	ch := doctorCheck{ID: "owner", Title: "every service names its owner team", Weight: 10}
	var owned, bad []string
	for _, sd := range services {
		// Problems of the option other than its owner are lint's to report.
		_, err := options.Service(sd)
		if oerr := (*options.Error)(nil); errors.As(err, &oerr) && (errors.Is(err, options.ErrNotDeclared) || oerr.Field == "owner") {
			bad = append(bad, string(sd.FullName())+" names none")
			continue
		}
		owned = append(owned, fmt.Sprintf("%s (%s)", sd.FullName(), declared[*optionsv1.Service](sd.Options(), optionsv1.E_Service).GetOwner()))
	}
	switch {
	case len(services) == 0:
		ch.Reason = "no service in the contracts"
	case len(bad) > 0:
		ch.Reason = listed(bad)
	default:
		ch.Passed, ch.Reason = true, listed(owned)
	}
	return ch
}

func checkAccessRules(services []protoreflect.ServiceDescriptor, cfg *service.Config) doctorCheck {
	ch := doctorCheck{ID: "access", Title: "every RPC has an access rule", Weight: 20}
	var rules map[string]authz.Rule
	if cfg != nil {
		rules = cfg.Authz.Rules
	}
	var n, inConfig int
	var bad []string
	for _, sd := range services {
		methods := sd.Methods()
		for i := range methods.Len() {
			md := methods.Get(i)
			n++
			name := fullMethod(md)
			a, err := options.Access(md)
			switch {
			case errors.Is(err, options.ErrNotDeclared):
				if _, ok := rules[name]; ok {
					inConfig++
				} else if _, ok := rules["/"+string(sd.FullName())+"/*"]; ok {
					inConfig++
				} else {
					bad = append(bad, name+": no rule, in the contract or in authz.rules")
				}
			case err != nil:
				var oerr *options.Error
				errors.As(err, &oerr)
				bad = append(bad, name+": "+oerr.Reason)
			case a.GetCondition() != "":
				if err := authz.CheckCondition(a.GetCondition(), md.Input()); err != nil {
					bad = append(bad, fmt.Sprintf("%s: condition %q does not compile", name, a.GetCondition()))
				}
			}
		}
	}
	switch {
	case n == 0:
		ch.Reason = "no RPC in the contracts"
	case len(bad) > 0:
		ch.Reason = fmt.Sprintf("%d of %s without a valid rule: %s", len(bad), plural(n, "method"), listed(bad))
	case inConfig > 0:
		ch.Passed, ch.Reason = true, fmt.Sprintf("%s, %d ruled in their contracts and %d in authz.rules", plural(n, "method"), n-inConfig, inConfig)
	default:
		ch.Passed, ch.Reason = true, fmt.Sprintf("%s, each ruled in its contract", plural(n, "method"))
	}
	return ch
}

// readPrefixes start the names of methods that only read, by the
// conventions of Google's API design guide.
var readPrefixes = []string{"Get", "List", "Search", "Watch", "Read", "Lookup", "Query", "Describe", "Count", "Check", "BatchGet"}

// reads reports whether md only reads: it is marked so, or its name starts
// with a read verb as a word (GetCapture, not Getaway).
func reads(md protoreflect.MethodDescriptor) bool {
	if opts, ok := md.Options().(*descriptorpb.MethodOptions); ok && opts.GetIdempotencyLevel() == descriptorpb.MethodOptions_NO_SIDE_EFFECTS {
		return true
	}
	name := string(md.Name())
	for _, p := range readPrefixes {
		if rest, ok := strings.CutPrefix(name, p); ok && (rest == "" || unicode.IsUpper(rune(rest[0]))) {
			return true
		}
	}
	return false
}

// justified reports whether the leading comment of md has a line that
// starts with "Public:" followed by a reason.
func justified(md protoreflect.MethodDescriptor) bool {
	for line := range strings.Lines(md.ParentFile().SourceLocations().ByDescriptor(md).LeadingComments) {
		if why, ok := strings.CutPrefix(strings.TrimSpace(line), "Public:"); ok && strings.TrimSpace(why) != "" {
			return true
		}
	}
	return false
}

func checkPublicWrites(services []protoreflect.ServiceDescriptor) doctorCheck {
	ch := doctorCheck{ID: "public_writes", Title: "every public method that writes says why", Weight: 10}
	var public, bad []string
	for _, sd := range services {
		methods := sd.Methods()
		for i := range methods.Len() {
			md := methods.Get(i)
			if !declared[*optionsv1.Access](md.Options(), optionsv1.E_Access).GetPublic() {
				continue
			}
			public = append(public, fullMethod(md))
			if !reads(md) && !justified(md) {
				bad = append(bad, fullMethod(md))
			}
		}
	}
	switch {
	case len(bad) > 0:
		ch.Reason = fmt.Sprintf("public and writing, with no \"Public: <why>\" line in the comment: %s", listed(bad))
	case len(public) == 0:
		ch.Passed, ch.Reason = true, "no public method"
	default:
		ch.Passed, ch.Reason = true, fmt.Sprintf("%s, each reading or justified: %s", plural(len(public), "public method"), listed(public))
	}
	return ch
}

func (c *doctorCmd) checkConfig(l *loaded, hasFile bool) doctorCheck {
	ch := doctorCheck{ID: "config", Title: "the configuration passes the server's start-up checks", Weight: 15}
	var problems []string
	if !hasFile {
		problems = append(problems, fmt.Sprintf("%s has no file for %s: the service would run on base and defaults alone", c.config, c.env))
	}
	for _, f := range l.problems {
		problems = append(problems, findingText(f))
	}
	if len(problems) > 0 {
		ch.Reason = listed(problems)
		return ch
	}
	ch.Passed, ch.Reason = true, fmt.Sprintf("%s loads and passes service.Config.Validate", c.config)
	return ch
}

// configured is a check of the typed configuration, which fails when the
// configuration did not load.
func configured(l *loaded, id, title string, weight int, check func(*service.Config) (bool, string)) doctorCheck {
	ch := doctorCheck{ID: id, Title: title, Weight: weight}
	if l.cfg == nil {
		ch.Reason = "the configuration does not load (see config)"
		return ch
	}
	ch.Passed, ch.Reason = check(l.cfg)
	return ch
}

func checkAuthn(cfg *service.Config) (bool, string) {
	var by []string
	for _, iss := range cfg.Authn.Issuers {
		by = append(by, "issuer "+iss.URL)
	}
	if cfg.Authn.MTLS {
		by = append(by, "client certificates (authn.mtls)")
	}
	if len(by) == 0 {
		return false, "neither authn.issuers nor authn.mtls is set"
	}
	return true, "by " + strings.Join(by, " and ")
}

func checkReflection(cfg *service.Config, es []entry) (bool, string) {
	on := *cfg.Effective().Service.Reflection
	src := sourceOf(es, "service.reflection")
	switch {
	case on && src.Kind != config.SourceUnset:
		return false, "service.reflection is on, set by " + src.String() + ": any caller can list every method and message"
	case on:
		return false, "service.reflection is on by default outside production; set it to false"
	case src.Kind != config.SourceUnset:
		return true, "service.reflection is off, set by " + src.String()
	}
	return true, "off by default in production"
}

func checkTelemetry(cfg *service.Config) (bool, string) {
	t := cfg.Telemetry
	var problems []string
	traces := "traces to " + exportTarget(t.Traces)
	if t.Traces.Exporter != telemetry.ExporterOTLP {
		problems = append(problems, "telemetry.traces.exporter is not otlp")
	}
	var metrics []string
	if t.Metrics.Exporter == telemetry.ExporterOTLP {
		metrics = append(metrics, exportTarget(t.Metrics))
	}
	if t.Prometheus {
		metrics = append(metrics, "Prometheus")
	}
	if len(metrics) == 0 {
		problems = append(problems, "metrics go neither over otlp (telemetry.metrics.exporter) nor to Prometheus (telemetry.prometheus)")
	}
	if len(problems) > 0 {
		return false, strings.Join(problems, "; ")
	}
	return true, traces + ", metrics to " + strings.Join(metrics, " and ")
}

// exportTarget describes where an OTLP exporter sends.
func exportTarget(e telemetry.Export) string {
	if e.Endpoint == "" {
		return "otlp (the exporter's default endpoint)"
	}
	return "otlp " + e.Endpoint
}

// checkSecrets finds secrets written in the configuration files: a key
// whose value is hidden (a Loam Secret, or an application key that looks
// secret), set by a file, and not a "file:" reference to a mounted file.
func checkSecrets(es []entry) doctorCheck {
	ch := doctorCheck{ID: "secrets", Title: "no secret is written in the files", Weight: 10}
	var inline, mounted []string
	for _, e := range es {
		if e.Value != "[redacted]" || e.Source.Kind != config.SourceFile {
			continue
		}
		if e.SecretFile != "" || strings.HasPrefix(e.compare, "file:") {
			mounted = append(mounted, e.Key)
			continue
		}
		inline = append(inline, fmt.Sprintf("%s (%s)", e.Key, e.Source))
	}
	switch {
	case len(inline) > 0:
		ch.Reason = "written inline: " + listed(inline) + "; mount them and write file:/path, or set them from the environment"
	case len(mounted) > 0:
		ch.Passed, ch.Reason = true, "read from mounted files: "+listed(mounted)
	default:
		ch.Passed, ch.Reason = true, "the files set no secret"
	}
	return ch
}

func checkShutdown(cfg *service.Config, grace time.Duration) (bool, string) {
	s := cfg.Effective().Service
	total := s.DrainDelay + s.ShutdownTimeout + service.FlushAllowance
	sum := fmt.Sprintf("drain_delay %v + shutdown_timeout %v + %v to flush telemetry = %v", s.DrainDelay, s.ShutdownTimeout, service.FlushAllowance, total)
	if total > grace {
		return false, fmt.Sprintf("%s, over the %v grace: the pod is killed before it has drained and flushed", sum, grace)
	}
	return true, fmt.Sprintf("%s, within the %v grace", sum, grace)
}
