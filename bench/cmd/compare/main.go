// Command compare prints the comparison of the full Loam stack with bare
// grpc-go and a hand-assembled peer stack, as a Markdown table.
//
//	go run ./cmd/compare [-rounds 5] [-d 300ms]
//
// Run it from the bench module (cd bench). It takes rounds × shapes ×
// stacks × d, about three minutes with the defaults.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"runtime"
	"time"

	"github.com/loamhq/loam/bench"
)

func main() {
	rounds := flag.Int("rounds", 5, "interleaved rounds; the table gives the median ratio")
	d := flag.Duration("d", 300*time.Millisecond, "time measured per stack, shape and round")
	flag.Parse()
	if err := run(*rounds, *d); err != nil {
		fmt.Fprintln(os.Stderr, "compare:", err)
		os.Exit(1)
	}
}

func run(rounds int, d time.Duration) error {
	env, err := bench.NewEnv()
	if err != nil {
		return err
	}
	defer env.Close()
	stacks, err := env.Stacks()
	if err != nil {
		return err
	}
	defer func() {
		for _, st := range stacks {
			st.Stop()
		}
	}()
	fmt.Fprintf(os.Stderr, "%d stacks × %d shapes × %d rounds × %s, %s %s/%s, GOMAXPROCS=%d\n",
		len(stacks), len(bench.Shapes()), rounds, d, runtime.Version(), runtime.GOOS, runtime.GOARCH, runtime.GOMAXPROCS(0))
	res, err := bench.Compare(context.Background(), stacks, bench.Shapes(), rounds, d, os.Stderr)
	if err != nil {
		return err
	}
	bench.Table(os.Stdout, res)
	return nil
}
