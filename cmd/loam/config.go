package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/loamhq/loam/config"
	"github.com/loamhq/loam/service"
)

// configUsageText is the help of "loam config"; SECTIONS stands for the
// sections Loam owns.
const configUsageText = `Usage:
  loam config validate [--env NAME]... [--json] [dir]
  loam config explain  [--env NAME] [--json] [dir]
  loam config diff     --env A --env B [--fail-on-drift] [--json] [dir]

dir is the configuration directory (default "config"), holding base.* and
one <environment>.* file per environment, in YAML, JSON or TOML.

  validate  checks each named environment (default: every environment that has
            a file in dir) and reports every problem at once: files that do not
            parse, duplicate keys (YAML, TOML), two files for one environment,
            and in the sections Loam owns (SECTIONS)
            unknown keys, type and validation errors, and the rules the server
            checks at start-up (service.Config.Validate), applied as a server
            started with LOAM_ENV naming the environment applies them: in
            production an issuer or mtls is required, allow_unauthenticated
            is refused and fault injection needs allow_in_production; TLS
            files come in pairs; and so on. Reflection turned on in
            production, and a service.environment that names another
            environment than the files', are warnings.
            Other top-level sections are application sections: only the
            service's own config.Load, which knows their types, can check
            them, and validate lists them as unchecked. A top-level key one
            letter away from the name of a Loam section (two for names of six
            letters or more), such as telemtry, is a misspelling and an
            error, not an application section: name application sections
            apart from Loam's.
  explain   prints every effective key of one environment (default: LOAM_ENV,
            else development), its value and the file and line that set it.
            Lists and maps print in YAML flow style ([a, b]), and as JSON
            arrays and objects with --json. A setting the server derives
            (the environment's name, reflection, a zero that means a
            default) shows the value the server uses, with the source
            "derived" ("derived from ..." when it replaces a value a file
            set), assuming the service runs with LOAM_ENV naming the
            environment.
  diff      compares two environments: keys whose values differ, keys present
            in one only, and keys one inherits from base while the other sets
            them itself, with derived values as explain shows them.
            --fail-on-drift exits 1 when there is any.

The loam command reads files only, not environment variables or flags. Secrets
that are set are printed as [redacted] (an unset or empty one prints empty): in
Loam's sections by their type; in application sections, whose types the
command does not know, every key whose last part contains secret, password,
passwd, token, key, credential or private, and every list or map that holds
such a key, erring on the side of hiding.

Warnings point at what is valid but likely a mistake, such as an environment
named with --env that has no file while others have one, or an environment
file that sets no key. validate prints them with its report, explain and diff
on stderr; they do not change the exit status.

Exit status: 0 ok, 1 invalid configuration (or drift with --fail-on-drift),
2 usage error.
`

// configUsage is the help of "loam config", naming the sections of
// loamSections.
var configUsage = strings.Replace(configUsageText, "SECTIONS", strings.Join(knownSections(), ", "), 1)

// loamSections is the schema of the sections of a service's configuration
// that Loam itself owns, which "loam config validate" checks strictly: the
// standard sections of service.Config (service, telemetry, authn, authz,
// cache). Every other top-level section lands in Application:
// it belongs to the service, and only the service's own config.Load can
// check it.
type loamSections struct {
	service.Config
	Application map[string]any `koanf:",remain"`
}

// knownSections lists the top-level keys of loamSections.
func knownSections() []string {
	var names []string
	var walk func(t reflect.Type)
	walk = func(t reflect.Type) {
		for i := range t.NumField() {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("koanf"), ",")
			switch {
			case name != "":
				names = append(names, name)
			case f.Anonymous:
				walk(f.Type)
			}
		}
	}
	walk(reflect.TypeFor[loamSections]())
	return names
}

// isSecretKey is the naming rule by which the CLI redacts the values of
// application sections, whose types it does not know.
func isSecretKey(key string) bool {
	last := strings.ToLower(key[strings.LastIndexByte(key, '.')+1:])
	for _, word := range []string{"secret", "password", "passwd", "token", "key", "credential", "private"} {
		if strings.Contains(last, word) {
			return true
		}
	}
	return false
}

// envList is a repeatable --env flag.
type envList []string

func (l *envList) String() string     { return strings.Join(*l, ",") }
func (l *envList) Set(v string) error { *l = append(*l, v); return nil }

// configCmd holds the parsed command line of "loam config".
type configCmd struct {
	dir         string
	envs        envList
	json        bool
	failOnDrift bool
	stdout      io.Writer
	stderr      io.Writer
}

func runConfig(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, configUsage)
		return 2
	}
	c := &configCmd{dir: "config", stdout: stdout, stderr: stderr}
	sub := args[0]
	fs := flag.NewFlagSet("loam config "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, configUsage) }
	fs.Var(&c.envs, "env", "environment (repeatable)")
	fs.BoolVar(&c.json, "json", false, "print JSON")
	if sub == "diff" {
		fs.BoolVar(&c.failOnDrift, "fail-on-drift", false, "exit 1 on drift")
	}
	var run func() int
	switch sub {
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, configUsage)
		return 0
	case "validate":
		run = c.validate
	case "explain":
		run = c.explain
	case "diff":
		run = c.diff
	default:
		fmt.Fprintf(stderr, "loam config: unknown command %q\n\n%s", sub, configUsage)
		return 2
	}
	var positional []string
	for rest := args[1:]; ; rest = fs.Args()[1:] {
		if err := fs.Parse(rest); errors.Is(err, flag.ErrHelp) {
			return 0
		} else if err != nil {
			return 2
		}
		if fs.NArg() == 0 {
			break
		}
		positional = append(positional, fs.Arg(0))
	}
	switch len(positional) {
	case 0:
	case 1:
		c.dir = positional[0]
	default:
		return c.usage("at most one directory, got %q", positional)
	}
	return run()
}

func (c *configCmd) usage(format string, args ...any) int {
	fmt.Fprintf(c.stderr, "loam config: "+format+"\n\n%s", append(args, configUsage)...)
	return 2
}

// loaded is one environment as the command found it.
type loaded struct {
	entries  []entry
	problems []config.FieldError // the configuration is invalid when there is one
	warnings []config.FieldError // what deserves attention but is valid
	cfg      *service.Config     // the Loam sections, typed; nil when they did not load
}

// load explains one environment; a non-zero code is an error already
// printed.
func (c *configCmd) load(env string) (*loaded, int) {
	l := &loaded{}
	es, err := config.Explain[loamSections](context.Background(),
		config.WithDir(c.dir), config.WithEnvironment(env), config.WithSecretFilesUnread(), config.WithLogger(slog.New(warningLog{&l.warnings})))
	var cerr *config.Error
	switch {
	case errors.As(err, &cerr):
		l.problems = cerr.Fields
	case err != nil:
		fmt.Fprintln(c.stderr, "loam config:", err)
		return nil, 1
	}
	l.entries = entries(es)
	if len(l.problems) > 0 {
		return l, 0
	}
	// The values, typed, for the settings the server derives from them.
	cfg, err := config.Load[loamSections](context.Background(),
		config.WithDir(c.dir), config.WithEnvironment(env), config.WithSecretFilesUnread(), config.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		fmt.Fprintln(c.stderr, "loam config:", err)
		return nil, 1
	}
	l.cfg = &cfg.Config
	derive(l.entries, cfg.Config, env)
	problems, warnings := serverRules(cfg.Config, env, l.entries)
	l.problems, l.warnings = problems, append(l.warnings, warnings...)
	return l, 0
}

// warningLog is the slog.Handler through which config hands the command
// its warnings: each record is one, its "path" attribute the file.
type warningLog struct{ warnings *[]config.FieldError }

func (h warningLog) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }
func (h warningLog) WithAttrs([]slog.Attr) slog.Handler           { return h }
func (h warningLog) WithGroup(string) slog.Handler                { return h }

func (h warningLog) Handle(_ context.Context, r slog.Record) error {
	w := config.FieldError{Msg: r.Message}
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "path" {
			w.Source = config.Source{Kind: config.SourceFile, Name: a.Value.String()}
		}
		return true
	})
	*h.warnings = append(*h.warnings, w)
	return nil
}

// problemJSON is one problem or warning in --json output.
type problemJSON struct {
	Environments []string `json:"environments"`
	Key          string   `json:"key,omitempty"`
	Source       string   `json:"source,omitempty"`
	Message      string   `json:"message"`
	Text         string   `json:"text"`
}

// findings gathers the problems or the warnings of several environments,
// listing one found in several once, with all their names.
type findings struct {
	list   []*problemJSON
	byText map[string]*problemJSON
}

func (fs *findings) add(env string, f config.FieldError) {
	text := findingText(f)
	p := fs.byText[text]
	if p == nil {
		p = &problemJSON{Key: f.Path, Message: f.Msg, Text: text}
		if f.Source.Kind != config.SourceUnset {
			p.Source = f.Source.String()
		}
		if fs.byText == nil {
			fs.byText = map[string]*problemJSON{}
		}
		fs.byText[text], fs.list = p, append(fs.list, p)
	}
	p.Environments = append(p.Environments, env)
}

// findingText is how the command prints a problem or warning: as
// config.FieldError does, or its message alone when it names neither a key
// nor a source.
func findingText(f config.FieldError) string {
	if f.Path == "" && f.Source.Kind == config.SourceUnset {
		return f.Msg
	}
	return f.Error()
}

func (c *configCmd) validate() int {
	envs := c.envs
	if len(envs) == 0 {
		found, err := config.Environments(c.dir)
		if err != nil {
			fmt.Fprintln(c.stderr, "loam config:", err)
			return 1
		}
		envs = found
		if len(envs) == 0 {
			envs = envList{"development"}
		}
	}
	problems, warnings := findings{list: []*problemJSON{}}, findings{list: []*problemJSON{}}
	app := map[string]bool{}
	for _, env := range envs {
		l, code := c.load(env)
		if code != 0 {
			return code
		}
		// A misspelt Loam section is a problem, not an application section.
		problemAt := map[string]bool{}
		for _, f := range l.problems {
			problemAt[f.Path] = true
			problems.add(env, f)
		}
		for _, f := range l.warnings {
			warnings.add(env, f)
		}
		for _, e := range l.entries {
			if top, _, _ := strings.Cut(e.Key, "."); !slices.Contains(knownSections(), top) && !problemAt[top] {
				app[top] = true
			}
		}
	}
	appSections := append([]string{}, slices.Sorted(maps.Keys(app))...)
	if c.json {
		c.writeJSON(struct {
			OK                  bool           `json:"ok"`
			Environments        []string       `json:"environments"`
			Problems            []*problemJSON `json:"problems"`
			Warnings            []*problemJSON `json:"warnings"`
			LoamSections        []string       `json:"loam_sections"`
			ApplicationSections []string       `json:"application_sections"`
		}{len(problems.list) == 0, envs, problems.list, warnings.list, append([]string{}, knownSections()...), appSections})
	} else {
		for _, p := range problems.list {
			fmt.Fprintf(c.stdout, "%s: %s\n", strings.Join(p.Environments, ", "), p.Text)
		}
		for _, p := range warnings.list {
			fmt.Fprintf(c.stdout, "%s: warning: %s\n", strings.Join(p.Environments, ", "), p.Text)
		}
		if len(problems.list) == 0 {
			fmt.Fprintf(c.stdout, "ok: %s\n", strings.Join(envs, ", "))
		} else {
			fmt.Fprintf(c.stdout, "%d problems in %s\n", len(problems.list), c.dir)
		}
		if len(appSections) > 0 {
			fmt.Fprintf(c.stdout, "not checked (application sections, checked by the service's config.Load): %s\n", strings.Join(appSections, ", "))
		}
	}
	if len(problems.list) > 0 {
		return 1
	}
	return 0
}

// environment is the one environment explain looks at.
func (c *configCmd) environment() string {
	switch {
	case len(c.envs) > 0:
		return c.envs[0]
	case os.Getenv("LOAM_ENV") != "":
		return os.Getenv("LOAM_ENV")
	}
	return "development"
}

// entryJSON is one key in --json output.
type entryJSON struct {
	Key    string `json:"key,omitempty"` // empty inside a diff
	Value  any    `json:"value"`         // a string, or a list or map
	Source string `json:"source"`
}

// inLoamSection reports whether key lies in one of Loam's own sections.
func inLoamSection(key string) bool {
	section, _, _ := strings.Cut(key, ".")
	return slices.Contains(knownSections(), section)
}

func (c *configCmd) explain() int {
	if len(c.envs) > 1 {
		return c.usage("explain takes one --env, got %d", len(c.envs))
	}
	env := c.environment()
	l, code := c.load(env)
	if code != 0 {
		return code
	}
	if c.json {
		out := []entryJSON{}
		for _, e := range l.entries {
			out = append(out, entryJSON{e.Key, e.data(), e.source()})
		}
		c.writeJSON(struct {
			Environment string      `json:"environment"`
			Entries     []entryJSON `json:"entries"`
		}{env, out})
	} else {
		tw := tabwriter.NewWriter(c.stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintf(tw, "KEY\tVALUE (%s)\tSOURCE\n", env)
		for _, e := range l.entries {
			fmt.Fprintf(tw, "%s\t%s\t%s\n", e.Key, e.Value, e.source())
		}
		_ = tw.Flush()
	}
	return c.report(env, l)
}

// report prints a load's warnings and problems to stderr and returns the
// exit code.
func (c *configCmd) report(env string, l *loaded) int {
	for _, f := range l.warnings {
		fmt.Fprintf(c.stderr, "%s: warning: %s\n", env, findingText(f))
	}
	for _, f := range l.problems {
		fmt.Fprintf(c.stderr, "%s: %s\n", env, findingText(f))
	}
	if len(l.problems) > 0 {
		return 1
	}
	return 0
}

// driftJSON is one differing key in --json output.
type driftJSON struct {
	Key    string                `json:"key"`
	Kind   string                `json:"kind"`
	Env    string                `json:"env,omitempty"`
	Values map[string]*entryJSON `json:"values"`
}

func (c *configCmd) diff() int {
	if len(c.envs) != 2 {
		return c.usage("diff takes exactly two --env, got %d", len(c.envs))
	}
	envs := [2]string{c.envs[0], c.envs[1]}
	var sides [2]map[string]entry
	code := 0
	for i, env := range envs {
		l, c2 := c.load(env)
		if c2 != 0 {
			return c2
		}
		code = max(code, c.report(env, l))
		sides[i] = map[string]entry{}
		for _, e := range l.entries {
			sides[i][e.Key] = e
		}
	}
	if code != 0 {
		return code
	}
	keys := map[string]bool{}
	for _, side := range sides {
		for k := range side {
			keys[k] = true
		}
	}
	drift := []driftJSON{}
	for _, key := range slices.Sorted(maps.Keys(keys)) {
		a, inA := sides[0][key]
		b, inB := sides[1][key]
		d := driftJSON{Key: key, Values: map[string]*entryJSON{}}
		switch {
		case !inB && !placeholder(a, sides[1]):
			d.Kind, d.Env = "only_in", envs[0]
		case !inA && !placeholder(b, sides[0]):
			d.Kind, d.Env = "only_in", envs[1]
		case !inA || !inB:
			continue
		case a.compare != b.compare:
			d.Kind = "changed"
		case c.inherited(a.Source) && !c.inherited(b.Source):
			d.Kind, d.Env = "set_only_in", envs[1]
		case !c.inherited(a.Source) && c.inherited(b.Source):
			d.Kind, d.Env = "set_only_in", envs[0]
		default:
			continue
		}
		for i, e := range []entry{a, b} {
			if []bool{inA, inB}[i] {
				d.Values[envs[i]] = &entryJSON{Value: e.data(), Source: e.source()}
			}
		}
		drift = append(drift, d)
	}
	if c.json {
		c.writeJSON(struct {
			Environments [2]string   `json:"environments"`
			Drift        []driftJSON `json:"drift"`
		}{envs, drift})
	} else if len(drift) == 0 {
		fmt.Fprintf(c.stdout, "no drift between %s and %s\n", envs[0], envs[1])
	} else {
		tw := tabwriter.NewWriter(c.stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintf(tw, "KEY\tDRIFT\t%s\tSOURCE\t%s\tSOURCE\n", strings.ToUpper(envs[0]), strings.ToUpper(envs[1]))
		for _, d := range drift {
			kind := strings.ReplaceAll(d.Kind, "_", " ")
			if d.Env != "" {
				kind += " " + d.Env
			}
			fmt.Fprintf(tw, "%s\t%s", d.Key, kind)
			for i := range envs {
				if e, ok := sides[i][d.Key]; ok {
					fmt.Fprintf(tw, "\t%s\t%s", e.Value, e.source())
				} else {
					fmt.Fprint(tw, "\t-\t-")
				}
			}
			fmt.Fprintln(tw)
		}
		_ = tw.Flush()
	}
	if c.failOnDrift && len(drift) > 0 {
		return 1
	}
	return 0
}

// placeholder reports whether e stands for an unset map whose keys the
// other side sets: the keys it sets are the drift.
func placeholder(e entry, other map[string]entry) bool {
	if e.Source.Kind != config.SourceUnset {
		return false
	}
	for k := range other {
		if strings.HasPrefix(k, e.Key+".") {
			return true
		}
	}
	return false
}

// inherited reports whether a value comes from defaults or the base file
// rather than from the environment's own file.
func (c *configCmd) inherited(s config.Source) bool {
	if s.Kind != config.SourceFile {
		return true
	}
	name := filepath.Base(s.Name)
	return strings.TrimSuffix(name, filepath.Ext(name)) == "base"
}

func (c *configCmd) writeJSON(v any) {
	enc := json.NewEncoder(c.stdout)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
