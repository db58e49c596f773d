// Package bench compares the full Loam stack with bare grpc-go and with
// the stack a team would assemble by hand from go-grpc-middleware, go-oidc,
// otelgrpc and grpc-go's authz, in one process and one run. It is its own
// module, so that the peer stack's dependencies never enter Loam's go.mod.
//
// Run prints the comparison as a Markdown table; README.md has the method.
package bench

import (
	"context"
	"fmt"
	"io"
	"runtime"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"
)

// Shape is the kind of call measured.
type Shape struct {
	Name   string
	Stream bool // server streaming with StreamMessages responses, else unary
	Size   int  // payload bytes of each response
	Conc   int  // concurrent callers, over one connection
}

// StreamMessages is the number of responses of a server-streaming call.
const StreamMessages = 10

// Shapes are the calls of the comparison: unary and server streaming,
// 16 B and 1 KiB, one caller and 64.
func Shapes() []Shape {
	var out []Shape
	for _, stream := range []bool{false, true} {
		for _, size := range []int{16, 1024} {
			for _, conc := range []int{1, 64} {
				kind := "unary"
				if stream {
					kind = "stream"
				}
				out = append(out, Shape{Name: fmt.Sprintf("%s %dB c=%d", kind, size, conc), Stream: stream, Size: size, Conc: conc})
			}
		}
	}
	return out
}

// Sample is one measurement of one stack and shape.
type Sample struct {
	Calls        int
	Elapsed      time.Duration
	Latencies    []time.Duration // sorted
	Allocs, Byte uint64          // per call, client and server together
}

// Rate is calls per second.
func (s Sample) Rate() float64 { return float64(s.Calls) / s.Elapsed.Seconds() }

// Quantile returns the q-th latency.
func (s Sample) Quantile(q float64) time.Duration {
	if len(s.Latencies) == 0 {
		return 0
	}
	return s.Latencies[min(len(s.Latencies)-1, int(q*float64(len(s.Latencies))))]
}

// bearer sends a fixed token.
type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}
func (bearer) RequireTransportSecurity() bool { return false }

// client is a plain grpc-go client of a stack, the same for every stack.
func client(st *Stack) (*grpc.ClientConn, testpb.TestServiceClient, error) {
	opts := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	if st.Token != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(bearer(st.Token)))
	}
	conn, err := grpc.NewClient(st.Addr, opts...)
	if err != nil {
		return nil, nil, err
	}
	return conn, testpb.NewTestServiceClient(conn), nil
}

// callTimeout is the deadline of every call, as grpc-go recommends and
// Loam's Dial sets by default: a server then never needs one of its own.
const callTimeout = 10 * time.Second

// call makes one call of shape sh.
func call(ctx context.Context, c testpb.TestServiceClient, sh Shape) error {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	if !sh.Stream {
		_, err := c.UnaryCall(ctx, &testpb.SimpleRequest{ResponseSize: int32(sh.Size)})
		return err
	}
	params := make([]*testpb.ResponseParameters, StreamMessages)
	for i := range params {
		params[i] = &testpb.ResponseParameters{Size: int32(sh.Size)}
	}
	st, err := c.StreamingOutputCall(ctx, &testpb.StreamingOutputCallRequest{ResponseParameters: params})
	if err != nil {
		return err
	}
	for {
		if _, err := st.Recv(); err == io.EOF {
			return nil
		} else if err != nil {
			return err
		}
	}
}

// Measure runs shape sh against c for d (after a short warm-up) and
// returns what it saw. A failed call fails the measure: every stack must
// accept the calls it is given.
func Measure(ctx context.Context, c testpb.TestServiceClient, sh Shape, d time.Duration) (Sample, error) {
	warm, cancel := context.WithTimeout(ctx, d/5)
	_, err := run(warm, c, sh)
	cancel()
	if err != nil {
		return Sample{}, err
	}
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	timed, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	start := time.Now()
	lat, err := run(timed, c, sh)
	elapsed := time.Since(start)
	runtime.ReadMemStats(&after)
	if err != nil {
		return Sample{}, err
	}
	slices.Sort(lat)
	n := uint64(max(1, len(lat)))
	return Sample{
		Calls: len(lat), Elapsed: elapsed, Latencies: lat,
		Allocs: (after.Mallocs - before.Mallocs) / n, Byte: (after.TotalAlloc - before.TotalAlloc) / n,
	}, nil
}

// run calls until ctx ends, with sh.Conc callers, and returns the latency
// of every call that completed.
func run(ctx context.Context, c testpb.TestServiceClient, sh Shape) ([]time.Duration, error) {
	var mu sync.Mutex
	var all []time.Duration
	var firstErr atomic.Value
	var wg sync.WaitGroup
	for range sh.Conc {
		wg.Go(func() {
			lat := make([]time.Duration, 0, 4096)
			for ctx.Err() == nil {
				begin := time.Now()
				// The calls themselves are not bounded by ctx: a call cut
				// at the end of the window would count as a failure.
				if err := call(context.Background(), c, sh); err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
				lat = append(lat, time.Since(begin))
			}
			mu.Lock()
			all = append(all, lat...)
			mu.Unlock()
		})
	}
	wg.Wait()
	if err, ok := firstErr.Load().(error); ok {
		return nil, err
	}
	return all, nil
}

// Result is the comparison of one stack and shape over every round.
type Result struct {
	Stack, Shape  string
	Ratio         float64 // median over rounds of rate / bare's rate in the same round
	RatioMin      float64
	RatioMax      float64
	P50, P99      time.Duration // of the round with the median ratio
	Allocs, Bytes int64         // per call, over bare's (same round)
}

// Compare measures every stack on every shape for rounds rounds, each
// round measuring the stacks one after the other in turn (interleaved), so
// that a slow moment of the machine weighs on every stack alike. The first
// stack is the baseline.
func Compare(ctx context.Context, stacks []*Stack, shapes []Shape, rounds int, d time.Duration, progress io.Writer) ([]Result, error) {
	clients := make([]testpb.TestServiceClient, len(stacks))
	for i, st := range stacks {
		conn, c, err := client(st)
		if err != nil {
			return nil, err
		}
		defer conn.Close()
		clients[i] = c
	}
	samples := make([][][]Sample, len(shapes)) // [shape][stack][round]
	for si := range shapes {
		samples[si] = make([][]Sample, len(stacks))
	}
	for r := range rounds {
		for si, sh := range shapes {
			for ki := range stacks {
				s, err := Measure(ctx, clients[ki], sh, d)
				if err != nil {
					return nil, fmt.Errorf("%s, %s: %w", stacks[ki].Name, sh.Name, err)
				}
				samples[si][ki] = append(samples[si][ki], s)
			}
		}
		if progress != nil {
			fmt.Fprintf(progress, "round %d of %d done\n", r+1, rounds)
		}
	}
	var out []Result
	for si, sh := range shapes {
		for ki, st := range stacks {
			type rr struct {
				ratio float64
				round int
			}
			var ratios []rr
			for r := range rounds {
				ratios = append(ratios, rr{samples[si][ki][r].Rate() / samples[si][0][r].Rate(), r})
			}
			sort.Slice(ratios, func(i, j int) bool { return ratios[i].ratio < ratios[j].ratio })
			med := ratios[len(ratios)/2]
			s, base := samples[si][ki][med.round], samples[si][0][med.round]
			out = append(out, Result{
				Stack: st.Name, Shape: sh.Name,
				Ratio: med.ratio, RatioMin: ratios[0].ratio, RatioMax: ratios[len(ratios)-1].ratio,
				P50: s.Quantile(0.5), P99: s.Quantile(0.99),
				Allocs: int64(s.Allocs) - int64(base.Allocs), Bytes: int64(s.Byte) - int64(base.Byte),
			})
		}
	}
	return out, nil
}

// Table writes results as a Markdown table, one block per shape.
func Table(w io.Writer, results []Result) {
	fmt.Fprintln(w, "| shape | stack | throughput vs bare (median, range) | p50 | p99 | allocs/call over bare | bytes/call over bare |")
	fmt.Fprintln(w, "| --- | --- | --- | --- | --- | --- | --- |")
	for _, r := range results {
		fmt.Fprintf(w, "| %s | %s | %.2fx (%.2f-%.2f) | %s | %s | %+d | %+d |\n",
			r.Shape, r.Stack, r.Ratio, r.RatioMin, r.RatioMax, round(r.P50), round(r.P99), r.Allocs, r.Bytes)
	}
}

func round(d time.Duration) string {
	switch {
	case d >= time.Millisecond:
		return d.Round(10 * time.Microsecond).String()
	default:
		return d.Round(100 * time.Nanosecond).String()
	}
}
