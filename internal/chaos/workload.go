package chaos

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/shardnet/shardnet/api"
)

// Client is one logical client of the workload: it issues one operation at
// a time against a channel through any node's HTTP API and records each in
// the history. Its values are unique in the history ("c<id>-<seq>").
type Client struct {
	ID      int
	Channel string
	Nodes   []*api.Client // an operation names the node it goes to
	Rec     *Recorder
	Stats   *Stats

	// StaleReads is a deliberate bug, for tests that the checker catches
	// one: reads are sent with consistency=stale (any replica, however far
	// behind) but recorded as ordinary linearizable gets.
	StaleReads bool

	proc  int
	seq   int
	known map[string]uint64 // key → the modify index this client last saw; 0: absent
	value map[string]string // key → the value this client last saw; absent: not there
}

// NewClient returns client id of channel, recording into rec.
func NewClient(id int, channel string, nodes []*api.Client, rec *Recorder, stats *Stats) *Client {
	return &Client{ID: id, Channel: channel, Nodes: nodes, Rec: rec, Stats: stats, proc: rec.NewProcess(),
		known: map[string]uint64{}, value: map[string]string{}}
}

func (c *Client) nextValue() string {
	c.seq++
	return fmt.Sprintf("c%d-%d", c.ID, c.seq)
}

// Get reads key through node with the given consistency ("" is
// linearizable) and reports StatusOK when the read was recorded. A read
// that failed is dropped (StatusUnknown): it tells nothing.
func (c *Client) Get(ctx context.Context, node int, key string, level api.Consistency) Status {
	in := Input{Kind: OpGet, Key: key}
	sent := level
	if c.StaleReads {
		sent = api.Stale
	}
	call := c.Rec.Now()
	b, index, err := c.Nodes[node].Get(ctx, c.Channel, key, api.GetOptions{Consistency: sent})
	ret := c.Rec.Now()
	var out Output
	switch {
	case err == nil:
		out = Output{Status: StatusOK, Found: true, Value: string(b), Index: index}
		c.saw(key, true, string(b), index)
	case isCode(err, api.CodeKeyNotFound):
		out = Output{Status: StatusOK}
		c.saw(key, false, "", 0)
	default:
		c.Stats.count(OpGet, "dropped", err)
		c.Rec.Attempt(false, call, ret, false)
		return StatusUnknown
	}
	c.Rec.Attempt(false, call, ret, true)
	c.Stats.count(OpGet, "ok", nil)
	c.Rec.Add(c.proc, in, out, call, ret, fmt.Sprintf("node %d %s", node, orDefault(string(level), "linearizable")))
	return StatusOK
}

func (c *Client) saw(key string, found bool, value string, index uint64) {
	if !found {
		c.known[key] = 0
		delete(c.value, key)
		return
	}
	c.known[key], c.value[key] = index, value
}

// Txn runs a transaction on key through node: if the key still has the
// value this client last saw (or is still absent), put a fresh value and
// read it back; otherwise read the key.
func (c *Client) Txn(ctx context.Context, node int, key string) Status {
	in := Input{Kind: OpTxn, Key: key, Value: c.nextValue()}
	req := api.TxnRequest{
		Success: []api.TxnOp{{Op: api.OpPut, Key: key, Value: []byte(in.Value)}, {Op: api.OpGet, Key: key}},
		Failure: []api.TxnOp{{Op: api.OpGet, Key: key}},
	}
	if v, ok := c.value[key]; ok {
		in.Expect = v
		req.Compares = []api.Compare{{Key: key, Target: api.TargetValue, Result: api.Equal, Value: []byte(v)}}
	} else {
		in.ExpectAbsent = true
		req.Compares = []api.Compare{{Key: key, Target: api.TargetCreateIndex, Result: api.Equal, Index: 0}}
	}
	call := c.Rec.Now()
	resp, err := c.Nodes[node].Txn(ctx, c.Channel, req)
	ret := c.Rec.Now()
	if err != nil {
		return c.finishWrite(node, in, 0, err, call, ret)
	}
	out := Output{Status: StatusOK, Index: resp.Index, Succeeded: resp.Succeeded}
	if n := len(resp.Results); n > 0 && resp.Results[n-1].Op == api.OpGet {
		r := resp.Results[n-1]
		out.Found, out.Value, out.ReadIndex = r.Found, string(r.Value), r.ModifyIndex
	} else {
		c.Stats.count(OpTxn, "malformed", fmt.Errorf("txn answer without its get: %+v", resp))
	}
	c.saw(key, out.Found, out.Value, out.ReadIndex)
	c.Rec.Attempt(true, call, ret, true)
	c.Stats.count(OpTxn, "ok", nil)
	c.Rec.Add(c.proc, in, out, call, ret, fmt.Sprintf("node %d", node))
	return StatusOK
}

// Put writes a fresh value under key through node; with cas, only if the
// key's modify index is the one this client last saw (0: absent).
func (c *Client) Put(ctx context.Context, node int, key string, cas bool) Status {
	in := Input{Kind: OpPut, Key: key, Value: c.nextValue()}
	var opts api.PutOptions
	if cas {
		in.Kind, in.CAS = OpCASPut, c.known[key]
		opts.CAS = &in.CAS
	}
	call := c.Rec.Now()
	index, err := c.Nodes[node].Put(ctx, c.Channel, key, []byte(in.Value), opts)
	ret := c.Rec.Now()
	return c.finishWrite(node, in, index, err, call, ret)
}

// Delete deletes key through node.
func (c *Client) Delete(ctx context.Context, node int, key string) Status {
	in := Input{Kind: OpDelete, Key: key}
	call := c.Rec.Now()
	index, err := c.Nodes[node].Delete(ctx, c.Channel, key, api.DeleteOptions{})
	ret := c.Rec.Now()
	return c.finishWrite(node, in, index, err, call, ret)
}

func (c *Client) finishWrite(node int, in Input, index uint64, err error, call, ret int64) Status {
	out := Output{Index: index}
	var why string
	switch {
	case err == nil:
		out.Status = StatusOK
		c.saw(in.Key, in.Kind != OpDelete, in.Value, index)
	case in.Kind == OpCASPut && api.IsCASMismatch(err):
		out.Status, out.Index = StatusFailed, api.AsError(err).Index
	case in.Kind == OpDelete && isCode(err, api.CodeKeyNotFound):
		out.Status, out.Index = StatusFailed, api.AsError(err).Index
		c.saw(in.Key, false, "", 0)
	default:
		c.Rec.Attempt(true, call, ret, false)
		var applied bool
		applied, why = mayBeApplied(err)
		if !applied {
			c.Stats.count(in.Kind, "refused", err)
			if in.Value != "" {
				c.Rec.Refused(in.Value, why)
			}
			return StatusFailed
		}
		out.Status = StatusUnknown
	}
	if out.Status != StatusUnknown {
		c.Rec.Attempt(true, call, ret, true) // a definite answer
	}
	c.Stats.count(in.Kind, out.Status.String(), err)
	meta := fmt.Sprintf("node %d", node)
	if why != "" {
		meta += ": " + why
	}
	c.Rec.Add(c.proc, in, out, call, ret, meta)
	if out.Status == StatusUnknown {
		// The operation never returns in the history; this client goes on
		// as a new process (a row of its own in the visualization).
		c.proc = c.Rec.NewProcess()
	}
	return out.Status
}

// mayBeApplied says whether a failed write may have been applied, by the
// API contract (docs/design.md "D3", docs/api.md): a 4xx was not; a 503
// no_leader, unavailable or not_ready (api.IsRetryable) was provably never
// proposed; a request that never reached a node (refused connection) was
// not sent. Anything else — outcome_unknown, timeout, a 500, a connection
// that broke after the request went out, the client's own deadline — may
// have been.
func mayBeApplied(err error) (bool, string) {
	if e := api.AsError(err); e != nil {
		switch {
		case e.Status >= 400 && e.Status < 500:
			return false, e.Code
		case api.IsRetryable(err):
			return false, e.Code
		}
		return true, e.Code
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return false, "connection refused"
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return true, "client timeout"
	}
	return true, "connection error"
}

func isCode(err error, code string) bool {
	e := api.AsError(err)
	return e != nil && e.Code == code
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

// Stats counts what a workload did, by operation and outcome, and the error
// codes it met. Safe for concurrent use.
type Stats struct {
	mu       sync.Mutex
	outcomes map[string]int // "put ok", "cas unknown", "get dropped", ...
	codes    map[string]int // error code (or transport error kind) → count
	examples map[string]string
}

// NewStats returns empty counters.
func NewStats() *Stats {
	return &Stats{outcomes: map[string]int{}, codes: map[string]int{}, examples: map[string]string{}}
}

func (s *Stats) count(kind OpKind, outcome string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.outcomes[kind.String()+" "+outcome]++
	if err != nil {
		code := "transport"
		if e := api.AsError(err); e != nil {
			code = fmt.Sprintf("%d %s", e.Status, e.Code)
		} else if errors.Is(err, context.DeadlineExceeded) {
			code = "client timeout"
		}
		s.codes[code]++
		if _, ok := s.examples[code]; !ok {
			s.examples[code] = err.Error()
		}
	}
}

// Count returns the number of operations of kind with outcome ("ok",
// "failed", "unknown", "refused", "dropped"); an empty kind counts all kinds.
func (s *Stats) Count(kind, outcome string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for k, v := range s.outcomes {
		kk, oo, _ := strings.Cut(k, " ")
		if (kind == "" || kk == kind) && (outcome == "" || oo == outcome) {
			n += v
		}
	}
	return n
}

// Code returns how often an error code ("503 outcome_unknown", "500
// internal", "transport", ...) was met, and one example message.
func (s *Stats) Code(code string) (int, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.codes[code], s.examples[code]
}

func (s *Stats) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var parts []string
	for k, v := range s.outcomes {
		parts = append(parts, fmt.Sprintf("%s=%d", k, v))
	}
	sort.Strings(parts)
	var codes []string
	for k, v := range s.codes {
		codes = append(codes, fmt.Sprintf("%s=%d (e.g. %q)", k, v, s.examples[k]))
	}
	sort.Strings(codes)
	return "ops: " + strings.Join(parts, " ") + "; errors: " + strings.Join(codes, ", ")
}

// Workload runs Clients concurrent clients on Keys of Channel until its
// context ends.
type Workload struct {
	Channel string
	Keys    []string
	Clients int
	Nodes   []*api.Client
	Rec     *Recorder
	Stats   *Stats
	Seed    uint64
	// OpTimeout bounds each operation (the client's own deadline; a write
	// that hits it has an unknown outcome). Default 5 s.
	OpTimeout time.Duration
	// Think is the most a client pauses between operations (uniform), which
	// keeps histories small enough to check. Default 0.
	Think time.Duration
}

// Run drives the clients until ctx ends and the operations in flight finish.
func (w *Workload) Run(ctx context.Context) {
	if w.OpTimeout == 0 {
		w.OpTimeout = 5 * time.Second
	}
	var wg sync.WaitGroup
	for i := range w.Clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.client(ctx, i)
		}()
	}
	wg.Wait()
}

func (w *Workload) client(ctx context.Context, id int) {
	rng := rand.New(rand.NewPCG(w.Seed, uint64(id)))
	c := NewClient(id, w.Channel, w.Nodes, w.Rec, w.Stats)
	for ctx.Err() == nil {
		key := w.Keys[rng.IntN(len(w.Keys))]
		node := rng.IntN(len(w.Nodes))
		// Each operation gets its own deadline, not the run's, so the
		// operations in flight when the run ends finish normally.
		octx, cancel := context.WithTimeout(context.Background(), w.OpTimeout)
		switch p := rng.IntN(100); {
		case p < 30:
			c.Get(octx, node, key, "")
		case p < 40:
			c.Get(octx, node, key, api.Lease)
		case p < 58:
			c.Put(octx, node, key, false)
		case p < 80:
			c.Put(octx, node, key, true)
		case p < 90:
			c.Txn(octx, node, key)
		default:
			c.Delete(octx, node, key)
		}
		cancel()
		if w.Think > 0 {
			select {
			case <-ctx.Done():
			case <-time.After(time.Duration(rng.Int64N(int64(w.Think)))):
			}
		}
	}
}
