package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/loamhq/loam/proto/loam/options"
	optionsv1 "github.com/loamhq/loam/proto/loam/options/v1"
)

const catalogUsage = `Usage:
  loam catalog [--image FILE] [--out BASE] [--check] [DIR]

Writes the service catalog of the contracts in DIR (default "proto"):
BASE.md (default catalog.md) for people and BASE.json for tools. It lists
every service with its owner, contact, tier and links, its RPCs with their
access rules, the events it publishes and consumes, and draws, in Mermaid,
which service publishes each event and which services consume it.

Every .proto file under DIR is compiled, with imports resolved from DIR,
then from Loam's own contracts (loam/options/v1/options.proto), then from
the well-known types. With --image, the contracts come from a buf image
instead (buf build -o image.binpb), whose imports are read for their events
only. Events are matched to publishes and consumes by their CloudEvents
type, across every file, imports included.

Problems in the options (a method without an access rule, an event type no
message declares) are shown in the catalog and printed as warnings; buf
lint with Loam's plugin is what fails on them.

--check writes nothing and exits 1 when BASE.md or BASE.json differ from
what the contracts give, so CI notices a catalog that was not regenerated.

Exit status: 0 ok, 1 a stale catalog (--check) or contracts that do not
compile, 2 usage error.
`

// catalog is what `loam catalog` writes, as JSON and as Markdown.
type catalog struct {
	Services []catalogService `json:"services"`
	Events   []catalogEvent   `json:"events"`
	// Problems are the options' problems, each naming its element.
	Problems []string `json:"problems"`
}

// catalogService is one service and its service option, as written.
type catalogService struct {
	Name        string          `json:"name"`
	File        string          `json:"file"`
	Description string          `json:"description,omitempty"`
	Owner       string          `json:"owner,omitempty"`
	Contact     string          `json:"contact,omitempty"`
	Tier        string          `json:"tier,omitempty"`
	DocsURL     string          `json:"docs_url,omitempty"`
	RunbookURL  string          `json:"runbook_url,omitempty"`
	Publishes   []string        `json:"publishes"`
	Consumes    []string        `json:"consumes"`
	Methods     []catalogMethod `json:"methods"`
}

// catalogMethod is one RPC and its access rule, as written.
type catalogMethod struct {
	Name       string `json:"name"`
	FullMethod string `json:"full_method"`
	Request    string `json:"request"`
	Response   string `json:"response"`
	// Streaming is client, server or bidi; empty for a unary method.
	Streaming string `json:"streaming,omitempty"`
	// Access is public, authenticated, permission, or none.
	Access      string `json:"access"`
	Permission  string `json:"permission,omitempty"`
	Condition   string `json:"condition,omitempty"`
	Description string `json:"description,omitempty"`
}

// catalogEvent is one CloudEvents type, the message that declares it, and
// the services that publish and consume it.
type catalogEvent struct {
	Type string `json:"type"`
	// Message is the message that declares the type; empty when none does.
	Message     string   `json:"message,omitempty"`
	File        string   `json:"file,omitempty"`
	KeyField    string   `json:"key_field,omitempty"`
	Description string   `json:"description,omitempty"`
	Publishers  []string `json:"publishers"`
	Consumers   []string `json:"consumers"`
}

// buildCatalog reads the catalog from the contracts: the services of their
// own files, and the events those declare or those services list.
func buildCatalog(c *contracts) catalog {
	cat := catalog{Services: []catalogService{}, Events: []catalogEvent{}, Problems: []string{}}
	problem := func(err error) {
		if err != nil {
			cat.Problems = append(cat.Problems, err.Error())
		}
	}
	events := map[string]*catalogEvent{}
	event := func(typ string) *catalogEvent {
		if events[typ] == nil {
			events[typ] = &catalogEvent{Type: typ, Publishers: []string{}, Consumers: []string{}}
		}
		return events[typ]
	}
	declaredBy := map[string][]protoreflect.MessageDescriptor{}
	for _, m := range c.eventMessages(true) {
		typ := declared[*optionsv1.Event](m.Options(), optionsv1.E_Event).GetType()
		declaredBy[typ] = append(declaredBy[typ], m)
	}
	for _, m := range c.eventMessages(false) {
		_, err := options.Event(m)
		problem(err)
		event(declared[*optionsv1.Event](m.Options(), optionsv1.E_Event).GetType())
	}
	for _, sd := range c.services() {
		if _, err := options.Service(sd); err != nil {
			problem(err)
		}
		opt := declared[*optionsv1.Service](sd.Options(), optionsv1.E_Service)
		s := catalogService{
			Name: string(sd.FullName()), File: sd.ParentFile().Path(), Description: strings.Join(comment(sd), " "),
			Owner: opt.GetOwner(), Contact: opt.GetContact(), Tier: tierName(opt.GetTier()),
			DocsURL: opt.GetDocsUrl(), RunbookURL: opt.GetRunbookUrl(),
			Publishes: append([]string{}, opt.GetPublishes()...), Consumes: append([]string{}, opt.GetConsumes()...),
			Methods: []catalogMethod{},
		}
		for _, typ := range s.Publishes {
			event(typ).Publishers = append(event(typ).Publishers, s.Name)
		}
		for _, typ := range s.Consumes {
			event(typ).Consumers = append(event(typ).Consumers, s.Name)
		}
		methods := sd.Methods()
		for i := range methods.Len() {
			md := methods.Get(i)
			_, err := options.Access(md)
			problem(err)
			a := declared[*optionsv1.Access](md.Options(), optionsv1.E_Access)
			s.Methods = append(s.Methods, catalogMethod{
				Name: string(md.Name()), FullMethod: fullMethod(md),
				Request: string(md.Input().FullName()), Response: string(md.Output().FullName()),
				Streaming: streaming(md), Access: accessMode(a), Permission: a.GetPermission(), Condition: a.GetCondition(),
				Description: firstParagraph(comment(md)),
			})
		}
		cat.Services = append(cat.Services, s)
	}
	for _, typ := range slices.Sorted(maps.Keys(events)) {
		e := events[typ]
		switch msgs := declaredBy[typ]; len(msgs) {
		case 0:
			problem(fmt.Errorf("event type %q: no message declares it with the (loam.options.v1.event) option", typ))
		default:
			if len(msgs) > 1 {
				problem(fmt.Errorf("event type %q: declared by %d messages, %s first", typ, len(msgs), msgs[0].FullName()))
			}
			m := msgs[0]
			e.Message, e.File, e.Description = string(m.FullName()), m.ParentFile().Path(), firstParagraph(comment(m))
			e.KeyField = declared[*optionsv1.Event](m.Options(), optionsv1.E_Event).GetKeyField()
		}
		cat.Events = append(cat.Events, *e)
	}
	return cat
}

// accessMode names the mode of an access rule as written: public,
// authenticated, permission, or none.
func accessMode(a *optionsv1.Access) string {
	switch a.GetRule().(type) {
	case *optionsv1.Access_Public:
		return "public"
	case *optionsv1.Access_Authenticated:
		return "authenticated"
	case *optionsv1.Access_Permission:
		return "permission"
	}
	return "none"
}

// tierName is "critical" for TIER_CRITICAL, "" for TIER_UNSPECIFIED, and
// the number of a tier this Loam does not know.
func tierName(t optionsv1.Tier) string {
	if t == optionsv1.Tier_TIER_UNSPECIFIED {
		return ""
	}
	if name, ok := optionsv1.Tier_name[int32(t)]; ok {
		return strings.ToLower(strings.TrimPrefix(name, "TIER_"))
	}
	return fmt.Sprint(int32(t))
}

// fullMethod is the gRPC name of md, "/package.Service/Method".
func fullMethod(md protoreflect.MethodDescriptor) string {
	return "/" + string(md.Parent().FullName()) + "/" + string(md.Name())
}

func streaming(md protoreflect.MethodDescriptor) string {
	switch {
	case md.IsStreamingClient() && md.IsStreamingServer():
		return "bidi"
	case md.IsStreamingClient():
		return "client"
	case md.IsStreamingServer():
		return "server"
	}
	return ""
}

func firstParagraph(paras []string) string {
	if len(paras) == 0 {
		return ""
	}
	return paras[0]
}

// declared returns the extension xt of opts as written, or nil when it is
// not set.
func declared[T proto.Message](opts proto.Message, xt protoreflect.ExtensionType) T {
	var zero T
	if opts == nil || !proto.HasExtension(opts, xt) {
		return zero
	}
	v, _ := proto.GetExtension(opts, xt).(T)
	return v
}

// markdown renders the catalog for people: a Mermaid diagram of services
// and events, then each service, then the events.
func (cat catalog) markdown() []byte {
	var b bytes.Buffer
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	p("# Service catalog\n\n")
	p("%s and %s, written by `loam catalog` from their contracts. Do not edit this file: run the command again.\n\n",
		plural(len(cat.Services), "service"), plural(len(cat.Events), "event"))

	p("## Dependencies\n\n")
	p("Each service points to the events it publishes, and each event to the services that consume it.\n\n")
	p("```mermaid\nflowchart LR\n")
	for _, s := range cat.Services {
		label := s.Name
		if s.Owner != "" {
			label += "<br/>" + s.Owner
		}
		p("  %s[%q]\n", mermaidID("s", s.Name), mermaidText(label))
	}
	for _, e := range cat.Events {
		p("  %s([%q])\n", mermaidID("e", e.Type), mermaidText(e.Type))
	}
	for _, e := range cat.Events {
		for _, s := range e.Publishers {
			p("  %s -- publishes --> %s\n", mermaidID("s", s), mermaidID("e", e.Type))
		}
		for _, s := range e.Consumers {
			p("  %s -- consumed by --> %s\n", mermaidID("e", e.Type), mermaidID("s", s))
		}
	}
	p("```\n")

	p("\n## Services\n")
	for _, s := range cat.Services {
		p("\n### %s\n\n", s.Name)
		if s.Description != "" {
			p("%s\n\n", s.Description)
		}
		for _, f := range []struct{ name, value string }{
			{"Owner", s.Owner}, {"Contact", s.Contact}, {"Tier", s.Tier},
			{"Docs", s.DocsURL}, {"Runbook", s.RunbookURL},
		} {
			value := f.value
			if value == "" {
				value = "not set"
			}
			p("- **%s:** %s\n", f.name, value)
		}
		p("- **Contract:** `%s`\n", s.File)
		p("- **Publishes:** %s\n", codeList(s.Publishes))
		p("- **Consumes:** %s\n", codeList(s.Consumes))
		p("\n| Method | Access | Condition | Description |\n| --- | --- | --- | --- |\n")
		for _, m := range s.Methods {
			name := "`" + m.Name + "`"
			if m.Streaming != "" {
				name += " (" + m.Streaming + " streaming)"
			}
			access := m.Access
			if m.Permission != "" {
				access += " `" + m.Permission + "`"
			}
			condition := ""
			if m.Condition != "" {
				condition = "`" + m.Condition + "`"
			}
			p("| %s | %s | %s | %s |\n", cell(name), cell(access), cell(condition), cell(m.Description))
		}
	}

	p("\n## Events\n\n")
	if len(cat.Events) == 0 {
		p("None.\n")
	} else {
		p("| Type | Message | Key | Published by | Consumed by |\n| --- | --- | --- | --- | --- |\n")
		for _, e := range cat.Events {
			msg := "not declared"
			if e.Message != "" {
				msg = "`" + e.Message + "`"
			}
			key := "none"
			if e.KeyField != "" {
				key = "`" + e.KeyField + "`"
			}
			p("| `%s` | %s | %s | %s | %s |\n", cell(e.Type), cell(msg), cell(key), cell(codeList(e.Publishers)), cell(codeList(e.Consumers)))
		}
	}
	if len(cat.Problems) > 0 {
		p("\n## Problems\n\n")
		for _, pr := range cat.Problems {
			p("- %s\n", pr)
		}
	}
	return b.Bytes()
}

// json renders the catalog for tools.
func (cat catalog) json() []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false) // conditions hold && and <
	if err := enc.Encode(cat); err != nil {
		panic(err) // the catalog holds only strings and lists of them
	}
	return b.Bytes()
}

func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// codeList renders names as code, comma-separated, or "none".
func codeList(names []string) string {
	if len(names) == 0 {
		return "none"
	}
	return "`" + strings.Join(names, "`, `") + "`"
}

// cell escapes the pipes of a Markdown table cell, code spans included.
func cell(s string) string { return strings.ReplaceAll(s, "|", `\|`) }

// mermaidID is a node ID made of the name's letters and digits.
func mermaidID(kind, name string) string {
	id := []byte(kind + "_")
	for _, c := range []byte(name) {
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' {
			id = append(id, c)
		} else {
			id = append(id, '_')
		}
	}
	return string(id)
}

// mermaidText escapes the quotes of a node label.
func mermaidText(s string) string { return strings.ReplaceAll(s, `"`, "#quot;") }

// catalogCmd is the parsed command line of "loam catalog".
type catalogCmd struct {
	dir, image, out string
	check           bool
	stdout, stderr  io.Writer
}

func runCatalog(args []string, stdout, stderr io.Writer) int {
	c := &catalogCmd{stdout: stdout, stderr: stderr}
	fs := commandFlags("loam catalog", catalogUsage, stderr)
	fs.StringVar(&c.image, "image", "", "read the contracts from this buf image instead of compiling DIR")
	fs.StringVar(&c.out, "out", "catalog", "write BASE.md and BASE.json")
	fs.BoolVar(&c.check, "check", false, "exit 1 when the catalog files are stale")
	positional, code := parseArgs(fs, args)
	if code >= 0 {
		return code
	}
	switch len(positional) {
	case 0:
		c.dir = "proto"
	case 1:
		c.dir = positional[0]
	default:
		fmt.Fprintf(stderr, "loam catalog: at most one directory, got %q\n\n%s", positional, catalogUsage)
		return 2
	}
	if c.image != "" && len(positional) > 0 {
		fmt.Fprintf(stderr, "loam catalog: give a directory or --image, not both\n\n%s", catalogUsage)
		return 2
	}
	return c.run(context.Background())
}

func (c *catalogCmd) run(ctx context.Context) int {
	ct, err := loadContracts(ctx, c.dir, c.image)
	if err != nil {
		fmt.Fprintln(c.stderr, "loam catalog:", err)
		return 1
	}
	cat := buildCatalog(ct)
	for _, p := range cat.Problems {
		fmt.Fprintln(c.stderr, "loam catalog: warning:", p)
	}
	files := []struct {
		path string
		body []byte
	}{{c.out + ".md", cat.markdown()}, {c.out + ".json", cat.json()}}
	if c.check {
		var stale []string
		for _, f := range files {
			if have, err := os.ReadFile(f.path); err != nil || !bytes.Equal(have, f.body) {
				stale = append(stale, f.path)
			}
		}
		if len(stale) > 0 {
			fmt.Fprintf(c.stderr, "loam catalog --check: %s %s not what the contracts give; run: %s\n",
				strings.Join(stale, " and "), map[bool]string{true: "is", false: "are"}[len(stale) == 1], c.command())
			return 1
		}
		fmt.Fprintf(c.stdout, "%s.{md,json} are fresh\n", c.out)
		return 0
	}
	for _, f := range files {
		if err := os.MkdirAll(filepath.Dir(f.path), 0o755); err != nil {
			fmt.Fprintln(c.stderr, "loam catalog:", err)
			return 1
		}
		if err := os.WriteFile(f.path, f.body, 0o644); err != nil {
			fmt.Fprintln(c.stderr, "loam catalog:", err)
			return 1
		}
		fmt.Fprintln(c.stdout, "wrote", f.path)
	}
	return 0
}

// command is the command line that writes the catalog that --check
// compared.
func (c *catalogCmd) command() string {
	cmd := "loam catalog"
	if c.out != "catalog" {
		cmd += " --out " + c.out
	}
	if c.image != "" {
		return cmd + " --image " + c.image
	}
	return cmd + " " + c.dir
}
