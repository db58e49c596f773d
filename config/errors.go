package config

import (
	"fmt"
	"strconv"
	"strings"
)

// SourceKind names the layer that supplied a value.
type SourceKind int

// The layers, from lowest to highest precedence. SourceUnset means no layer
// set the key: it holds the zero value of its type.
const (
	SourceUnset SourceKind = iota
	SourceDefault
	SourceFile
	SourceEnv
	SourceFlag
)

// String returns "unset", "default", "file", "env" or "flag".
func (k SourceKind) String() string {
	switch k {
	case SourceDefault:
		return "default"
	case SourceFile:
		return "file"
	case SourceEnv:
		return "env"
	case SourceFlag:
		return "flag"
	default:
		return "unset"
	}
}

// Source says where a value came from.
type Source struct {
	Kind SourceKind
	// Name is the file path (as joined from the directory, e.g.
	// "config/base.yaml"), the environment variable name, or the flag name
	// with its dashes ("--service.port"). Empty for defaults and unset keys.
	Name string
	// Line is the 1-based line in the file, or 0 when the parser does not
	// give it (JSON and TOML keys, and every layer but files).
	Line int
}

// String renders the source as in Explain output: "default",
// "file config/base.yaml:12", "env CAPTURES_SERVICE__PORT",
// "flag --service.port" or "unset".
func (s Source) String() string {
	if s.Name == "" {
		return s.Kind.String()
	}
	return s.Kind.String() + " " + s.location()
}

// location is the source without its kind for files: "config/base.yaml:12".
func (s Source) location() string {
	if s.Line > 0 {
		return s.Name + ":" + strconv.Itoa(s.Line)
	}
	return s.Name
}

// where is how an error message names the source.
func (s Source) where() string {
	if s.Kind == SourceFile {
		return s.location()
	}
	return s.String()
}

// FieldError is one problem found while loading: a key that is unknown,
// holds a value of the wrong type, fails validation or names a secret file
// that cannot be read, or a file that does not parse or, while Watch runs,
// was deleted or emptied.
type FieldError struct {
	// Path is the key path, like "service.port"; empty for a problem with a
	// whole file (a syntax error, a file deleted while watching).
	Path string
	// Source is the layer that supplied the bad value; its Kind is
	// SourceUnset when no layer did (a required key that is missing).
	Source Source
	// Msg says what is wrong, without the path or the source.
	Msg string
}

// Error renders the problem as
// "service.port: 70000 is above the maximum 65535 (set by config/production.yaml:4)",
// or "config/base.yaml:3: YAML: ..." for a file that does not parse.
func (e FieldError) Error() string {
	switch {
	case e.Path == "":
		return e.Source.where() + ": " + e.Msg
	case e.Source.Kind == SourceUnset:
		return e.Path + ": " + e.Msg
	default:
		return fmt.Sprintf("%s: %s (set by %s)", e.Path, e.Msg, e.Source.where())
	}
}

// Error is returned by Load, Explain and Watch when the configuration is
// invalid. It holds every problem found, not only the first: syntax errors
// of every file, unknown keys, type errors and validation errors. Retrieve
// it with errors.As. I/O failures (an unreadable directory) and context
// errors are returned as they are, not as *Error.
type Error struct {
	// Environment is the environment that was loaded, e.g. "production".
	Environment string
	// Fields lists the problems, file-level problems first, then by path.
	Fields []FieldError
}

// Error lists every problem, one per line after a summary line.
func (e *Error) Error() string {
	var b strings.Builder
	if len(e.Fields) == 1 {
		fmt.Fprintf(&b, "config: environment %s: %s", e.Environment, e.Fields[0].Error())
		return b.String()
	}
	fmt.Fprintf(&b, "config: environment %s: %d problems:", e.Environment, len(e.Fields))
	for _, f := range e.Fields {
		b.WriteString("\n\t")
		b.WriteString(f.Error())
	}
	return b.String()
}
