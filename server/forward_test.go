package server

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shardnet/shardnet/api"
	"github.com/shardnet/shardnet/cluster"
	"github.com/shardnet/shardnet/fsm"
	"github.com/shardnet/shardnet/shard"
)

// node is one test node: a Server over a fake backend, its public
// httptest listener, and a loopback "cluster" listener serving
// ServeForwarded (what nodes of the previous version forward: forward.go).
type node struct {
	id      string
	f       *fakeBackend
	s       *Server
	public  string // base URL
	cluster string // host:port of the forwarded listener
	client  *api.Client
}

func startNode(t *testing.T, id, token string, channels ...string) *node {
	t.Helper()
	f := newFake(channels...)
	s, hs := testServer(t, Config{Backend: f, NodeID: id, Token: token})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.ServeForwarded(l) }()
	t.Cleanup(func() {
		// Shutdown leaves the peers' listener serving (a stopping node
		// answers its peers until its groups have handed over); Close ends it.
		if err := s.Shutdown(context.Background()); err != nil {
			t.Errorf("shutdown %s: %v", id, err)
		}
		if err := s.Close(); err != nil {
			t.Errorf("close %s: %v", id, err)
		}
		if err := <-done; err != nil {
			t.Errorf("ServeForwarded %s: %v", id, err)
		}
	})
	return &node{id: id, f: f, s: s, public: hs.URL, cluster: l.Addr().String(), client: api.NewClient(hs.URL, token, hs.Client())}
}

// link makes from's DialNode reach to's forwarded listener over loopback.
func link(t *testing.T, nodes ...*node) {
	for _, n := range nodes {
		n.f.dialNode = func(ctx context.Context, addr string) (net.Conn, error) {
			for _, m := range nodes {
				if m.cluster == addr {
					var d net.Dialer
					return d.DialContext(ctx, "tcp", addr)
				}
			}
			return nil, errors.New("no such node")
		}
	}
}

// oldNode says the node that can answer is n, of the previous version (it
// takes no route calls), which the server forwards to.
func oldNode(n *node, sentinel error) error {
	return &cluster.PreviousVersionError{Redirect: &shard.RedirectError{Err: sentinel, NodeID: n.id, Addr: n.cluster}}
}

// The one road left for whole HTTP requests: to a node of the previous
// version, once, with the client's answer coming back unchanged.
func TestForwardToPreviousVersionOneHop(t *testing.T) {
	a, b := startNode(t, "a", "tok", "nft"), startNode(t, "b", "tok", "nft")
	link(t, a, b)
	a.f.propose = func(context.Context, string, []byte) (*fsm.Result, error) {
		return nil, oldNode(b, shard.ErrNotLeader)
	}
	// The key travels exactly as escaped: the leader stores these bytes.
	key := "dir/../x%2Fy sp/./ü"
	idx, err := a.client.Put(t.Context(), "nft", key, []byte("v1"), api.PutOptions{})
	if err != nil {
		t.Fatalf("put through a: %v", err)
	}
	if idx != 1 {
		t.Errorf("index %d, want 1", idx)
	}
	if a.f.proposals.Load() != 1 || b.f.proposals.Load() != 1 {
		t.Errorf("proposals a=%d b=%d, want 1 and 1", a.f.proposals.Load(), b.f.proposals.Load())
	}
	e, found, _, err := b.f.mem.Get(t.Context(), "nft", []byte(key), shard.Linearizable)
	if err != nil || !found || string(e.Value) != "v1" {
		t.Fatalf("b holds %q=%q (found %v, %v)", key, e.Value, found, err)
	}
	// Reads forward too, and the answer's headers come back.
	a.f.get = func(context.Context, string, []byte, shard.ReadLevel) (fsm.Entry, bool, uint64, error) {
		return fsm.Entry{}, false, 0, oldNode(b, shard.ErrNotHosted)
	}
	v, idx, err := a.client.Get(t.Context(), "nft", key, api.GetOptions{Consistency: api.Stale})
	if err != nil || string(v) != "v1" || idx != 1 {
		t.Fatalf("forwarded get: %q %d %v", v, idx, err)
	}
	if got := a.s.metricsForwarded("ok"); got != 2 {
		t.Errorf("forwarded ok = %v, want 2", got)
	}
}

// A redirect is no longer the server's business: it is a status.
func TestRedirectIsAStatus(t *testing.T) {
	a, b := startNode(t, "a", "", "nft"), startNode(t, "b", "", "nft")
	link(t, a, b)
	a.f.propose = func(context.Context, string, []byte) (*fsm.Result, error) {
		return nil, &shard.RedirectError{Err: shard.ErrNotLeader, NodeID: b.id, Addr: b.cluster}
	}
	_, err := a.client.Put(t.Context(), "nft", "k", []byte("v"), api.PutOptions{})
	if e := api.AsError(err); e == nil || e.Status != 503 || e.Code != api.CodeNoLeader || e.RetryAfter == 0 {
		t.Fatalf("redirect answered %v, want 503 no_leader with Retry-After", err)
	}
	if b.f.proposals.Load() != 0 {
		t.Errorf("b proposed %d times; the server must not forward a redirect", b.f.proposals.Load())
	}
}

// A forwarded request is served where it arrived or refused: the backend
// is told (cluster.ServedLocally) and the server does not forward it again.
func TestForwardedRequestIsNotSentOn(t *testing.T) {
	a, b := startNode(t, "a", "", "nft"), startNode(t, "b", "", "nft")
	link(t, a, b)
	a.f.propose = func(context.Context, string, []byte) (*fsm.Result, error) {
		return nil, oldNode(b, shard.ErrNotLeader)
	}
	var servedLocally atomic.Bool
	b.f.propose = func(ctx context.Context, _ string, _ []byte) (*fsm.Result, error) {
		servedLocally.Store(cluster.ServedLocally(ctx))
		return nil, oldNode(a, shard.ErrNotLeader)
	}
	_, err := a.client.Put(t.Context(), "nft", "k", []byte("v"), api.PutOptions{})
	e := api.AsError(err)
	if e == nil || e.Status != 503 || e.Code != api.CodeNoLeader || e.RetryAfter == 0 {
		t.Fatalf("loop answered %v, want 503 no_leader with Retry-After", err)
	}
	if a.f.proposals.Load() != 1 || b.f.proposals.Load() != 1 {
		t.Errorf("proposals a=%d b=%d, want exactly one each (one hop)", a.f.proposals.Load(), b.f.proposals.Load())
	}
	if !servedLocally.Load() {
		t.Error("b's backend was not told the request came from another node")
	}
}

func TestForwardCreateChannelToPreviousVersion(t *testing.T) {
	a, b := startNode(t, "a", "tok"), startNode(t, "b", "tok")
	link(t, a, b)
	a.f.createChannel = func(context.Context, api.CreateChannelRequest) (api.Channel, error) {
		return api.Channel{}, oldNode(b, cluster.ErrNotMetaLeader)
	}
	ch, err := a.client.CreateChannel(t.Context(), api.CreateChannelRequest{Name: "nft", Replicas: 1})
	if err != nil {
		t.Fatalf("create through a: %v", err)
	}
	if ch.Name != "nft" || ch.Leader != "node-1" {
		t.Errorf("created %+v", ch)
	}
	if _, err := b.f.mem.Channel(t.Context(), "nft"); err != nil {
		t.Errorf("b (the meta leader) does not have the channel: %v", err)
	}
	// The duplicate's 409 comes back from b as it is.
	_, err = a.client.CreateChannel(t.Context(), api.CreateChannelRequest{Name: "nft", Replicas: 1})
	if e := api.AsError(err); e == nil || e.Status != 409 || e.Code != api.CodeChannelExists {
		t.Fatalf("duplicate create: %v, want 409 channel_exists", err)
	}
}

func TestForwardFailures(t *testing.T) {
	a, b := startNode(t, "a", "", "nft"), startNode(t, "b", "", "nft")
	link(t, a, b)

	// Unreachable: nothing was sent, so it is safe to retry.
	a.f.propose = func(context.Context, string, []byte) (*fsm.Result, error) {
		return nil, &cluster.PreviousVersionError{Redirect: &shard.RedirectError{Err: shard.ErrNotLeader, NodeID: "c", Addr: "127.0.0.1:1"}}
	}
	_, err := a.client.Put(t.Context(), "nft", "k", []byte("v"), api.PutOptions{})
	if e := api.AsError(err); e == nil || e.Status != 503 || e.Code != api.CodeUnavailable || e.RetryAfter == 0 || !api.IsRetryable(err) {
		t.Fatalf("unreachable leader: %v, want 503 unavailable, retryable", err)
	}

	// The leader drops the connection after receiving a write: outcome
	// unknown, not retryable.
	a.f.propose = func(context.Context, string, []byte) (*fsm.Result, error) {
		return nil, oldNode(b, shard.ErrNotLeader)
	}
	b.f.propose = func(context.Context, string, []byte) (*fsm.Result, error) { panic(http.ErrAbortHandler) }
	_, err = a.client.Put(t.Context(), "nft", "k", []byte("v"), api.PutOptions{})
	if !api.IsOutcomeUnknown(err) || api.IsRetryable(err) {
		t.Fatalf("dropped forward of a write: %v, want outcome_unknown", err)
	}
}

// metricsForwarded reads the forwarded_total counter of a result.
func (s *Server) metricsForwarded(result string) float64 {
	return metricValue(s.reg, "shardnet_http_forwarded_total", map[string]string{"result": result})
}

// metricValue reads a counter or gauge from a registry (-1 when absent).
func metricValue(reg *prometheus.Registry, name string, labels map[string]string) float64 {
	mfs, err := reg.Gather()
	if err != nil {
		return -1
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if want, ok := labels[lp.GetName()]; ok && want != lp.GetValue() {
					continue next
				}
			}
			if c := m.GetCounter(); c != nil {
				return c.GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	return -1
}
