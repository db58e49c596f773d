// Package scaffold writes the files of a new service built on Loam: its
// contract, generated-code and lint configuration, server, configuration
// per environment, test, README and CI script. `loam new service` runs it.
//
// # Templates
//
// The files are text/template templates embedded from templates/, one per
// file of the service, at the path they are written to with ".tmpl"
// appended; "NAME" in a path is replaced by the service's name. Files
// named "*.sh.tmpl" are written executable without the ".sh".
//
// # The tools module
//
// The service runs buf, the protoc plugins, buf-plugin-loam and the loam
// command as tools of its own tools module (tools/go.mod), pinned at the
// versions of Loam's: loamtools.mod.txt is a copy of Loam's tools/go.mod,
// and a test fails when the two differ.
package scaffold

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"text/template"

	"github.com/loamhq/loam/service"
)

//go:embed all:templates
var templates embed.FS

// loamTools is Loam's tools/go.mod, whose go version and requirements the
// service's tools module takes.
//
//go:embed loamtools.mod.txt
var loamTools string

// LoamModule is the module path of Loam, and PluginModule that of its buf
// plugin, released with the same version.
const (
	LoamModule   = "github.com/loamhq/loam"
	PluginModule = LoamModule + "/cmd/buf-plugin-loam"
)

// develVersion is the version a module required through a replace gets.
const develVersion = "v0.0.0-00010101000000-000000000000"

// Params says what service to write.
type Params struct {
	// Name is the service's name: a lower-case identifier (letters, digits
	// and single underscores between them), used for the proto package
	// NAME.v1, the permissions NAME.create and NAME.read and the audience
	// NAME-api.
	Name string
	// Module is the Go module path of the service; empty means
	// example.com/NAME.
	Module string
	// LoamDir, when set, is the absolute directory of a Loam work tree that
	// the service and its tools module use through replace directives,
	// instead of LoamVersion.
	LoamDir string
	// LoamVersion is the version of Loam (and of its buf plugin) that the
	// service requires when LoamDir is empty.
	LoamVersion string
}

var namePattern = regexp.MustCompile(`^[a-z][a-z0-9]*(_[a-z0-9]+)*$`)

// modulePattern is a loose check of a module path: it refuses what go mod
// would reject outright, such as spaces, and leaves finer rules to go.
var modulePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._~-]*(/[A-Za-z0-9._~-]+)*$`)

// Validate reports what is wrong with p, naming the field.
func (p Params) Validate() error {
	if !namePattern.MatchString(p.Name) || len(p.Name) > 40 {
		return fmt.Errorf("service name %q: want a lower-case identifier of at most 40 characters, "+
			"letters and digits with single underscores between them, starting with a letter (such as orders or order_history)", p.Name)
	}
	if p.Module != "" && !modulePattern.MatchString(p.Module) {
		return fmt.Errorf("module path %q: not a Go module path such as example.com/%s", p.Module, p.Name)
	}
	if p.LoamDir != "" && !filepath.IsAbs(p.LoamDir) {
		return fmt.Errorf("Loam directory %q: want an absolute path", p.LoamDir)
	}
	if p.LoamDir == "" && !strings.HasPrefix(p.LoamVersion, "v") {
		return fmt.Errorf("Loam version %q: want a released version such as v0.3.0, or a Loam work tree to replace it with", p.LoamVersion)
	}
	return nil
}

// data is what the templates see.
type data struct {
	Name         string // orders, order_history
	Title        string // Orders, OrderHistory
	GoName       string // orders, orderhistory: the generated package is GoName+"v1"
	EnvPrefix    string // ORDERS, ORDER_HISTORY
	Module       string
	EventPrefix  string // com.example.orders.v1
	GoVersion    string
	LoamVersion  string
	LoamDir      string
	ToolsRequire []string
}

func newData(p Params) (data, error) {
	d := data{Name: p.Name, Module: p.Module, LoamDir: p.LoamDir, LoamVersion: p.LoamVersion}
	if d.Module == "" {
		d.Module = "example.com/" + p.Name
	}
	if d.LoamDir != "" {
		d.LoamVersion = develVersion
	}
	for w := range strings.SplitSeq(p.Name, "_") {
		d.Title += strings.ToUpper(w[:1]) + w[1:]
	}
	d.GoName = strings.ReplaceAll(p.Name, "_", "")
	d.EnvPrefix = service.EnvPrefix(p.Name) // as service.Run reads it
	host, _, _ := strings.Cut(d.Module, "/")
	if strings.Contains(host, ".") {
		parts := strings.Split(host, ".")
		for i, j := 0, len(parts)-1; i < j; i, j = i+1, j-1 {
			parts[i], parts[j] = parts[j], parts[i]
		}
		d.EventPrefix = strings.ToLower(strings.Join(parts, ".")) + "."
	}
	d.EventPrefix += p.Name + ".v1"
	var err error
	d.GoVersion, d.ToolsRequire, err = ToolsRequirements()
	return d, err
}

// ToolsRequirements returns the go version and the requirements of Loam's
// tools module, other than Loam's own modules, as "path version" lines
// with their comments: what the service's tools module requires.
func ToolsRequirements() (goVersion string, require []string, err error) {
	in := false
	for line := range strings.Lines(loamTools) {
		line = strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(line, "go "):
			goVersion = strings.TrimPrefix(line, "go ")
		case line == "require (":
			in = true
		case in && line == ")":
			in = false
		case in && line != "" && !strings.HasPrefix(line, LoamModule+" ") && !strings.HasPrefix(line, PluginModule+" "):
			require = append(require, line)
		}
	}
	if goVersion == "" || len(require) == 0 {
		return "", nil, errors.New("scaffold: the embedded copy of Loam's tools/go.mod has no go line or no require block")
	}
	return goVersion, require, nil
}

// ErrNotEmpty is returned by Write for a directory that holds files.
var ErrNotEmpty = errors.New("directory is not empty")

// Write writes the service's files into dir, which must be empty or not
// exist, and returns their paths relative to dir, in the order written.
// It writes nothing when p is invalid or dir holds anything.
func Write(dir string, p Params) ([]string, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	d, err := newData(p)
	if err != nil {
		return nil, err
	}
	switch entries, err := os.ReadDir(dir); {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, err
	case len(entries) > 0:
		return nil, fmt.Errorf("%s: %w (it holds %s); choose a new or empty directory", dir, ErrNotEmpty, entries[0].Name())
	}
	files, err := render(d)
	if err != nil {
		return nil, err
	}
	var written []string
	for _, f := range files {
		path := filepath.Join(dir, filepath.FromSlash(f.path))
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return written, err
		}
		if err := os.WriteFile(path, f.body, f.mode); err != nil {
			return written, err
		}
		written = append(written, f.path)
	}
	return written, nil
}

type file struct {
	path string
	body []byte
	mode fs.FileMode
}

// render executes every template with d.
func render(d data) ([]file, error) {
	var files []file
	err := fs.WalkDir(templates, "templates", func(name string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		if !strings.HasSuffix(name, ".tmpl") {
			return fmt.Errorf("scaffold: template %s does not end in .tmpl", name)
		}
		src, err := templates.ReadFile(name)
		if err != nil {
			return err
		}
		t, err := template.New(path.Base(name)).Option("missingkey=error").Parse(string(src))
		if err != nil {
			return fmt.Errorf("scaffold: %w", err)
		}
		var b bytes.Buffer
		if err := t.Execute(&b, d); err != nil {
			return fmt.Errorf("scaffold: %w", err)
		}
		rel := strings.TrimSuffix(strings.TrimPrefix(name, "templates/"), ".tmpl")
		rel = strings.ReplaceAll(rel, "NAME", d.Name)
		mode := fs.FileMode(0o644)
		if strings.HasSuffix(rel, ".sh") {
			rel, mode = strings.TrimSuffix(rel, ".sh"), 0o755
		}
		files = append(files, file{path: rel, body: b.Bytes(), mode: mode})
		return nil
	})
	return files, err
}
