package config

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"

	"github.com/knadh/koanf/maps"
	"github.com/knadh/koanf/v2"

	"github.com/loamhq/loam/config/internal/parse"
)

// Load reads the configuration of type T. It merges, each layer overriding
// the ones before it: the `default:"..."` struct tags, the base file, the
// environment's file, environment variables (WithEnvPrefix) and flags
// (WithFlags); then it decodes the merged keys into T and validates T's
// `validate:"..."` tags.
//
// T must be a struct. Its keys are named by `koanf:"name"` tags (the
// lower-cased field name without one); nested structs and pointers to
// structs are sections, maps accept any sub-key, and a map field tagged
// `koanf:",remain"` takes the keys of its section that no field names,
// except a likely misspelling of a field's key (one edit away, or two for
// keys of six letters or more, a swap of neighbouring letters counting as
// one), which is an unknown key with a suggestion.
//
// When the configuration is invalid Load returns the zero T and an *Error
// holding every problem found. It returns ctx.Err() unwrapped if ctx is done
// before it starts, and other errors (an unreadable directory, a bad option)
// as they are. Load is safe for concurrent use.
func Load[T any](ctx context.Context, opts ...Option) (T, error) {
	o := newOptions(opts)
	v, st, err := load[T](ctx, o)
	st.logWarnings(ctx, o.logger)
	if err != nil {
		var zero T
		return zero, err
	}
	return v, nil
}

// state is one load: the merged key tree, the source of every key and
// section, and the problems found so far.
type state struct {
	env      string
	schema   *schema
	k        *koanf.Koanf
	flat     map[string]any
	src      map[string]Source
	problems []FieldError
	failed   map[string]bool      // paths that already have a problem
	files    map[string]fileLayer // the file of each file layer, by stem ("base" and the environment)
	warnings []warning
	// secretRefs leaves "file:" secrets unread (WithSecretFilesUnread).
	secretRefs bool
}

// fileLayer is the file a file layer was read from.
type fileLayer struct {
	path  string
	empty bool // the file sets no key
}

// warning is a condition an operator should hear of that leaves the
// configuration valid. path names the file concerned.
type warning struct {
	msg, path string
}

// logWarnings writes the load's warnings to l; st may be nil.
func (st *state) logWarnings(ctx context.Context, l *slog.Logger) {
	if st == nil {
		return
	}
	for _, w := range st.warnings {
		l.LogAttrs(ctx, slog.LevelWarn, w.msg, slog.String("environment", st.env), slog.String("path", w.path))
	}
}

// load is Load, also returning the state for Explain. The value is filled
// as far as it decodes even when the error is an *Error.
func load[T any](ctx context.Context, o options) (T, *state, error) {
	var out T
	if err := ctx.Err(); err != nil {
		return out, nil, err
	}
	sc, err := schemaOf(reflect.TypeFor[T]())
	if err != nil {
		return out, nil, err
	}
	env, explicit, err := o.environment()
	if err != nil {
		return out, nil, err
	}
	st := &state{env: env, schema: sc, k: koanf.New("."), src: map[string]Source{}, failed: map[string]bool{},
		files: map[string]fileLayer{}, secretRefs: o.secretRefs}

	defaults, defaultSrc := map[string]any{}, map[string]Source{}
	sc.leaves(func(n *node) {
		if n.hasDef {
			def := n.def
			if def == EnvironmentDefault {
				def = env
			}
			defaults[n.path], defaultSrc[n.path] = def, Source{Kind: SourceDefault}
		}
	})
	st.addFlat(defaults, defaultSrc)
	if err := st.addFiles(o.dir, o.dirSet, explicit); err != nil {
		return out, nil, err
	}
	if o.envPrefix != "" {
		st.addFlat(envKeys(o.envPrefix))
	}
	if o.flags != nil {
		st.addFlat(flagKeys(o.flags, sc))
	}
	st.flat = st.k.All()

	root := reflect.ValueOf(&out).Elem()
	st.decode(root)
	if len(st.problems) == 0 || st.problems[0].Path != "" {
		// Validation of a tree missing a file that did not parse would
		// only add noise ("required but not set").
		st.validate(root, sc)
	}
	if len(st.problems) > 0 {
		sort.SliceStable(st.problems, func(i, j int) bool {
			a, b := st.problems[i], st.problems[j]
			if (a.Path == "") != (b.Path == "") {
				return a.Path == ""
			}
			return a.Path < b.Path
		})
		return out, st, &Error{Environment: env, Fields: st.problems}
	}
	return out, st, nil
}

// EnvironmentDefault, as a field's `default:"..."` tag, stands for the name
// of the environment being loaded, so that a setting such as
// service.environment is the environment whose file was read, whether it
// was chosen by option, --env or LOAM_ENV, unless a file says otherwise.
const EnvironmentDefault = "${environment}"

// environment applies the precedence documented on WithEnvironment;
// explicit is false when no option, flag or variable named one.
func (o options) environment() (env string, explicit bool, err error) {
	env = o.env
	if env == "" && o.flags != nil {
		o.flags.Visit(func(f *flag.Flag) {
			if f.Name == "env" {
				env = f.Value.String()
			}
		})
	}
	if env == "" {
		env = os.Getenv("LOAM_ENV")
	}
	explicit = env != ""
	if env == "" {
		env = "development"
	}
	if env == "base" || strings.ContainsAny(env, `/\`) || strings.HasPrefix(env, ".") {
		return "", false, fmt.Errorf("config: %q cannot be an environment name", env)
	}
	return env, explicit, nil
}

func (st *state) fail(path string, src Source, msg string) {
	if path != "" {
		if st.failed[path] {
			return
		}
		st.failed[path] = true
	}
	st.problems = append(st.problems, FieldError{Path: path, Source: src, Msg: msg})
}

// add merges one layer's tree; srcOf gives the source of a key or section
// path, given also the leaf key that brought it.
func (st *state) add(tree map[string]any, srcOf func(path, leaf string) Source) {
	flat, _ := maps.Flatten(tree, nil, ".")
	for key := range flat {
		for p := key; ; {
			st.src[p] = srcOf(p, key)
			i := strings.LastIndexByte(p, '.')
			if i < 0 {
				break
			}
			p = p[:i]
		}
	}
	_ = st.k.Load(treeProvider(tree), nil) // merging a map cannot fail
}

// addFlat merges a layer given as flat keys, each with its own source.
func (st *state) addFlat(flat map[string]any, src map[string]Source) {
	st.add(maps.Unflatten(flat, "."), func(_, leaf string) Source { return src[leaf] })
}

// addFiles merges base.* then <env>.* from dir, recording syntax errors
// and ambiguous files as problems, the file of each layer, and the
// warnings documented in the package doc: an environment named explicitly
// that has no file while others have one, and an environment file that
// sets no key.
func (st *state) addFiles(dir string, mustExist, explicit bool) error {
	files, err := scanDir(dir)
	if errors.Is(err, fs.ErrNotExist) && !mustExist {
		return nil
	}
	if err != nil {
		return err
	}
	perEnv := false // the directory holds a file for some environment
	for stem := range files {
		perEnv = perEnv || stem != "base"
	}
	if len(files[st.env]) == 0 && explicit && perEnv {
		st.warnings = append(st.warnings, warning{"no configuration file for the environment",
			filepath.Join(dir, st.env) + ".{" + strings.Join(parse.Exts, ",") + "}"})
	}
	for _, stem := range []string{"base", st.env} {
		names := files[stem]
		if len(names) == 0 {
			continue
		}
		path := filepath.Join(dir, names[0])
		st.files[stem] = fileLayer{path: path}
		if len(names) > 1 {
			st.fail("", Source{Kind: SourceFile, Name: path},
				fmt.Sprintf("%s is also there; keep one file per environment", filepath.Join(dir, names[1])))
			continue
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("config: %w", err)
		}
		tree, lines, err := parse.Bytes(strings.TrimPrefix(filepath.Ext(path), "."), data)
		if se := (*parse.SyntaxError)(nil); errors.As(err, &se) {
			st.fail("", Source{Kind: SourceFile, Name: path, Line: se.Line}, se.Msg)
			continue
		}
		if len(tree) == 0 {
			st.files[stem] = fileLayer{path: path, empty: true}
			if stem == st.env {
				st.warnings = append(st.warnings, warning{"the environment's configuration file sets no key", path})
			}
		}
		st.add(tree, func(p, _ string) Source { return Source{Kind: SourceFile, Name: path, Line: lines[p]} })
	}
	return nil
}

// scanDir maps each file stem in dir to its configuration file names.
func scanDir(dir string) (map[string][]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	files := map[string][]string{}
	for _, e := range entries {
		ext := strings.TrimPrefix(filepath.Ext(e.Name()), ".")
		if e.IsDir() || !slices.Contains(parse.Exts, ext) || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		stem := strings.TrimSuffix(e.Name(), "."+ext)
		files[stem] = append(files[stem], e.Name())
	}
	return files, nil
}

// Environments lists, sorted, the environments that have a file in dir:
// the names of its *.yaml, *.yml, *.json and *.toml files other than base.
// It returns an error wrapping fs.ErrNotExist when dir does not exist.
func Environments(dir string) ([]string, error) {
	files, err := scanDir(dir)
	if err != nil {
		return nil, err
	}
	var envs []string
	for stem := range files {
		if stem != "base" {
			envs = append(envs, stem)
		}
	}
	slices.Sort(envs)
	return envs, nil
}

// envKeys reads the environment-variable layer (see WithEnvPrefix).
func envKeys(prefix string) (map[string]any, map[string]Source) {
	prefix += "_"
	flat, src := map[string]any{}, map[string]Source{}
	for _, kv := range os.Environ() {
		name, val, _ := strings.Cut(kv, "=")
		if name == "LOAM_ENV" || len(name) <= len(prefix) || !strings.HasPrefix(name, prefix) {
			continue
		}
		key := strings.ToLower(strings.ReplaceAll(name[len(prefix):], "__", "."))
		flat[key], src[key] = val, Source{Kind: SourceEnv, Name: name}
	}
	return flat, src
}

// flagKeys reads the flag layer (see WithFlags).
func flagKeys(fs *flag.FlagSet, sc *schema) (map[string]any, map[string]Source) {
	flat, src := map[string]any{}, map[string]Source{}
	fs.Visit(func(f *flag.Flag) {
		_, known := sc.nodes[f.Name]
		if f.Name == "env" || !known && !strings.Contains(f.Name, ".") {
			return
		}
		flat[f.Name], src[f.Name] = f.Value.String(), Source{Kind: SourceFlag, Name: "--" + f.Name}
	})
	return flat, src
}

// treeProvider hands an already parsed tree to koanf.
type treeProvider map[string]any

func (p treeProvider) ReadBytes() ([]byte, error) {
	return nil, errors.New("config: treeProvider has no bytes")
}

func (p treeProvider) Read() (map[string]any, error) { return p, nil }
