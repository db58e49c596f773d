package bench

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"
)

// BenchmarkStacks makes calls of every shape on every stack, for go test
// -bench; cmd/compare runs the interleaved comparison.
func BenchmarkStacks(b *testing.B) {
	env, err := NewEnv()
	if err != nil {
		b.Fatal(err)
	}
	defer env.Close()
	stacks, err := env.Stacks()
	if err != nil {
		b.Fatal(err)
	}
	defer func() {
		for _, st := range stacks {
			st.Stop()
		}
	}()
	for _, sh := range Shapes() {
		for _, st := range stacks {
			b.Run(strings.ReplaceAll(sh.Name+"/"+st.Name, " ", "_"), func(b *testing.B) {
				conn, c, err := client(st)
				if err != nil {
					b.Fatal(err)
				}
				defer conn.Close()
				b.ReportAllocs()
				if sh.Conc == 1 {
					for b.Loop() {
						if err := call(context.Background(), c, sh); err != nil {
							b.Fatal(err)
						}
					}
					return
				}
				b.SetParallelism(max(1, sh.Conc/runtime.GOMAXPROCS(0))) // sh.Conc goroutines
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if err := call(context.Background(), c, sh); err != nil {
							b.Error(err)
							return
						}
					}
				})
			})
		}
	}
}

// TestCompare runs the comparison briefly, to check that every stack
// serves every shape and the table comes out.
func TestCompare(t *testing.T) {
	env, err := NewEnv()
	if err != nil {
		t.Fatal(err)
	}
	defer env.Close()
	stacks, err := env.Stacks()
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		for _, st := range stacks {
			st.Stop()
		}
	}()
	res, err := Compare(t.Context(), stacks, Shapes()[:2], 1, 20*time.Millisecond, nil)
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	Table(&out, res)
	for _, st := range stacks {
		if !strings.Contains(out.String(), st.Name) {
			t.Errorf("table lacks %s:\n%s", st.Name, out.String())
		}
	}
	if n := strings.Count(out.String(), "\n"); n != 2+len(stacks)*2 {
		t.Errorf("table has %d lines, want %d:\n%s", n, 2+len(stacks)*2, out.String())
	}
	fmt.Fprint(t.Output(), out.String())
}
