package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/shardnet/shardnet/api"
	"github.com/shardnet/shardnet/cluster"
	"github.com/shardnet/shardnet/fsm"
	"github.com/shardnet/shardnet/internal/agent"
)

// runDev starts a whole cluster in this process on loopback: core and
// resource nodes with their own data dirs, and a demo channel.
func runDev(args []string) int {
	fs := flag.NewFlagSet("dev", flag.ContinueOnError)
	cores := fs.Int("core", 3, "core nodes")
	resources := fs.Int("resource", 3, "resource nodes")
	httpPort := fs.Int("http-port", 8500, "HTTP port of the first node; the others take the next ones")
	dataDir := fs.String("data-dir", "", "keep the nodes' data here (default: a temp dir removed on exit)")
	token := fs.String("token", "", "operator token (default: a random one)")
	demo := fs.String("demo-channel", "demo", "channel to create at start (\"\" for none)")
	logLevel := fs.String("log-level", "warn", "log level of the nodes (logs go to stderr)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *cores < 1 || *cores > 5 || *resources < 0 {
		fmt.Fprintln(os.Stderr, "Error: -core must be 1..5 and -resource >= 0")
		return 2
	}
	dir := *dataDir
	if dir == "" {
		d, err := os.MkdirTemp("", "shardnet-dev-")
		if err != nil {
			fmt.Fprintf(os.Stderr, "Error: %v\n", err)
			return 1
		}
		dir = d
		defer os.RemoveAll(dir)
	}
	logger := newLogger(*logLevel, false)

	var specs []devNode
	for i := 1; i <= *cores; i++ {
		specs = append(specs, devNode{fmt.Sprintf("core%d", i), fsm.RoleCore})
	}
	for i := 1; i <= *resources; i++ {
		specs = append(specs, devNode{fmt.Sprintf("res%d", i), fsm.RoleResource})
	}
	// A dev dir kept across runs (-data-dir) keeps what the nodes' Raft
	// groups and the operator remember: the ports (every configuration
	// names its voters by address), the operator token and the keys.
	st, err := loadDevState(dir, len(specs))
	if err != nil {
		fmt.Fprintf(os.Stderr, "Error: %v\n", err)
		return 1
	}
	if *token != "" {
		st.Token = *token
	}
	if err := st.fill(len(specs)); err != nil {
		fmt.Fprintf(os.Stderr, "Error: %v\n", err)
		return 1
	}
	if *dataDir != "" {
		if err := st.save(dir); err != nil {
			fmt.Fprintf(os.Stderr, "Error: %v\n", err)
			return 1
		}
	}
	tok, key, gossipKey := st.Token, st.ClusterKey, st.GossipKey
	gossipPorts, clusterPorts := st.GossipPorts, st.ClusterPorts
	// The cluster port speaks mutual TLS here too, so the default path is
	// the one production runs: a CA under the dev dir, each node's
	// certificate and key in its data dir.
	certs, err := tlsCertsForDev(dir, specs)
	if err != nil {
		fmt.Fprintf(os.Stderr, "Error: certificates: %v\n", err)
		return 1
	}
	zones := []string{"zone-a", "zone-b", "zone-c"}
	var agents []*agent.Agent
	stopAll := func() {
		var wg sync.WaitGroup
		for _, a := range agents {
			wg.Add(1)
			go func() { defer wg.Done(); _ = a.Close() }()
		}
		wg.Wait()
	}
	for i, s := range specs {
		var join []string
		for j := range specs {
			if j != i {
				join = append(join, net.JoinHostPort("127.0.0.1", strconv.Itoa(gossipPorts[j])))
			}
		}
		bootstrap := 0
		if s.role == fsm.RoleCore {
			bootstrap = *cores
		}
		a, err := agent.Start(agent.Options{
			Cluster: cluster.Config{
				Name: s.name, Role: s.role, Zone: zones[i%len(zones)], DataDir: filepath.Join(dir, s.name),
				BindAddr: "127.0.0.1", GossipPort: gossipPorts[i], ClusterPort: clusterPorts[i],
				BootstrapExpect: bootstrap, Join: join, ClusterKey: key, GossipKey: gossipKey, LocalGossip: true,
				TLS:    certs[s.name],
				Stake:  map[bool]uint64{true: 100}[s.role == fsm.RoleCore],
				Logger: logger.Named(s.name),
				// Every dev node hosts data (core-only clusters have
				// nowhere else), and a stopped one is dead, and its
				// replicas repaired, after 10 s rather than 5 min.
				ServeData: true,
				DeadAfter: 10 * time.Second,
			},
			HTTPBind: net.JoinHostPort("127.0.0.1", strconv.Itoa(*httpPort+i)),
			Token:    tok,
		})
		if err != nil {
			fmt.Fprintf(os.Stderr, "Error: start %s: %v\n", s.name, err)
			stopAll()
			return 1
		}
		agents = append(agents, a)
		// A node that agreed to leave (shardnet node leave) stops, as its
		// agent process would; the others run on.
		go func() {
			<-a.Node.Leaving()
			logger.Info("a node left the cluster: stopping it", "node", s.name)
			_ = a.Close()
		}()
	}
	// Ctrl-C while the cluster comes up stops it too.
	sigCtx, stopSig := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	ctx, cancel := context.WithTimeout(sigCtx, 60*time.Second)
	err = waitDevReady(ctx, agents, tok, *demo)
	cancel()
	interrupted := sigCtx.Err() != nil
	stopSig()
	if interrupted {
		fmt.Fprintln(os.Stderr, "\nstopping the dev cluster...")
		stopAll()
		return 1
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "Error: the dev cluster did not come up: %v\n", err)
		stopAll()
		return 1
	}
	printDevBanner(agents, tok, *demo, dir, *dataDir == "")
	waitForSignal(nil, nil)
	fmt.Println("\nstopping the dev cluster...")
	// All nodes stop at once: each sees its peers vanish and would warn
	// about it. Nothing of that is news to whoever pressed Ctrl-C.
	if hclog.LevelFromString(*logLevel) < hclog.Error {
		logger.SetLevel(hclog.Error)
	}
	stopAll()
	return 0
}

func waitDevReady(ctx context.Context, agents []*agent.Agent, token, demo string) error {
	c := api.NewClient(agents[0].URL(), token, nil)
	for {
		nodes, err := c.Nodes(ctx)
		alive := 0
		for _, n := range nodes {
			if n.State == fsm.NodeAlive {
				alive++
			}
		}
		if err == nil && alive == len(agents) {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %d nodes to register (have %d): %w", len(agents), alive, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
	if demo == "" {
		return nil
	}
	for {
		_, err := c.CreateChannel(ctx, api.CreateChannelRequest{Name: demo, Replicas: 3})
		if err == nil || api.IsConflict(err) {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("creating channel %s: %w", demo, err)
		case <-time.After(200 * time.Millisecond):
		}
	}
	for {
		ch, err := c.Channel(ctx, demo)
		if err == nil && ch.Leader != "" {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for channel %s to elect a leader: %w", demo, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func printDevBanner(agents []*agent.Agent, token, demo, dir string, temp bool) {
	fmt.Printf("shardnet dev cluster is up: %d nodes on loopback\n\n", len(agents))
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  NODE\tROLE\tHTTP API\tGOSSIP\tCLUSTER")
	for _, a := range agents {
		st, _ := a.Node.Status(context.Background())
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", st.NodeID, st.Role, a.URL(), st.GossipAddr, st.ClusterAddr)
	}
	tw.Flush()
	where := dir
	if temp {
		where += " (removed on exit)"
	}
	addr := agents[0].URL()
	fmt.Printf(`
Data:           %s
Cluster port:   mutual TLS; CA and node certificates under the data dir
Operator token: %s

In another shell:
  export SHARDNET_ADDR=%s
  export SHARDNET_TOKEN=%s
`, where, token, addr, token)
	if demo != "" {
		auth := `-H "Authorization: Bearer $SHARDNET_TOKEN"`
		fmt.Printf(`
Channel %[1]q has 3 replicas. Try:
  curl -s %[2]s -X PUT --data-binary 'hello' $SHARDNET_ADDR/v1/channels/%[1]s/kv/greeting
  curl -s %[2]s $SHARDNET_ADDR/v1/channels/%[1]s/kv/greeting
  curl -s %[2]s "$SHARDNET_ADDR/v1/channels/%[1]s/kv/?prefix=gr"
  curl -s %[2]s $SHARDNET_ADDR/v1/channels/%[1]s
  ./bin/shardnet members
  ./bin/shardnet kv put %[1]s color blue && ./bin/shardnet kv get %[1]s color
`, demo, auth)
	}
	fmt.Println("\nCtrl-C stops the cluster.")
}

func freeLoopbackPort() (int, error) {
	for range 20 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		port := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		if u, err := net.ListenPacket("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port))); err == nil {
			u.Close()
			return port, nil
		}
	}
	return 0, errors.New("no free loopback port")
}

// devNode is one node of a dev cluster: its name and role.
type devNode struct{ name, role string }
