package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/bufbuild/protocompile"
	"github.com/bufbuild/protocompile/protoutil"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"

	loamproto "github.com/loamhq/loam/proto"
	optionsv1 "github.com/loamhq/loam/proto/loam/options/v1"
)

// contracts are the compiled .proto files that catalog and doctor read.
type contracts struct {
	// files are every file, imports included, in dependency order.
	files []protoreflect.FileDescriptor
	// own holds the paths of the files read from the directory, or of the
	// files of an image that buf did not mark as imports: the files whose
	// services and events the commands report on.
	own map[string]bool
}

// loadContracts compiles every .proto file under dir, resolving imports
// from dir, then from Loam's own .proto files (loamproto.Files), then from
// the well-known types. When image is set, it reads the buf image (or
// FileDescriptorSet) in that file instead, in binary form, as `buf build
// -o image.binpb` writes it.
//
// Either way the descriptors are decoded again with Loam's options linked
// in, so that the options read as the generated types that package options
// checks, as they do in a Loam server.
func loadContracts(ctx context.Context, dir, image string) (*contracts, error) {
	var (
		set *descriptorpb.FileDescriptorSet
		own = map[string]bool{}
		err error
	)
	if image != "" {
		set, err = readImage(image)
		for _, f := range set.GetFile() {
			if !bufImport(f) {
				own[f.GetName()] = true
			}
		}
	} else {
		var paths []string
		set, paths, err = compile(ctx, dir)
		for _, p := range paths {
			own[p] = true
		}
	}
	if err != nil {
		return nil, err
	}
	// Decode again from bytes: a compiler may hold Loam's extensions as
	// unknown fields or as its own dynamic types, which package options
	// does not read.
	b, err := proto.Marshal(set)
	if err != nil {
		return nil, err
	}
	set = new(descriptorpb.FileDescriptorSet)
	if err := proto.Unmarshal(b, set); err != nil {
		return nil, err
	}
	reg, err := protodesc.NewFiles(set)
	if err != nil {
		return nil, fmt.Errorf("linking the contracts: %w", err)
	}
	c := &contracts{own: own}
	for _, fdp := range set.GetFile() {
		fd, err := reg.FindFileByPath(fdp.GetName())
		if err != nil {
			return nil, err
		}
		c.files = append(c.files, fd)
	}
	return c, nil
}

// readImage reads a binary buf image or FileDescriptorSet.
func readImage(path string) (*descriptorpb.FileDescriptorSet, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	set := new(descriptorpb.FileDescriptorSet)
	if err := proto.Unmarshal(b, set); err != nil {
		return nil, fmt.Errorf("%s: not a binary buf image or FileDescriptorSet: %w", path, err)
	}
	if len(set.GetFile()) == 0 {
		return nil, fmt.Errorf("%s: holds no file", path)
	}
	return set, nil
}

// bufImport reports whether buf marked f, a file of a buf image, as an
// import: buf's ImageFile is a FileDescriptorProto with an extension
// message in field 8042 whose field 1 is is_import. A plain
// FileDescriptorSet has no such field, and every file counts as the
// contracts' own.
func bufImport(f *descriptorpb.FileDescriptorProto) bool {
	const imageFileExtension, isImport = 8042, 1
	ext, typ := lastField(f.ProtoReflect().GetUnknown(), imageFileExtension)
	if typ != protowire.BytesType {
		return false
	}
	ext, _ = protowire.ConsumeBytes(ext)
	v, typ := lastField(ext, isImport)
	if typ != protowire.VarintType {
		return false
	}
	x, n := protowire.ConsumeVarint(v)
	return n > 0 && x != 0
}

// lastField returns the value of the last occurrence of field num in the
// wire-format b, as encoded, and its wire type; a type of -1 when b has no
// such field or does not parse.
func lastField(b []byte, num protowire.Number) ([]byte, protowire.Type) {
	var (
		value []byte
		typ   protowire.Type = -1
	)
	for len(b) > 0 {
		n, t, l := protowire.ConsumeTag(b)
		if l < 0 {
			return nil, -1
		}
		m := protowire.ConsumeFieldValue(n, t, b[l:])
		if m < 0 {
			return nil, -1
		}
		if n == num {
			value, typ = b[l:l+m], t
		}
		b = b[l+m:]
	}
	return value, typ
}

// compile compiles every .proto file under dir and returns them with their
// imports, in dependency order, and the paths of the files found in dir.
func compile(ctx context.Context, dir string) (*descriptorpb.FileDescriptorSet, []string, error) {
	paths, err := protoFiles(dir)
	if err != nil {
		return nil, nil, err
	}
	if len(paths) == 0 {
		return nil, nil, fmt.Errorf("%s: no .proto file", dir)
	}
	compiler := protocompile.Compiler{
		Resolver: protocompile.WithStandardImports(protocompile.CompositeResolver{
			&protocompile.SourceResolver{ImportPaths: []string{dir}},
			&protocompile.SourceResolver{Accessor: func(path string) (io.ReadCloser, error) {
				return loamproto.Files.Open(path)
			}},
		}),
		SourceInfoMode: protocompile.SourceInfoStandard,
	}
	files, err := compiler.Compile(ctx, paths...)
	if err != nil {
		return nil, nil, err
	}
	set := &descriptorpb.FileDescriptorSet{}
	seen := map[string]bool{}
	var add func(protoreflect.FileDescriptor)
	add = func(f protoreflect.FileDescriptor) {
		if seen[f.Path()] {
			return
		}
		seen[f.Path()] = true
		imports := f.Imports()
		for i := range imports.Len() {
			add(imports.Get(i).FileDescriptor)
		}
		set.File = append(set.File, protoutil.ProtoFromFileDescriptor(f))
	}
	for _, f := range files {
		add(f)
	}
	return set, paths, nil
}

// protoFiles lists the .proto files under dir, as import paths relative to
// it, sorted.
func protoFiles(dir string) ([]string, error) {
	var paths []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() || filepath.Ext(path) != ".proto" {
			return nil
		}
		rel, err := filepath.Rel(dir, path)
		if err != nil {
			return err
		}
		paths = append(paths, filepath.ToSlash(rel))
		return nil
	})
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w", dir, fs.ErrNotExist)
	}
	slices.Sort(paths)
	return paths, err
}

// services returns the services of the contracts' own files, sorted by
// full name.
func (c *contracts) services() []protoreflect.ServiceDescriptor {
	var out []protoreflect.ServiceDescriptor
	for _, f := range c.files {
		if !c.own[f.Path()] {
			continue
		}
		for i := range f.Services().Len() {
			out = append(out, f.Services().Get(i))
		}
	}
	slices.SortFunc(out, func(a, b protoreflect.ServiceDescriptor) int {
		return strings.Compare(string(a.FullName()), string(b.FullName()))
	})
	return out
}

// eventMessages returns the messages, nested ones included, that carry
// the event option, in every file when all is set, else in the
// contracts' own.
func (c *contracts) eventMessages(all bool) []protoreflect.MessageDescriptor {
	var out []protoreflect.MessageDescriptor
	var walk func(protoreflect.MessageDescriptors)
	walk = func(msgs protoreflect.MessageDescriptors) {
		for i := range msgs.Len() {
			m := msgs.Get(i)
			if proto.HasExtension(m.Options(), optionsv1.E_Event) {
				out = append(out, m)
			}
			walk(m.Messages())
		}
	}
	for _, f := range c.files {
		if all || c.own[f.Path()] {
			walk(f.Messages())
		}
	}
	return out
}

// comment returns the paragraphs of the leading comment of d, each joined
// into one line; none when d has no comment or its file no source
// locations.
func comment(d protoreflect.Descriptor) []string {
	text := d.ParentFile().SourceLocations().ByDescriptor(d).LeadingComments
	var paras []string
	for _, p := range strings.Split(strings.TrimSpace(text), "\n\n") {
		if p = strings.Join(strings.Fields(p), " "); p != "" {
			paras = append(paras, p)
		}
	}
	return paras
}
