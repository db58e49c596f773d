// Command demo runs Loam on one machine with nothing else installed: a
// local OpenID Connect issuer, the captures and impact example services on
// loopback ports, sharing one in-memory events bus, and a scenario played
// by real gRPC clients with real tokens. It prints who called what, the
// decision and why, and the trace of each call, then exits 0 when every
// decision was the expected one.
//
//	go run ./examples/cmd/demo            # play the scenario and exit
//	go run ./examples/cmd/demo --serve    # then keep serving, and print tokens and grpcurl commands for both services
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	serve := flag.Bool("serve", false, "keep serving after the scenario, and print tokens and grpcurl commands")
	verbose := flag.Bool("v", false, "also print the service's own log")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var logs io.Writer = io.Discard
	if *verbose {
		logs = os.Stderr
	}
	if err := run(ctx, os.Stdout, logs, *serve); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}
