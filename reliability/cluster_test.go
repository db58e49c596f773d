//go:build fault

package reliability_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/loamhq/loam/events/natsjs"
	"github.com/loamhq/loam/internal/testenv"
)

// natsServerBin is the nats-server the cluster runs; LOAM_NATS_SERVER
// overrides it.
func natsServerBin(t *testing.T) string {
	if p := os.Getenv("LOAM_NATS_SERVER"); p != "" {
		return p
	}
	for _, p := range []string{"/usr/sbin/nats-server", "/usr/bin/nats-server", "/usr/local/bin/nats-server"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := exec.LookPath("nats-server"); err == nil {
		return p
	}
	msg := "nats-server is not installed (apt-get install nats-server, or point LOAM_NATS_SERVER at one)"
	if testenv.Required() {
		t.Fatalf("%s; %s=1 requires it", msg, testenv.RequireEnv)
	}
	t.Skip(msg)
	return ""
}

// freePort returns a loopback port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// node is one nats-server process of a cluster.
type node struct {
	name string
	url  string
	cmd  *exec.Cmd
	log  string
}

// startCluster starts three nats-server processes with JetStream on free
// loopback ports, routed to each other, each storing in a directory of its
// own under t.TempDir, and kills them when the test ends. It returns once
// JetStream answers through every node.
func startCluster(t *testing.T) []*node {
	t.Helper()
	bin := natsServerBin(t)
	dir := t.TempDir()
	const size = 3
	clientPorts, routePorts := make([]int, size), make([]int, size)
	for i := range size {
		clientPorts[i], routePorts[i] = freePort(t), freePort(t)
	}
	nodes := make([]*node, size)
	for i := range size {
		var routes []string
		for j := range size {
			if j != i {
				routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", routePorts[j]))
			}
		}
		n := &node{name: fmt.Sprint("n", i+1), url: fmt.Sprintf("nats://127.0.0.1:%d", clientPorts[i]),
			log: filepath.Join(dir, fmt.Sprintf("n%d.log", i+1))}
		n.cmd = exec.Command(bin, "-a", "127.0.0.1", "-p", fmt.Sprint(clientPorts[i]),
			"--server_name", n.name, "-js", "-sd", filepath.Join(dir, n.name),
			"--cluster_name", "loam-reliability", "--cluster", fmt.Sprintf("nats://127.0.0.1:%d", routePorts[i]),
			"--routes", strings.Join(routes, ","), "-l", n.log)
		if err := n.cmd.Start(); err != nil {
			t.Fatalf("starting %s: %v", bin, err)
		}
		nodes[i] = n
		t.Cleanup(func() {
			if n.cmd.ProcessState == nil {
				n.cmd.Process.Kill()
				n.cmd.Wait()
			}
			if t.Failed() {
				if b, err := os.ReadFile(n.log); err == nil {
					lines := strings.Split(strings.TrimSpace(string(b)), "\n")
					t.Logf("the last lines of %s's log:\n%s", n.name, strings.Join(lines[max(0, len(lines)-15):], "\n"))
				}
			}
		})
	}
	for _, n := range nodes {
		if !eventually(wait, func() bool {
			nc, err := nats.Connect(n.url, nats.Timeout(time.Second))
			if err != nil {
				return false
			}
			defer nc.Close()
			js, err := jetstream.New(nc)
			if err != nil {
				return false
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			_, err = js.AccountInfo(ctx)
			return err == nil
		}) {
			t.Fatalf("JetStream did not answer through %s (%s) within %v", n.name, n.url, wait)
		}
	}
	return nodes
}

// TestNATSClusterNodeKilled runs 10 000 events through a stream with three
// replicas on a three-node JetStream cluster, and kills (SIGKILL) the
// stream's leader once a third of them were handled: a new leader takes
// over, and every published event reaches the handler, once. Recovery is
// the longest pause in handling after the kill, and the time from the kill
// to the last event handled.
func TestNATSClusterNodeKilled(t *testing.T) {
	const n = 10_000
	nodes := startCluster(t)
	urls := make([]string, len(nodes))
	for i, nd := range nodes {
		urls[i] = nd.url
	}
	admin, err := nats.Connect(strings.Join(urls, ","), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(admin.Close)
	name := topicName(t, func() *nats.Conn { return nil }) // the cluster goes with the test
	ctx := ctxT(t)
	broker, err := natsjs.New(ctx, natsjs.Config{
		URL:            strings.Join(urls, ","),
		Name:           t.Name(),
		ReconnectWait:  100 * time.Millisecond,
		ConnectTimeout: 2 * time.Second,
		PublishTimeout: 2 * time.Second,
		AckWait:        2 * time.Second,
		StreamDefaults: natsjs.StreamDefaults{MaxAge: time.Hour, Replicas: 3},
	})
	if err != nil {
		t.Fatal(err)
	}
	f := newFlow(t, broker, name)
	js, err := jetstream.New(admin)
	if err != nil {
		t.Fatal(err)
	}
	streamName, err := js.StreamNameBySubject(ctx, name)
	if err != nil {
		t.Fatalf("the stream of %s: %v", name, err)
	}
	stream, err := js.Stream(ctx, streamName)
	if err != nil {
		t.Fatal(err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Config.Replicas != 3 || info.Cluster == nil || len(info.Cluster.Replicas) != 2 {
		t.Fatalf("stream %s: %d replicas configured, cluster %+v; want 3 replicas, a leader and two followers", streamName, info.Config.Replicas, info.Cluster)
	}
	leader := info.Cluster.Leader

	published := make(chan struct{})
	go func() {
		defer close(published)
		f.publish(ctx, n, "cluster")
	}()
	if !eventually(wait, func() bool { return f.fx.total.Load() >= n/3 }) {
		t.Fatalf("only %d events handled before the fault", f.fx.total.Load())
	}
	var victim *node
	for _, nd := range nodes {
		if nd.name == leader {
			victim = nd
		}
	}
	if victim == nil {
		t.Fatalf("the stream's leader %q is none of the nodes", leader)
	}
	clientWasOnVictim := broker.Conn().ConnectedServerName() == victim.name
	var consumerName string
	for nm := range stream.ConsumerNames(ctx).Name() {
		consumerName = nm
	}
	consumerLeader := func(ctx context.Context) (string, error) {
		c, err := stream.Consumer(ctx, consumerName)
		if err != nil {
			return "", err
		}
		info, err := c.Info(ctx)
		if err != nil || info.Cluster == nil {
			return "", err
		}
		return info.Cluster.Leader, nil
	}
	consumerWas, err := consumerLeader(ctx)
	if err != nil {
		t.Fatalf("the consumer of %s: %v", name, err)
	}
	f.fx.faultAt()
	killed := time.Now()
	if err := victim.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	victim.cmd.Wait()
	// How long JetStream takes to elect new leaders for the stream and
	// the subscription's consumer, as the admin connection sees it.
	elected := func(leader func(context.Context) (string, error)) time.Duration {
		eventually(wait, func() bool {
			ictx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
			defer cancel()
			l, err := leader(ictx)
			return err == nil && l != "" && l != victim.name
		})
		return time.Since(killed)
	}
	streamElected := make(chan time.Duration, 1)
	go func() {
		streamElected <- elected(func(ctx context.Context) (string, error) {
			info, err := stream.Info(ctx)
			if err != nil || info.Cluster == nil {
				return "", err
			}
			return info.Cluster.Leader, nil
		})
	}()
	consumerNote := fmt.Sprintf("the consumer's leader %s stayed", consumerWas)
	if consumerWas == victim.name {
		consumerNote = fmt.Sprintf("the consumer's elected %v after", elected(consumerLeader).Round(time.Millisecond))
	}
	<-published
	ids := f.published()
	all := eventually(wait, func() bool { return f.fx.has(ids) })
	toAll := time.Since(killed)
	time.Sleep(500 * time.Millisecond) // late redeliveries would show as duplicates
	lost, dups := f.fx.tally(ids)
	lost += int64(n - len(ids))
	var newLeader string
	if info, err := stream.Info(ctx); err == nil && info.Cluster != nil {
		newLeader = info.Cluster.Leader
	}
	report(t, row{scenario: "cluster", fault: fmt.Sprintf("stream leader %s killed (SIGKILL) at event ~3 300; client connected to it: %v", leader, clientWasOnVictim),
		load: fmt.Sprintf("3 nodes, stream R3; 4 publishers, 1 subscription (32 at once); %d publish calls; new leader %s, elected %v after the kill (%s); %s",
			f.attempts.Load(), newLeader, (<-streamElected).Round(time.Millisecond), consumerNote, f.deliveries()),
		requests: n, errors: f.pubErrs.Load(), lost: lost, dups: dups,
		recoveryNote: recovery(f.fx.longestPause(), toAll, "kill")})
	if !all || lost != 0 {
		t.Errorf("%d of %d events were lost", lost, n)
	}
	if dups != 0 {
		t.Errorf("%d duplicate effects reached the handler, want 0 with dedup on", dups)
	}
	if newLeader == "" || newLeader == leader {
		t.Errorf("the stream's leader after the kill = %q, want another node than %s", newLeader, leader)
	}
}
