// Package parse turns the bytes of one configuration file into a nested key
// tree, with the line of every key where the format's parser gives it.
//
// It wraps koanf's parsers (YAML, JSON, TOML) and adds two things they do
// not give: the line of every YAML key, read from go.yaml.in/yaml/v3 nodes,
// and syntax errors that carry the line number as a field.
package parse

import (
	"encoding/json"
	"errors"
	"regexp"
	"strconv"
	"strings"

	koanfjson "github.com/knadh/koanf/parsers/json"
	koanftoml "github.com/knadh/koanf/parsers/toml/v2"
	koanfyaml "github.com/knadh/koanf/parsers/yaml"
	"github.com/pelletier/go-toml/v2"
	"go.yaml.in/yaml/v3"
)

// Exts lists the file extensions a configuration file may have, in the order
// they are looked for.
var Exts = []string{"yaml", "yml", "json", "toml"}

// SyntaxError is a file that does not parse. Line is 0 when the parser does
// not say where.
type SyntaxError struct {
	Line int
	Msg  string
}

func (e *SyntaxError) Error() string { return e.Msg }

// Bytes parses data in the format named by ext (one of Exts). It returns the
// nested tree and, for YAML, the line of every key path (section keys
// included); lines is nil for JSON and TOML. An empty file is an empty tree.
// A parse failure, duplicate keys included where the parser reports them, is
// a *SyntaxError.
func Bytes(ext string, data []byte) (tree map[string]any, lines map[string]int, err error) {
	switch ext {
	case "yaml", "yml":
		tree, err = koanfyaml.Parser().Unmarshal(data)
		if err != nil {
			return nil, nil, yamlError(err)
		}
		var doc yaml.Node
		if err := yaml.Unmarshal(data, &doc); err != nil {
			return nil, nil, yamlError(err)
		}
		lines = map[string]int{}
		if len(doc.Content) > 0 {
			yamlLines(doc.Content[0], "", lines)
		}
	case "json":
		if len(strings.TrimSpace(string(data))) == 0 {
			break
		}
		tree, err = koanfjson.Parser().Unmarshal(data)
		if err != nil {
			return nil, nil, jsonError(data, err)
		}
	case "toml":
		tree, err = koanftoml.Parser().Unmarshal(data)
		if err != nil {
			return nil, nil, tomlError(err)
		}
	default:
		return nil, nil, &SyntaxError{Msg: "unsupported file extension " + strconv.Quote(ext)}
	}
	if tree == nil {
		tree = map[string]any{}
	}
	return tree, lines, nil
}

// yamlLines records the line of every mapping key below n.
func yamlLines(n *yaml.Node, prefix string, lines map[string]int) {
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	if n.Kind != yaml.MappingNode {
		return
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		path := k.Value
		if prefix != "" {
			path = prefix + "." + k.Value
		}
		lines[path] = k.Line
		yamlLines(v, path, lines)
	}
}

var yamlLine = regexp.MustCompile(`line (\d+): `)

func yamlError(err error) error {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	msg = strings.ReplaceAll(msg, "\n ", "")
	e := &SyntaxError{Msg: "YAML: " + msg}
	if m := yamlLine.FindStringSubmatchIndex(msg); m != nil {
		e.Line, _ = strconv.Atoi(msg[m[2]:m[3]])
		if m[0] == 0 || strings.HasPrefix(msg, "unmarshal errors:") {
			e.Msg = "YAML: " + strings.TrimPrefix(msg[m[1]:], "unmarshal errors:")
		}
	}
	return e
}

func jsonError(data []byte, err error) error {
	e := &SyntaxError{Msg: "JSON: " + err.Error()}
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		e.Line = lineAt(data, se.Offset)
	case errors.As(err, &te):
		e.Line = lineAt(data, te.Offset)
	}
	return e
}

func lineAt(data []byte, offset int64) int {
	offset = min(max(offset, 0), int64(len(data)))
	return 1 + strings.Count(string(data[:offset]), "\n")
}

func tomlError(err error) error {
	e := &SyntaxError{Msg: "TOML: " + strings.TrimPrefix(err.Error(), "toml: ")}
	var de *toml.DecodeError
	if errors.As(err, &de) {
		e.Line, _ = de.Position()
	}
	return e
}
