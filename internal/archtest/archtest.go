// Package archtest enforces the dependency direction of Loam's packages.
//
// Loam's packages stand on floors (ARCHITECTURE.md has the map): proto
// contracts at 0; telemetry and config at 1; authn, authz, cache and events
// at 2; service at 3; the commands at 4; examples at 5. An import may only
// point to a lower floor. Packages on the same floor do not import each
// other, with one allowed arrow: authz reads the principal from authn.
// Sub-packages (events/driver, authn/internal/...) belong to the component
// above them and may import each other freely.
//
// The test in this package reads the real import graph with `go list`,
// including test imports, and fails on any upward or sideways import and on
// any package that has no floor yet, so that a new package must be placed
// on the map before it can land.
package archtest

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"sort"
	"strings"
)

// Floors maps each component, a path relative to the module root, to its
// floor. A package belongs to the longest component that is a prefix of its
// path.
var Floors = map[string]int{
	"proto":               0,
	"internal/archtest":   0,
	"internal/contracts":  0,
	"internal/devissuer":  0,
	"internal/stubserver": 0,
	"internal/testenv":    0,
	"telemetry":           1,
	"config":              1,
	"authn":               2,
	"authz":               2,
	"cache":               2,
	"events":              2,
	"service":             3,
	"cmd/loam":            4,
	"loamtest":            4,
	"examples":            5,
	"reliability":         5,
}

// Allowed lists the sideways arrows between components on the same floor
// that the design permits, as "from -> to".
var Allowed = map[string]bool{
	"authz -> authn": true,
}

// Package is the part of `go list -json` output that the check reads.
type Package struct {
	ImportPath   string
	Imports      []string
	TestImports  []string
	XTestImports []string
}

// List runs `go list` on every package of the module in dir.
func List(dir string) ([]Package, error) {
	cmd := exec.Command("go", "list", "-e", "-json=ImportPath,Imports,TestImports,XTestImports", "./...")
	cmd.Dir = dir
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("go list in %s: %v: %s", dir, err, stderr.String())
	}
	var pkgs []Package
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for {
		var p Package
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			return pkgs, nil
		} else if err != nil {
			return nil, fmt.Errorf("decoding go list output: %v", err)
		}
		pkgs = append(pkgs, p)
	}
}

// Check returns one line for every import in pkgs that breaks the floors,
// and for every package of module that has no floor, sorted.
func Check(module string, pkgs []Package) []string {
	var problems []string
	for _, p := range pkgs {
		from, ok := component(module, p.ImportPath)
		if !ok {
			continue
		}
		fromFloor, placed := Floors[from]
		if !placed {
			problems = append(problems, fmt.Sprintf("%s has no floor: add it to archtest.Floors and ARCHITECTURE.md", p.ImportPath))
			continue
		}
		seen := map[string]bool{}
		for _, imports := range []struct {
			kind  string
			paths []string
		}{{"imports", p.Imports}, {"test imports", p.TestImports}, {"test imports", p.XTestImports}} {
			for _, imp := range imports.paths {
				to, ok := component(module, imp)
				if !ok || to == from || seen[imp] {
					continue
				}
				seen[imp] = true
				toFloor, placed := Floors[to]
				switch {
				case !placed:
					// Reported when the imported package itself is checked.
				case toFloor > fromFloor:
					problems = append(problems, fmt.Sprintf("%s (floor %d) %s %s (floor %d): imports must point down", p.ImportPath, fromFloor, imports.kind, imp, toFloor))
				case toFloor == fromFloor && !Allowed[from+" -> "+to]:
					problems = append(problems, fmt.Sprintf("%s (floor %d) %s %s (same floor): packages on one floor do not import each other", p.ImportPath, fromFloor, imports.kind, imp))
				}
			}
		}
	}
	sort.Strings(problems)
	return problems
}

// component returns the component of importPath within module, or false
// when importPath is outside the module.
func component(module, importPath string) (string, bool) {
	rel, ok := strings.CutPrefix(importPath, module+"/")
	if !ok {
		return "", false
	}
	best := ""
	for c := range Floors {
		if (rel == c || strings.HasPrefix(rel, c+"/")) && len(c) > len(best) {
			best = c
		}
	}
	if best == "" {
		// Unplaced: name it by its first two segments under internal/ and
		// cmd/, its first segment elsewhere.
		parts := strings.Split(rel, "/")
		n := 1
		if (parts[0] == "internal" || parts[0] == "cmd") && len(parts) > 1 {
			n = 2
		}
		return strings.Join(parts[:n], "/"), true
	}
	return best, true
}
