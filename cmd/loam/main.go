// Command loam is the Loam command-line tool for service teams and reviewers.
//
// Usage:
//
//	loam config validate [--env NAME]... [--json] [dir]
//	                  check every file and environment of a config directory,
//	                  with the rules the server applies at start-up
//	loam config explain [--env NAME] [--json] [dir]
//	                  print every effective key, its value and where it was set
//	loam config diff --env A --env B [--fail-on-drift] [--json] [dir]
//	                  show the keys that differ between two environments
//	loam catalog [--image FILE] [--out BASE] [--check] [dir]
//	                  write the service catalog of the contracts in dir, in
//	                  Markdown and JSON
//	loam doctor [--proto DIR] [--config DIR] [--grace D] [--min-score N] [--json] [dir]
//	                  score a service's production readiness
//	loam new service [--module PATH] [--loam DIR] [--generate] NAME [DIR]
//	                  write a new service built on Loam, in a module of its own
//	loam version   print the version of Loam this binary was built from
//	loam help      print this help
//
// "loam config help" details the config commands and their exit codes.
package main

import (
	"fmt"
	"io"
	"os"
	"runtime/debug"
)

const usage = `loam is the command-line tool of the Loam SDK.

Usage:
  loam config validate|explain|diff ...
                 check, explain or compare the configuration of a service
                 ("loam config help" for details)
  loam proto export DIR
                 write Loam's .proto files where a service's buf or protoc
                 finds them ("loam proto help")
  loam dev issuer [flags]
                 run a local OpenID Connect issuer for development
                 ("loam dev help")
  loam catalog [--check] [DIR]
                 write the service catalog of the contracts in DIR: owners,
                 access rules, events and who consumes them ("loam catalog -h")
  loam doctor [--min-score N] [--json] [DIR]
                 score a service's production readiness from its contracts
                 and production configuration ("loam doctor -h")
  loam new service NAME [DIR]
                 write a new service built on Loam: contract, buf config,
                 server, configuration per environment, test, CI script
                 ("loam new help")
  loam version   print the version of Loam this binary was built from
  loam help      print this help
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run executes the command line args and returns the process exit code:
// 0 on success, 1 when a command finds a problem (an invalid configuration),
// 2 on a usage error.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	case "config":
		return runConfig(args[1:], stdout, stderr)
	case "proto":
		return runProto(args[1:], stdout, stderr)
	case "dev":
		return runDev(args[1:], stdout, stderr)
	case "catalog":
		return runCatalog(args[1:], stdout, stderr)
	case "doctor":
		return runDoctor(args[1:], stdout, stderr)
	case "new":
		return runNew(args[1:], stdout, stderr)
	case "version":
		fmt.Fprintln(stdout, "loam", version())
		return 0
	default:
		fmt.Fprintf(stderr, "loam: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
}

// version reports the module version of Loam in the running binary: the
// main module's when loam is built on its own, the dependency's when a
// service builds it as a tool; "(devel)" from a work tree.
func version() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "(devel)"
	}
	m := &info.Main
	for _, d := range info.Deps {
		if m.Path != loamModule && d.Path == loamModule {
			m = d
		}
	}
	if m.Replace != nil || m.Version == "" {
		return "(devel)"
	}
	return m.Version
}

const loamModule = "github.com/loamhq/loam"
