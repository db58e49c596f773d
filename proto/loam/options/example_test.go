package options_test

import (
	"errors"
	"fmt"
	"strings"

	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"

	"github.com/loamhq/loam/proto/loam/options"
)

// treesProto is trees/v1/trees.proto as protoc hands it to a plugin. In a
// service the descriptor comes from the generated code instead, for example
// capturesv1.File_captures_v1_captures_proto.
const treesProto = `
name: "trees/v1/trees.proto"
package: "trees.v1"
syntax: "proto3"
dependency: "loam/options/v1/options.proto"
message_type { name: "PlantRequest" field { name: "planter_id" number: 1 type: TYPE_STRING json_name: "planterId" } }
service {
  name: "TreeService"
  options { [loam.options.v1.service] { owner: "team-trees" tier: TIER_ESSENTIAL } }
  method {
    name: "Plant" input_type: ".trees.v1.PlantRequest" output_type: ".trees.v1.PlantRequest"
    options { [loam.options.v1.access] { permission: "trees.plant" condition: "request.planter_id == principal.subject" } }
  }
  method { name: "Uproot" input_type: ".trees.v1.PlantRequest" output_type: ".trees.v1.PlantRequest" }
}`

func mustFile(text string) protoreflect.FileDescriptor {
	fdp := new(descriptorpb.FileDescriptorProto)
	if err := prototext.Unmarshal([]byte(text), fdp); err != nil {
		panic(err)
	}
	fd, err := protodesc.NewFile(fdp, protoregistry.GlobalFiles)
	if err != nil {
		panic(err)
	}
	return fd
}

func ExampleAccess() {
	svc := mustFile(treesProto).Services().ByName("TreeService")

	rule, err := options.Access(svc.Methods().ByName("Plant"))
	if err != nil {
		panic(err)
	}
	fmt.Printf("Plant needs %q when %s\n", rule.GetPermission(), rule.GetCondition())

	_, err = options.Access(svc.Methods().ByName("Uproot"))
	fmt.Println(errors.Is(err, options.ErrNotDeclared), err)
	// Output:
	// Plant needs "trees.plant" when request.planter_id == principal.subject
	// true trees.v1.TreeService.Uproot: option (loam.options.v1.access): not declared
}

func ExampleService() {
	svc := mustFile(treesProto).Services().ByName("TreeService")
	info, err := options.Service(svc)
	if err != nil {
		panic(err)
	}
	fmt.Println(info.GetOwner(), info.GetTier())
	// Output: team-trees TIER_ESSENTIAL
}

func ExampleCheck() {
	err := options.Check(mustFile(treesProto))
	fmt.Println(err)
	// Output: trees.v1.TreeService.Uproot: option (loam.options.v1.access): not declared
}

// A tool that files each problem under its own rule, such as a lint
// plugin, tells them apart by Error.Field rather than by the message.
func ExampleError() {
	fd := mustFile(strings.Replace(treesProto, `permission: "trees.plant"`, `permission: "Trees.Plant"`, 1))
	_, err := options.Access(fd.Services().ByName("TreeService").Methods().ByName("Plant"))
	var oerr *options.Error
	if errors.As(err, &oerr) && oerr.Field == "permission" {
		fmt.Println("malformed permission:", oerr.Reason)
	}
	// Output: malformed permission: permission "Trees.Plant" must be dot-separated lower-case segments, resource first, such as "captures.create"
}
