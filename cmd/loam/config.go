package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/loamhq/loam/config"
	"github.com/loamhq/loam/events/eventbus"
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
            and unknown keys, type and validation errors in the sections Loam
            owns (SECTIONS). Other top-level sections
            are application sections: only the service's own config.Load,
            which knows their types, can check them, and validate lists them
            as unchecked.
  explain   prints every effective key of one environment (default: LOAM_ENV,
            else development), its value and the file and line that set it.
  diff      compares two environments: keys whose values differ, keys present
            in one only, and keys one inherits from base while the other sets
            them itself. --fail-on-drift exits 1 when there is any.

The loam command reads files only, not environment variables or flags. Secrets
are printed as [redacted]: in Loam's sections by their type; in application
sections, whose types the command does not know, every key whose last part
contains secret, password, passwd, token, key, credential or private, erring
on the side of hiding.

Exit status: 0 ok, 1 invalid configuration (or drift with --fail-on-drift),
2 usage error.
`

// configUsage is the help of "loam config", naming the sections of
// loamSections.
var configUsage = strings.Replace(configUsageText, "SECTIONS", strings.Join(knownSections(), ", "), 1)

// loamSections is the schema of the sections of a service's configuration
// that Loam itself owns, which "loam config validate" checks strictly: the
// standard sections of service.Config (service, telemetry, authn, authz)
// and events. Every other top-level section lands in Application: it
// belongs to the service, and only the service's own config.Load can check
// it.
type loamSections struct {
	service.Config
	Events      eventbus.Config `koanf:"events"`
	Application map[string]any  `koanf:",remain"`
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

// load explains one environment; a non-nil problems is an invalid config,
// a non-zero code an error already printed.
func (c *configCmd) load(env string) ([]config.Entry, *config.Error, int) {
	entries, err := config.Explain[loamSections](context.Background(),
		config.WithDir(c.dir), config.WithEnvironment(env))
	var cerr *config.Error
	if errors.As(err, &cerr) {
		return entries, cerr, 0
	}
	if err != nil {
		fmt.Fprintln(c.stderr, "loam config:", err)
		return nil, nil, 1
	}
	return entries, nil, 0
}

// problemJSON is one problem in --json output.
type problemJSON struct {
	Environments []string `json:"environments"`
	Key          string   `json:"key,omitempty"`
	Source       string   `json:"source,omitempty"`
	Message      string   `json:"message"`
	Text         string   `json:"text"`
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
	problems := []*problemJSON{}
	byText := map[string]*problemJSON{}
	app := map[string]bool{}
	for _, env := range envs {
		entries, cerr, code := c.load(env)
		if code != 0 {
			return code
		}
		for _, e := range entries {
			if top, _, _ := strings.Cut(e.Key, "."); !slices.Contains(knownSections(), top) {
				app[top] = true
			}
		}
		if cerr == nil {
			continue
		}
		for _, f := range cerr.Fields {
			p := byText[f.Error()]
			if p == nil {
				p = &problemJSON{Key: f.Path, Message: f.Msg, Text: f.Error()}
				if f.Source.Kind != config.SourceUnset {
					p.Source = f.Source.String()
				}
				byText[f.Error()], problems = p, append(problems, p)
			}
			p.Environments = append(p.Environments, env)
		}
	}
	appSections := slices.Sorted(maps.Keys(app))
	if c.json {
		c.writeJSON(struct {
			OK                  bool           `json:"ok"`
			Environments        []string       `json:"environments"`
			Problems            []*problemJSON `json:"problems"`
			LoamSections        []string       `json:"loam_sections"`
			ApplicationSections []string       `json:"application_sections"`
		}{len(problems) == 0, envs, problems, append([]string{}, knownSections()...), appSections})
	} else {
		for _, p := range problems {
			fmt.Fprintf(c.stdout, "%s: %s\n", strings.Join(p.Environments, ", "), p.Text)
		}
		if len(problems) == 0 {
			fmt.Fprintf(c.stdout, "ok: %s\n", strings.Join(envs, ", "))
		} else {
			fmt.Fprintf(c.stdout, "%d problems in %s\n", len(problems), c.dir)
		}
		if len(appSections) > 0 {
			fmt.Fprintf(c.stdout, "not checked (application sections, checked by the service's config.Load): %s\n", strings.Join(appSections, ", "))
		}
	}
	if len(problems) > 0 {
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
	Value  string `json:"value"`
	Source string `json:"source"`
}

// displayValue redacts secrets. Loam's own sections are typed, so
// config.Explain has redacted their config.Secret values already; the
// application's sections are not, so their keys are judged by name.
func displayValue(e config.Entry) string {
	if !inLoamSection(e.Key) && isSecretKey(e.Key) {
		return "[redacted]"
	}
	return e.Value
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
	entries, cerr, code := c.load(env)
	if code != 0 {
		return code
	}
	if c.json {
		out := []entryJSON{}
		for _, e := range entries {
			out = append(out, entryJSON{e.Key, displayValue(e), e.Source.String()})
		}
		c.writeJSON(struct {
			Environment string      `json:"environment"`
			Entries     []entryJSON `json:"entries"`
		}{env, out})
	} else {
		tw := tabwriter.NewWriter(c.stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintf(tw, "KEY\tVALUE (%s)\tSOURCE\n", env)
		for _, e := range entries {
			fmt.Fprintf(tw, "%s\t%s\t%s\n", e.Key, displayValue(e), e.Source)
		}
		_ = tw.Flush()
	}
	return c.reportInvalid(env, cerr)
}

// reportInvalid prints a load's problems to stderr and returns the exit code.
func (c *configCmd) reportInvalid(env string, cerr *config.Error) int {
	if cerr == nil {
		return 0
	}
	for _, f := range cerr.Fields {
		fmt.Fprintf(c.stderr, "%s: %s\n", env, f.Error())
	}
	return 1
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
	var sides [2]map[string]config.Entry
	code := 0
	for i, env := range envs {
		entries, cerr, c2 := c.load(env)
		if c2 != 0 {
			return c2
		}
		code = max(code, c.reportInvalid(env, cerr))
		sides[i] = map[string]config.Entry{}
		for _, e := range entries {
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
		case !inB:
			d.Kind, d.Env = "only_in", envs[0]
		case !inA:
			d.Kind, d.Env = "only_in", envs[1]
		case a.Value != b.Value:
			d.Kind = "changed"
		case c.inherited(a.Source) && !c.inherited(b.Source):
			d.Kind, d.Env = "set_only_in", envs[1]
		case !c.inherited(a.Source) && c.inherited(b.Source):
			d.Kind, d.Env = "set_only_in", envs[0]
		default:
			continue
		}
		for i, e := range []config.Entry{a, b} {
			if []bool{inA, inB}[i] {
				d.Values[envs[i]] = &entryJSON{Value: displayValue(e), Source: e.Source.String()}
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
			for _, env := range envs {
				if v := d.Values[env]; v != nil {
					fmt.Fprintf(tw, "\t%s\t%s", v.Value, v.Source)
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
