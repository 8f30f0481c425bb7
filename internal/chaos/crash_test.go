package chaos

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/shardnet/shardnet/api"
	"github.com/shardnet/shardnet/internal/testcluster"
	"github.com/shardnet/shardnet/transport"
)

// Crash durability with real processes: three `shardnet agent` processes
// under a write load are killed with SIGKILL, one at a time at random
// moments and then all three at once, and restarted from their data dirs.
// Every acknowledged write must survive with its value intact (each value
// carries its key and a CRC), no write the API refused may appear, and no
// value may be torn.
func TestCrashDurability(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs real processes")
	}
	seed := chaosSeed(t)
	rng := rand.New(rand.NewPCG(seed, 2))
	bin := buildShardnet(t)
	pc := startProcCluster(t, bin, 3)
	cl := pc.clients()
	const channel = "durable"
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pc.createChannel(t, channel)

	led := &ledger{acked: map[string]string{}, unknown: map[string]string{}, refused: map[string]string{}}
	loadCtx, stopLoad := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			writer(loadCtx, w, seed, cl, channel, led)
		}()
	}
	waitAcked := func(n int) {
		t.Helper()
		testcluster.WaitFor(t, 60*time.Second, func() error {
			if got := led.ackedCount(); got < n {
				return fmt.Errorf("%d writes acknowledged, want %d (%s)", got, n, led.summary())
			}
			return nil
		})
	}
	waitAcked(50)

	const rounds = 5
	for r := range rounds {
		time.Sleep(time.Duration(500+rng.IntN(1500)) * time.Millisecond) // under load
		victim := rng.IntN(len(pc.procs))
		before := led.ackedCount()
		pc.procs[victim].kill(t)
		down := time.Duration(200+rng.IntN(1300)) * time.Millisecond
		t.Logf("round %d: SIGKILL %s with %d writes acknowledged, restart after %v", r+1, pc.procs[victim].name, before, down)
		time.Sleep(down)
		pc.procs[victim].start(t)
		pc.waitReady(t, victim)
		waitAcked(before + 20) // the cluster takes writes again
	}
	time.Sleep(time.Duration(300+rng.IntN(1000)) * time.Millisecond)
	before := led.ackedCount()
	t.Logf("SIGKILL all three with %d writes acknowledged", before)
	for _, p := range pc.procs {
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
	}
	for _, p := range pc.procs {
		p.kill(t)
	}
	for _, p := range pc.procs {
		p.start(t)
	}
	for i := range pc.procs {
		pc.waitReady(t, i)
	}
	pc.waitChannelLeader(t, channel)
	waitAcked(before + 20)
	stopLoad()
	wg.Wait()

	verifyLedger(ctx, t, cl, channel, led)
	pc.checkLogs(t)
}

// ledger is what the writers were told.
type ledger struct {
	mu      sync.Mutex
	acked   map[string]string // key → value: 2xx
	unknown map[string]string // key → value: outcome unknown
	refused map[string]string // key → why: provably not applied
	acks    atomic.Int64
}

func (l *ledger) ackedCount() int { return int(l.acks.Load()) }

func (l *ledger) summary() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return fmt.Sprintf("%d acked, %d unknown, %d refused", len(l.acked), len(l.unknown), len(l.refused))
}

// verifyLedger reads the channel through a linearizable listing from any
// node and checks it against what the writers were told: every
// acknowledged write present with its value, no value torn, nothing that
// was refused or never written.
func verifyLedger(ctx context.Context, t *testing.T, cl []*api.Client, channel string, led *ledger) {
	t.Helper()
	var got Listing
	testcluster.WaitFor(t, 60*time.Second, func() error {
		var err error
		for _, c := range cl {
			if got, err = ReadListing(ctx, c, channel, api.Linearizable); err == nil {
				return nil
			}
		}
		return err
	})
	present := map[string]string{}
	for _, kv := range got.Items {
		present[kv.Key] = string(kv.Value)
		if err := checkValue(kv.Key, kv.Value); err != nil {
			t.Errorf("torn or foreign value: %v", err)
		}
	}
	led.mu.Lock()
	defer led.mu.Unlock()
	lost := 0
	for k, v := range led.acked {
		switch pv, ok := present[k]; {
		case !ok:
			lost++
			if lost <= 10 {
				t.Errorf("acknowledged write lost: %s", k)
			}
		case pv != v:
			t.Errorf("acknowledged write %s has another value: %.40q, want %.40q", k, pv, v)
		}
	}
	if lost > 10 {
		t.Errorf("%d acknowledged writes lost in all", lost)
	}
	unknownPresent := 0
	for k := range present {
		_, a := led.acked[k]
		v, u := led.unknown[k]
		switch {
		case a:
		case u:
			unknownPresent++
			if present[k] != v {
				t.Errorf("write %s with unknown outcome has another value", k)
			}
		default:
			if why, r := led.refused[k]; r {
				t.Errorf("write %s was refused (%s) but is present", k, why)
			} else {
				t.Errorf("key %s present but never written", k)
			}
		}
	}
	t.Logf("%d writes acknowledged (%d lost); %d with unknown outcome (%d present); %d refused; %d keys in all",
		len(led.acked), lost, len(led.unknown), unknownPresent, len(led.refused), len(present))
}

// writer writes unique keys w<id>/<seq> with self-checking values through
// random nodes until ctx ends.
func writer(ctx context.Context, id int, seed uint64, cl []*api.Client, channel string, led *ledger) {
	rng := rand.New(rand.NewPCG(seed, uint64(100+id)))
	for seq := 0; ctx.Err() == nil; seq++ {
		key := fmt.Sprintf("w%d/%06d", id, seq)
		value := makeValue(key, rng)
		for attempt := 0; ctx.Err() == nil; attempt++ {
			octx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_, err := cl[rng.IntN(len(cl))].Put(octx, channel, key, value, api.PutOptions{})
			cancel()
			if err == nil {
				led.mu.Lock()
				led.acked[key] = string(value)
				led.mu.Unlock()
				led.acks.Add(1)
				break
			}
			applied, why := mayBeApplied(err)
			if applied {
				led.mu.Lock()
				led.unknown[key] = string(value)
				led.mu.Unlock()
				break
			}
			// Provably not applied: send the same write again (to another
			// node), a few times, then give the key up as refused.
			if attempt == 20 {
				led.mu.Lock()
				led.refused[key] = why
				led.mu.Unlock()
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// makeValue is key|size|payload|crc32 of everything before it, 64 B to 16 KiB.
func makeValue(key string, rng *rand.Rand) []byte {
	n := 64 << rng.IntN(9)
	payload := make([]byte, n)
	for i := range payload {
		payload[i] = 'a' + byte(rng.IntN(26))
	}
	body := fmt.Sprintf("%s|%d|%s|", key, n, payload)
	return []byte(fmt.Sprintf("%s%08x", body, crc32.ChecksumIEEE([]byte(body))))
}

func checkValue(key string, v []byte) error {
	s := string(v)
	if len(s) < 8 {
		return fmt.Errorf("%s: value of %d bytes", key, len(v))
	}
	body, sum := s[:len(s)-8], s[len(s)-8:]
	if fmt.Sprintf("%08x", crc32.ChecksumIEEE([]byte(body))) != sum {
		return fmt.Errorf("%s: checksum mismatch in a value of %d bytes", key, len(v))
	}
	parts := strings.SplitN(body, "|", 3)
	if len(parts) != 3 || parts[0] != key {
		return fmt.Errorf("%s: value belongs to key %q", key, parts[0])
	}
	if n, err := strconv.Atoi(parts[1]); err != nil || len(parts[2]) != n+1 {
		return fmt.Errorf("%s: payload size mismatch", key)
	}
	return nil
}

// buildShardnet builds the binary once per test into a temp dir.
func buildShardnet(t *testing.T) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go tool is needed to build shardnet: %v", err)
	}
	root, err := exec.Command(goBin, "env", "GOMOD").Output()
	if err != nil {
		t.Fatalf("go env GOMOD: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "shardnet")
	cmd := exec.Command(goBin, "build", "-o", bin, "./cmd/shardnet")
	cmd.Dir = filepath.Dir(strings.TrimSpace(string(root)))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/shardnet: %v\n%s", err, out)
	}
	return bin
}

// chaosClusterKey is the process clusters' cluster key.
const chaosClusterKey = "chaos-cluster-key"

// chaosGossipKey is the gossip key the releases before gossip keys of
// their own derived from chaosClusterKey, so that a cluster mixing them
// (TestRollingUpgrade) gossips as one: the new binary reads it from
// $SHARDNET_GOSSIP_KEY, which the old one ignores (docs/operations.md
// "Upgrading from derived keys").
func chaosGossipKey() string {
	k := sha256.Sum256([]byte("shardnet-gossip:" + chaosClusterKey))
	return base64.StdEncoding.EncodeToString(k[:])
}

// procCluster is a cluster of real agent processes on loopback.
type procCluster struct {
	token string
	procs []*proc
}

type proc struct {
	name    string
	bin     string
	args    []string
	http    string
	logPath string
	cmd     *exec.Cmd
	done    chan struct{}
}

func startProcCluster(t *testing.T, bin string, n int) *procCluster {
	t.Helper()
	bins := make([]string, n)
	for i := range bins {
		bins[i] = bin
	}
	// The cluster port speaks mutual TLS, as the agent does by default:
	// a CA and a certificate per node.
	pki := t.TempDir()
	if err := transport.WriteCA(pki, "chaos CA", transport.KeyECDSA, 0, false); err != nil {
		t.Fatal(err)
	}
	return startProcClusterOf(t, bins, func(name, _ string) []string {
		certFile, keyFile, err := transport.WriteNodeCert(pki, filepath.Join(pki, name), transport.NodeCertOptions{Node: name, Role: transport.RoleCore}, true)
		if err != nil {
			t.Fatal(err)
		}
		// Core nodes only: they host the channels (-serve-data).
		return []string{"-tls-cert", certFile, "-tls-key", keyFile, "-tls-ca", filepath.Join(pki, transport.CACertFile), "-serve-data"}
	})
}

// startProcClusterOf starts one node per binary of bins; extra, if set,
// gives the flags to add for a node and its binary.
func startProcClusterOf(t *testing.T, bins []string, extra func(name, bin string) []string) *procCluster {
	t.Helper()
	n := len(bins)
	pc := &procCluster{token: "chaos-token"}
	dir := t.TempDir()
	type ports struct{ http, gossip, cluster int }
	ps := make([]ports, n)
	for i := range ps {
		ps[i] = ports{testcluster.FreePort(t), testcluster.FreePort(t), testcluster.FreePort(t)}
	}
	for i := range n {
		name := fmt.Sprintf("n%d", i+1)
		args := []string{"agent", "-name", name, "-role", "core", "-zone", "z" + strconv.Itoa(i+1),
			"-data-dir", filepath.Join(dir, name), "-bind", "127.0.0.1",
			"-gossip-port", strconv.Itoa(ps[i].gossip), "-cluster-port", strconv.Itoa(ps[i].cluster),
			"-http-addr", "127.0.0.1:" + strconv.Itoa(ps[i].http),
			"-bootstrap-expect", strconv.Itoa(n), "-token", pc.token, "-log-level", "warn",
			// A flag, not $SHARDNET_CLUSTER_KEY: the old binary of
			// TestRollingUpgrade reads no environment.
			"-cluster-key", chaosClusterKey}
		for j := range n {
			if j != i {
				args = append(args, "-join", "127.0.0.1:"+strconv.Itoa(ps[j].gossip))
			}
		}
		if extra != nil {
			args = append(args, extra(name, bins[i])...)
		}
		p := &proc{name: name, bin: bins[i], args: args, http: "127.0.0.1:" + strconv.Itoa(ps[i].http),
			logPath: filepath.Join(dir, name+".log")}
		pc.procs = append(pc.procs, p)
	}
	t.Cleanup(func() {
		for _, p := range pc.procs {
			p.kill(t)
		}
		if t.Failed() {
			for _, p := range pc.procs {
				t.Logf("--- last lines of %s's log:\n%s", p.name, tail(p.logPath, 40))
			}
		}
	})
	for _, p := range pc.procs {
		p.start(t)
	}
	for i := range pc.procs {
		pc.waitReady(t, i)
	}
	return pc
}

func (p *proc) start(t *testing.T) {
	t.Helper()
	logf, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(logf, "=== start %s\n", time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(p.bin, p.args...)
	cmd.Env = append(os.Environ(), "SHARDNET_GOSSIP_KEY="+chaosGossipKey())
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		t.Fatalf("start %s: %v", p.name, err)
	}
	p.cmd, p.done = cmd, make(chan struct{})
	done := p.done
	go func() {
		_ = cmd.Wait()
		logf.Close()
		close(done)
	}()
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *proc) kill(t *testing.T) {
	if p.cmd == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		t.Errorf("%s did not exit after SIGKILL", p.name)
	}
	p.cmd = nil
}

func (pc *procCluster) clients() []*api.Client {
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16, IdleConnTimeout: 30 * time.Second}}
	out := make([]*api.Client, len(pc.procs))
	for i, p := range pc.procs {
		out[i] = api.NewClient(p.http, pc.token, hc)
	}
	return out
}

// waitReady waits until node i serves and knows a meta leader.
func (pc *procCluster) waitReady(t *testing.T, i int) {
	t.Helper()
	cl := pc.clients()[i]
	testcluster.WaitFor(t, 60*time.Second, func() error {
		select {
		case <-pc.procs[i].done:
			return fmt.Errorf("%s exited:\n%s", pc.procs[i].name, tail(pc.procs[i].logPath, 20))
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		return cl.Health(ctx, true)
	})
}

// createChannel creates a channel of 3 replicas (retrying until the meta
// group takes it) and waits for its leader.
func (pc *procCluster) createChannel(t *testing.T, channel string) {
	t.Helper()
	cl := pc.clients()
	testcluster.WaitFor(t, 60*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := cl[0].CreateChannel(ctx, api.CreateChannelRequest{Name: channel, Replicas: 3})
		if api.IsConflict(err) && api.AsError(err).Code == api.CodeChannelExists {
			return nil
		}
		return err
	})
	pc.waitChannelLeader(t, channel)
}

func (pc *procCluster) waitChannelLeader(t *testing.T, channel string) {
	t.Helper()
	cls := pc.clients()
	testcluster.WaitFor(t, 60*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		ch, err := cls[0].Channel(ctx, channel)
		if err != nil {
			return err
		}
		if ch.Leader == "" {
			return errors.New("no channel leader yet")
		}
		return nil
	})
}

// checkLogs fails the test on a panic in any node's log.
func (pc *procCluster) checkLogs(t *testing.T) {
	t.Helper()
	for _, p := range pc.procs {
		f, err := os.Open(p.logPath)
		if err != nil {
			t.Error(err)
			continue
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		errorsSeen := 0
		for sc.Scan() {
			line := sc.Text()
			if strings.HasPrefix(line, "panic:") || strings.Contains(line, "fatal error:") {
				t.Errorf("%s: %s", p.name, line)
			}
			if strings.Contains(line, "[ERROR]") {
				errorsSeen++
				if errorsSeen <= 3 {
					t.Logf("%s logged: %s", p.name, line)
				}
			}
		}
		f.Close()
		if errorsSeen > 3 {
			t.Logf("%s logged %d ERROR lines in all", p.name, errorsSeen)
		}
	}
}

func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
