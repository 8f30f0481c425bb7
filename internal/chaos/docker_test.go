package chaos

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/shardnet/shardnet/api"
	"github.com/shardnet/shardnet/internal/testcluster"
)

// envDockerChaos turns the container chaos test on: it builds an image and
// runs five containers, which a plain `go test ./...` must not do
// (`make chaos-docker` sets it; .ci/run runs a short version when Docker
// answers).
const envDockerChaos = "SHARDNET_DOCKER_CHAOS"

// Linearizability under container faults: the five-node cluster of
// deploy/docker-compose.yml, built from this tree (FROM scratch, static
// binary), and one channel with three replicas. Eight clients drive the
// workload of TestLinearizableUnderFaults through the nodes' HTTP ports
// published on 127.0.0.1 while a nemesis crashes (docker kill, SIGKILL),
// stops (docker stop, SIGTERM), freezes (docker pause) and partitions
// (docker network disconnect: no Raft, no gossip, no client traffic) the
// channel's leader and followers. Then everything heals, and the replicas
// must converge, the history (plus a final read of every key) must be
// linearizable, no answer may be a 500, and no node may have panicked.
func TestDockerLinearizableUnderFaults(t *testing.T) {
	if os.Getenv(envDockerChaos) == "" {
		t.Skipf("container chaos test: set %s=1 to run it (make chaos-docker); it builds an image and runs 5 containers", envDockerChaos)
	}
	if testing.Short() {
		t.Skip("container chaos test: not with -short")
	}
	dt, why := findDocker()
	if why != "" {
		t.Skipf("container chaos test: %s", why)
	}
	seed := chaosSeed(t)
	dur := envDurationOr(t, envDuration, 60*time.Second)
	t.Logf("load and faults for %v", dur)

	root := repoRoot(t)
	sweepStaleProjects(t, dt)
	p := newComposeProject(t, dt, root)
	buildImage(t, dt, root, p.image)
	p.built = true
	p.start()
	t.Cleanup(func() {
		if t.Failed() {
			saveDockerLogs(t, p, seed)
		}
	})

	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 32, IdleConnTimeout: 30 * time.Second}}
	clients := make([]*api.Client, len(dockerServices))
	for i, svc := range dockerServices {
		clients[i] = api.NewClient(p.url(svc), p.token, hc)
	}
	waitDockerCluster(t, clients)
	const channel = "chaos"
	createDockerChannel(t, clients, channel)

	// Eight keys, twice the in-process run's: container faults leave more
	// writes with an unknown outcome (connections cut mid-request), and
	// porcupine's search grows fast with those per key.
	keys := []string{"k0", "k1", "k2", "k3", "k4", "k5", "k6", "k7"}
	rec, stats := NewRecorder(), NewStats()
	w := &Workload{Channel: channel, Keys: keys, Clients: 8, Nodes: clients, Rec: rec, Stats: stats,
		Seed: seed, OpTimeout: 5 * time.Second, Think: 10 * time.Millisecond}
	nem := &dockerNemesis{P: p, Clients: clients, Channel: channel, Rng: rand.New(rand.NewPCG(seed, 1)),
		Rec: rec, Logf: t.Logf}

	ctx, cancel := context.WithTimeout(context.Background(), dur)
	defer cancel()
	loadDone := make(chan struct{})
	go func() {
		defer close(loadDone)
		w.Run(ctx)
	}()
	// Registered after the project's removal, so it runs before it: a
	// failing nemesis (t.Fatal) stops the load before the containers go.
	t.Cleanup(func() {
		cancel()
		<-loadDone
	})
	if err := nem.Run(ctx); err != nil {
		t.Fatalf("nemesis: %v (faults so far: %s)", err, nem.Summary())
	}
	<-loadDone
	t.Logf("load done: %s", stats)
	t.Logf("faults: %d (%s)", nem.Total(), nem.Summary())
	t.Log(rec.Availability(rec.Now()))
	t.Logf("unknown outcomes by node and cause: %s", unknownCauses(rec))

	if err := nem.Recover(); err != nil {
		t.Fatalf("heal: %v", err)
	}
	waitDockerCluster(t, clients)
	ch := waitDockerLeader(t, clients, channel)
	var replicas []*api.Client
	for _, r := range ch.Placement {
		i := slices.Index(dockerServices, r.NodeID)
		if i < 0 {
			t.Fatalf("channel %s placed on unknown node %q", channel, r.NodeID)
		}
		replicas = append(replicas, clients[i])
	}
	final, err := Converge(replicas, channel, 90*time.Second)
	if err != nil {
		t.Errorf("convergence of the replicas on %v: %v", ch.Voters, err)
	} else {
		t.Logf("replicas %v converged: %d keys at applied index %d, hash %s", ch.Voters, len(final.Items), final.Index, final.Hash)
	}
	// Leadership may still move just after the heal (a follower's prober
	// notices the partition it was healed from late and elects): a 503
	// no_leader is retried through the next node. A failed attempt adds
	// nothing to the history.
	attempt := 0
	testcluster.WaitFor(t, time.Minute, func() error {
		fctx, fcancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer fcancel()
		cl := clients[attempt%len(clients)]
		attempt++
		if err := RecordFinalReads(fctx, rec, cl, channel, keys); err != nil {
			return fmt.Errorf("final reads: %w", err)
		}
		return nil
	})
	if attempt > 1 {
		t.Logf("final reads took %d attempts", attempt)
	}

	if n, example := stats.Code("500 internal"); n > 0 {
		t.Errorf("%d answers were 500 internal (a bug by the API's own definition), e.g. %s", n, example)
	}
	if stats.Count("", "ok") < 100 {
		t.Errorf("only %d operations succeeded: the workload did not get going", stats.Count("", "ok"))
	}
	for _, svc := range dockerServices {
		log := p.logs(svc)
		if lines := panicLines(log); len(lines) > 0 {
			t.Errorf("node %s panicked or crashed by itself:\n%s", svc, strings.Join(lines, "\n"))
		}
		if n, example := errorLines(log); n > 0 {
			t.Logf("node %s logged %d errors, e.g. %s", svc, n, example)
		}
	}
	reportHistory(t, rec, seed)
}

// waitDockerCluster waits until every node is ready (it knows a meta
// leader) and the meta group records all five alive.
func waitDockerCluster(t *testing.T, clients []*api.Client) {
	t.Helper()
	testcluster.WaitFor(t, 2*time.Minute, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		for i, cl := range clients {
			if err := cl.Health(ctx, true); err != nil {
				return fmt.Errorf("%s not ready: %w", dockerServices[i], err)
			}
		}
		nodes, err := clients[0].Nodes(ctx)
		if err != nil {
			return fmt.Errorf("members: %w", err)
		}
		alive := 0
		var states []string
		for _, nd := range nodes {
			states = append(states, nd.ID+"="+nd.State)
			if nd.State == "alive" {
				alive++
			}
		}
		if alive != len(dockerServices) {
			return fmt.Errorf("members: %s", strings.Join(states, " "))
		}
		return nil
	})
}

// createDockerChannel creates channel with three replicas and waits until
// it has a leader and every node knows it (a node that has not applied the
// meta entry yet answers 404 channel_not_found).
func createDockerChannel(t *testing.T, clients []*api.Client, channel string) {
	t.Helper()
	testcluster.WaitFor(t, time.Minute, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err := clients[0].CreateChannel(ctx, api.CreateChannelRequest{Name: channel, Replicas: 3})
		if e := api.AsError(err); e != nil && e.Code == api.CodeChannelExists {
			return nil
		}
		return err
	})
	ch := waitDockerLeader(t, clients, channel)
	t.Logf("channel %s: leader %s, voters %v", channel, ch.Leader, ch.Voters)
	testcluster.WaitFor(t, time.Minute, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		for i, cl := range clients {
			_, _, err := cl.Get(ctx, channel, "k0", api.GetOptions{})
			if err != nil && !isCode(err, api.CodeKeyNotFound) {
				return fmt.Errorf("read through %s: %w", dockerServices[i], err)
			}
		}
		return nil
	})
}

// waitDockerLeader waits until the channel has a leader and all its
// replicas are healthy voters.
func waitDockerLeader(t *testing.T, clients []*api.Client, channel string) api.Channel {
	t.Helper()
	var ch api.Channel
	testcluster.WaitFor(t, 2*time.Minute, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var err error
		if ch, err = clients[0].Channel(ctx, channel); err != nil {
			return err
		}
		if ch.Leader == "" || ch.Health != "healthy" || len(ch.Voters) != 3 {
			return fmt.Errorf("channel %s: leader %q, health %s, voters %v", channel, ch.Leader, ch.Health, ch.Voters)
		}
		return nil
	})
	return ch
}

// unknownCauses counts the operations whose outcome is unknown by the
// node they went to and why (their metadata), the ones that make
// porcupine's search long.
func unknownCauses(rec *Recorder) string {
	counts := map[string]int{}
	for _, op := range rec.Operations() {
		if op.Output.(Output).Status == StatusUnknown {
			meta, _ := op.Metadata.(string)
			counts[meta]++
		}
	}
	var parts []string
	for k, v := range counts {
		parts = append(parts, fmt.Sprintf("%s=%d", k, v))
	}
	sort.Strings(parts)
	return strings.Join(parts, ", ")
}

// panicLines returns the lines of a node's log that show a Go panic or
// fatal runtime error, with a little context.
func panicLines(log string) []string {
	lines := strings.Split(log, "\n")
	for i, l := range lines {
		if strings.HasPrefix(l, "panic:") || strings.HasPrefix(l, "fatal error:") || strings.Contains(l, "[PANIC]") {
			return lines[i:min(len(lines), i+20)]
		}
	}
	return nil
}

// errorLines counts a node's [ERROR] log lines (some are expected under
// faults, such as yamux keepalives failing across a partition) and returns
// the most frequent message, for the reader of the test's output.
func errorLines(log string) (int, string) {
	n, byMsg := 0, map[string]int{}
	for _, l := range strings.Split(log, "\n") {
		_, msg, ok := strings.Cut(l, "[ERROR]")
		if !ok {
			continue
		}
		n++
		msg = strings.TrimSpace(msg)
		if k, _, ok := strings.Cut(msg, ":"); ok {
			msg = k // the logger and message, without the fields
		}
		byMsg[msg]++
	}
	best := ""
	for m, c := range byMsg {
		if best == "" || c > byMsg[best] || (c == byMsg[best] && m < best) {
			best = m
		}
	}
	if best == "" {
		return 0, ""
	}
	return n, fmt.Sprintf("%q (%d)", best, byMsg[best])
}

// saveDockerLogs writes every node's log next to the visualization of a
// failing history: testdata/output/<test>-<seed>-<node>.log.
func saveDockerLogs(t *testing.T, p *composeProject, seed uint64) {
	base := strings.TrimSuffix(vizPath(t, seed), ".html")
	if err := os.MkdirAll(filepath.Dir(base), 0o755); err != nil {
		t.Logf("logs: %v", err)
		return
	}
	for _, svc := range dockerServices {
		path := fmt.Sprintf("%s-%s.log", base, svc)
		if err := os.WriteFile(path, []byte(p.logs(svc)), 0o644); err != nil {
			t.Logf("logs: %v", err)
			continue
		}
		t.Logf("log of %s: %s", svc, path)
	}
}

// dockerNemesis injects a random schedule of container faults, one at a
// time, into the channel's leader and followers: it applies one, holds it,
// undoes it, pauses, and picks the next, until its context ends. The
// schedule is a function of Rng and of which node leads when a fault
// starts; the timing of containers is not, so a seed replays the same kinds
// of faults in the same order, not the same interleaving.
type dockerNemesis struct {
	P       *composeProject
	Clients []*api.Client // one per dockerServices entry
	Channel string
	Rng     *rand.Rand
	Rec     *Recorder
	Logf    func(format string, args ...any)

	// Hold and Gap bound how long a fault lasts and the pause between two
	// (uniform). Defaults 1-5 s and 0.5-2 s: a container restarts in about
	// a second, so shorter holds would rarely outlast an election.
	HoldMin, HoldMax time.Duration
	GapMin, GapMax   time.Duration

	counts       map[string]int
	killed       map[string]bool // containers killed or stopped, not started again
	paused       map[string]bool
	disconnected map[string]bool
	voters       []string // the channel's replicas as last seen
}

var dockerFaultKinds = []struct {
	name   string
	weight int
}{
	{"kill-leader", 3},            // docker kill (SIGKILL) the channel leader; docker start after the hold
	{"kill-follower", 2},          // the same for a follower
	{"stop-leader", 1},            // docker stop: SIGTERM, the graceful shutdown hands leadership over
	{"pause-leader", 2},           // docker pause: frozen, not crashed; its TCP peers see silence
	{"pause-follower", 1},         //
	{"disconnect-leader", 3},      // docker network disconnect: the leader alone, even from clients
	{"disconnect-follower", 2},    //
	{"disconnect-kill-leader", 1}, // partition the leader, crash it while cut off, reconnect, start
	{"kill-leader-follower", 1},   // crash two replicas: no quorum until one is back
}

func (n *dockerNemesis) defaults() {
	if n.HoldMax == 0 {
		n.HoldMin, n.HoldMax = time.Second, 5*time.Second
	}
	if n.GapMax == 0 {
		n.GapMin, n.GapMax = 500*time.Millisecond, 2*time.Second
	}
	if n.counts == nil {
		n.counts, n.killed, n.paused, n.disconnected = map[string]int{}, map[string]bool{}, map[string]bool{}, map[string]bool{}
	}
	if n.Logf == nil {
		n.Logf = func(string, ...any) {}
	}
}

// Run applies faults until ctx ends; the fault in force then is undone.
// An error is Docker failing to do what it was asked.
func (n *dockerNemesis) Run(ctx context.Context) error {
	n.defaults()
	total := 0
	for _, f := range dockerFaultKinds {
		total += f.weight
	}
	for ctx.Err() == nil {
		pick := n.Rng.IntN(total)
		var name string
		for _, f := range dockerFaultKinds {
			if pick < f.weight {
				name = f.name
				break
			}
			pick -= f.weight
		}
		if err := n.apply(ctx, name); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		n.sleep(ctx, n.between(n.GapMin, n.GapMax))
	}
	return nil
}

// Total is the number of faults injected.
func (n *dockerNemesis) Total() int {
	t := 0
	for _, v := range n.counts {
		t += v
	}
	return t
}

// Summary lists the faults injected, by kind.
func (n *dockerNemesis) Summary() string {
	var parts []string
	for k, v := range n.counts {
		parts = append(parts, fmt.Sprintf("%s=%d", k, v))
	}
	sort.Strings(parts)
	return strings.Join(parts, " ")
}

func (n *dockerNemesis) between(lo, hi time.Duration) time.Duration {
	if hi <= lo {
		return lo
	}
	return lo + time.Duration(n.Rng.Int64N(int64(hi-lo)))
}

// sleep holds a fault for d, or less when ctx ends: the hold is cut short
// at the end of the run, never skipped.
func (n *dockerNemesis) sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

func (n *dockerNemesis) down(svc string) bool {
	return n.killed[svc] || n.paused[svc] || n.disconnected[svc]
}

// leader asks the nodes that are up for the channel (GET
// /v1/channels/{ch}) and returns its leader's node id, or "" when none is
// known; it remembers the voters.
func (n *dockerNemesis) leader() string {
	for i, svc := range dockerServices {
		if n.down(svc) {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		ch, err := n.Clients[i].Channel(ctx, n.Channel)
		cancel()
		if err != nil {
			continue
		}
		if len(ch.Voters) > 0 {
			n.voters = append(n.voters[:0], ch.Voters...)
		}
		if ch.Leader != "" {
			return ch.Leader
		}
	}
	return ""
}

// pick returns the leader (or, with none known, a random replica) and a
// random replica other than it.
func (n *dockerNemesis) pick() (leader, follower string) {
	leader = n.leader()
	replicas := n.voters
	if len(replicas) == 0 {
		replicas = dockerServices
	}
	if leader == "" {
		leader = replicas[n.Rng.IntN(len(replicas))]
	}
	var others []string
	for _, r := range replicas {
		if r != leader {
			others = append(others, r)
		}
	}
	if len(others) == 0 {
		others = slices.DeleteFunc(slices.Clone(dockerServices), func(s string) bool { return s == leader })
	}
	return leader, others[n.Rng.IntN(len(others))]
}

func (n *dockerNemesis) apply(ctx context.Context, name string) error {
	p := n.P
	hold := n.between(n.HoldMin, n.HoldMax)
	leader, follower := n.pick()
	victim := leader
	if strings.HasSuffix(name, "-follower") && !strings.HasPrefix(name, "kill-leader") {
		victim = follower
	}
	start := n.Rec.Now()
	desc := fmt.Sprintf("%s %s", name, victim)
	if name == "kill-leader-follower" {
		desc = fmt.Sprintf("%s %s+%s", name, leader, follower)
	}
	n.Logf("nemesis: %s for %v", desc, hold.Round(time.Millisecond))
	var err error
	switch name {
	case "kill-leader", "kill-follower", "stop-leader":
		if name == "stop-leader" {
			err = p.stop(victim, 15*time.Second)
		} else {
			err = p.kill(victim)
		}
		if err != nil {
			return err
		}
		n.killed[victim] = true
		n.sleep(ctx, hold)
		err = n.start(victim)

	case "kill-leader-follower":
		for _, v := range []string{leader, follower} {
			if err := p.kill(v); err != nil {
				return err
			}
			n.killed[v] = true
		}
		n.sleep(ctx, hold)
		// Back one after the other, in random order.
		first, second := leader, follower
		if n.Rng.IntN(2) == 0 {
			first, second = second, first
		}
		if err := n.start(first); err != nil {
			return err
		}
		n.sleep(ctx, n.between(0, hold))
		err = n.start(second)

	case "pause-leader", "pause-follower":
		if err := p.pause(victim); err != nil {
			return err
		}
		n.paused[victim] = true
		n.sleep(ctx, hold)
		if err = p.unpause(victim); err == nil {
			delete(n.paused, victim)
		}

	case "disconnect-leader", "disconnect-follower":
		if err := p.disconnect(victim); err != nil {
			return err
		}
		n.disconnected[victim] = true
		n.sleep(ctx, hold)
		err = n.reconnect(victim)

	case "disconnect-kill-leader":
		if err := p.disconnect(victim); err != nil {
			return err
		}
		n.disconnected[victim] = true
		n.sleep(ctx, hold/2)
		if err := p.kill(victim); err != nil {
			return err
		}
		n.killed[victim] = true
		n.sleep(ctx, hold/2)
		if err := n.reconnect(victim); err != nil {
			return err
		}
		err = n.start(victim)

	default:
		panic("chaos: unknown container fault " + name)
	}
	if err != nil {
		return err
	}
	n.counts[name]++
	n.Rec.Note(start, n.Rec.Now(), desc)
	return nil
}

func (n *dockerNemesis) start(svc string) error {
	if err := n.P.startNode(svc); err != nil {
		return err
	}
	delete(n.killed, svc)
	return nil
}

func (n *dockerNemesis) reconnect(svc string) error {
	if err := n.P.connect(svc); err != nil {
		return err
	}
	delete(n.disconnected, svc)
	return nil
}

// Recover undoes whatever the nemesis left in force: unpause, reconnect,
// then start.
func (n *dockerNemesis) Recover() error {
	n.defaults()
	var errs []error
	for svc := range n.paused {
		if err := n.P.unpause(svc); err != nil {
			errs = append(errs, err)
		} else {
			delete(n.paused, svc)
		}
	}
	for svc := range n.disconnected {
		if err := n.reconnect(svc); err != nil {
			errs = append(errs, err)
		}
	}
	for svc := range n.killed {
		if err := n.start(svc); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
