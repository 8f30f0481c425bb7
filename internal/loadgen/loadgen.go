package loadgen

import (
	"bytes"
	"cmp"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/shardnet/shardnet/api"
)

// Op is the kind of request a run sends.
type Op string

// The operations of a run.
const (
	OpPut     Op = "put"      // PUT of a key
	OpGet     Op = "get"      // GET of a key at Config.Read
	OpMixed   Op = "mixed"    // a GET with probability Config.ReadRatio, else a PUT
	OpTxn     Op = "txn"      // a compare-and-put transaction of one key
	OpFilePut Op = "file-put" // PUT of a file of Config.ValueSize bytes under bench/
	OpFileGet Op = "file-get" // GET of such a file
)

// Ops lists the operations in the order the help shows them.
var Ops = []Op{OpPut, OpGet, OpMixed, OpTxn, OpFilePut, OpFileGet}

// Target says which node gets a channel's requests.
type Target string

// The targets.
const (
	TargetAny      Target = "any"      // the Config.Addrs in turn
	TargetLeader   Target = "leader"   // the channel's leader
	TargetFollower Target = "follower" // a voter that does not lead it
)

// Config is one run. Zero fields take the defaults New documents.
type Config struct {
	Op Op
	// Addrs are the nodes' API base URLs ("http://host:port"; "host:port"
	// is plain HTTP). The first answers the set-up calls (channels,
	// nodes); with TargetAny the load goes to each in turn.
	Addrs []string
	Token string
	// Transport carries TLS settings (a private CA); nil: Go's default.
	// The run uses a clone with its own connection limits.
	Transport *http.Transport

	// Channel is the channel's name (default "bench"); with Channels > 1
	// the channels Channel-0 .. Channel-(Channels-1), key k going to
	// channel k mod Channels.
	Channel  string
	Channels int
	// Create creates the channels that are missing, with Replicas replicas
	// (default 3), and waits until each serves.
	Create   bool
	Replicas int
	Target   Target

	// Conns bounds the TCP connections to each node (default 16); Clients
	// is how many request loops share them (default Conns).
	Conns, Clients int
	// ValueSize is the bytes of each value or file (default 256); Keys the
	// key space (default 10,000), drawn uniformly.
	ValueSize, Keys int
	// Read is the read level of get, mixed and file-get (default
	// linearizable); ReadRatio the fraction of reads of mixed.
	Read      api.Consistency
	ReadRatio float64
	// The run stops after Duration (default 10 s) or, when Count > 0, after
	// Count requests, whichever comes first.
	Duration time.Duration
	Count    int64
	// Rate limits the requests per second of all loops together (0: none).
	Rate float64
	// Prefill writes every key (or file) once before the measured part.
	Prefill bool
	// Timeout bounds the wait for each answer's head (default 30 s).
	Timeout time.Duration
	// Progress, when set, gets a line each second: req/s, errors, p99.
	// ProgressTTY rewrites one line in place instead of adding lines.
	Progress    io.Writer
	ProgressTTY bool
	// Seed makes the key sequence repeatable (0: a random one).
	Seed uint64
}

// Result is what a run measured; its JSON is what `shardnet bench -json`
// prints.
type Result struct {
	Op        Op     `json:"op"`
	Channels  int    `json:"channels"`
	Conns     int    `json:"conns"`
	Clients   int    `json:"clients"`
	ValueSize int    `json:"value_size"`
	Keys      int    `json:"keys"`
	Read      string `json:"read"`
	Target    Target `json:"target"`
	// Requests counts the answered and failed requests of the measured
	// part (not the prefill); Errors those that were not a 2xx, by status
	// ("transport" for no answer at all).
	Requests       int64            `json:"requests"`
	Errors         int64            `json:"errors"`
	ErrorsByStatus map[string]int64 `json:"errors_by_status"`
	DurationS      float64          `json:"duration_s"`
	// Throughput is successful requests per second.
	Throughput float64 `json:"throughput"`
	// Latency is of successful requests, in milliseconds.
	Latency Latency `json:"latency_ms"`
	// ClientCPUusPerReq is this process's CPU (user+system) per request of
	// the measured part, in microseconds.
	ClientCPUusPerReq float64 `json:"client_cpu_us_per_req"`

	ReadRatio float64 `json:"read_ratio,omitempty"` // mixed only
	Rate      float64 `json:"rate,omitempty"`
	// StoppedBy is "count", "duration" or "interrupt".
	StoppedBy string `json:"stopped_by"`
	// Endpoints maps each channel to the node its load went to (leader or
	// follower targets).
	Endpoints map[string]string `json:"endpoints,omitempty"`
	// LeaderMoved lists the channels whose leader was another node after
	// the run than before: the load did not go where it was meant to.
	LeaderMoved []string `json:"leader_moved,omitempty"`

	// Hist holds every successful request's latency, for printing.
	Hist *Histogram `json:"-"`
}

// Latency summarises a histogram in milliseconds.
type Latency struct {
	Mean float64 `json:"mean"`
	Min  float64 `json:"min"`
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	P999 float64 `json:"p999"`
	Max  float64 `json:"max"`
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func latencyOf(h *Histogram) Latency {
	return Latency{
		Mean: ms(h.Mean()), Min: ms(h.Min()), P50: ms(h.Quantile(0.5)), P90: ms(h.Quantile(0.9)),
		P99: ms(h.Quantile(0.99)), P999: ms(h.Quantile(0.999)), Max: ms(h.Max()),
	}
}

// ErrConfig wraps every error of a Config that cannot run.
var ErrConfig = errors.New("loadgen: invalid configuration")

// normalize fills the defaults and checks the rest.
func (c *Config) normalize() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrConfig}, args...)...)
	}
	if !slices.Contains(Ops, c.Op) {
		return bad("unknown operation %q", c.Op)
	}
	if len(c.Addrs) == 0 {
		return bad("no node address")
	}
	c.Channel = cmp.Or(c.Channel, "bench")
	c.Channels = cmp.Or(c.Channels, 1)
	c.Replicas = cmp.Or(c.Replicas, 3)
	c.Target = cmp.Or(c.Target, TargetAny)
	c.Conns = cmp.Or(c.Conns, 16)
	c.Clients = cmp.Or(c.Clients, c.Conns)
	c.ValueSize = cmp.Or(c.ValueSize, 256)
	c.Keys = cmp.Or(c.Keys, 10000)
	c.Read = cmp.Or(c.Read, api.Linearizable)
	c.Duration = cmp.Or(c.Duration, 10*time.Second)
	c.Timeout = cmp.Or(c.Timeout, 30*time.Second)
	switch {
	case c.Target != TargetAny && c.Target != TargetLeader && c.Target != TargetFollower:
		return bad("target %q is none of leader, follower, any", c.Target)
	case c.Channels < 1 || c.Conns < 1 || c.Clients < 1 || c.Keys < 1 || c.Replicas < 1:
		return bad("channels, conns, clients, keys and replicas must be at least 1")
	case c.ValueSize < 0 || c.Count < 0 || c.Rate < 0 || c.Duration < 0:
		return bad("value size, count, rate and duration must not be negative")
	case c.ReadRatio < 0 || c.ReadRatio > 1:
		return bad("read ratio %v is not between 0 and 1", c.ReadRatio)
	case c.Read != api.Linearizable && c.Read != api.Lease && c.Read != api.Stale:
		return bad("read level %q is none of linearizable, lease, stale", c.Read)
	}
	return nil
}

// endpoint is one node's API base.
type endpoint struct {
	scheme, host string
}

func parseEndpoint(addr string) (endpoint, error) {
	if !strings.Contains(addr, "://") {
		addr = "http://" + addr
	}
	u, err := url.Parse(addr)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return endpoint{}, fmt.Errorf("%w: address %q is not http(s)://host:port", ErrConfig, addr)
	}
	return endpoint{scheme: u.Scheme, host: u.Host}, nil
}

func (e endpoint) String() string { return e.scheme + "://" + e.host }

// runner is one run's shared, read-only state plus the stop signals.
type runner struct {
	cfg      Config
	tr       *http.Transport
	admin    *api.Client
	eps      []endpoint // TargetAny: Config.Addrs; else one per distinct target
	chanEP   []int      // channel index → eps index (leader and follower)
	channels []string
	query    string // the read level, for reads

	value    []byte
	value64  []byte // base64 of value, for txn bodies
	hdrWrite http.Header
	hdrTxn   http.Header
	hdrRead  http.Header

	ctx     context.Context
	stop    atomic.Bool
	issued  atomic.Int64
	limiter *rate.Limiter
	loops   []*loop
}

// Run runs cfg until it stops (or ctx ends: the result then holds what was
// measured so far, StoppedBy "interrupt"). An error means the run could not
// start: a bad Config, a channel that does not exist or has no leader, a
// prefill write that failed.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	if err := cfg.normalize(); err != nil {
		return nil, err
	}
	r := &runner{cfg: cfg, ctx: ctx}
	if err := r.setup(); err != nil {
		return nil, err
	}
	defer r.tr.CloseIdleConnections()
	if err := r.prepareTargets(ctx); err != nil {
		return nil, err
	}
	if cfg.Prefill {
		if err := r.prefill(); err != nil {
			return nil, err
		}
	}
	res := r.measure()
	r.checkLeaders(res)
	return res, nil
}

func (r *runner) setup() error {
	cfg := &r.cfg
	var tr *http.Transport
	if cfg.Transport != nil {
		tr = cfg.Transport.Clone()
	} else {
		tr = http.DefaultTransport.(*http.Transport).Clone()
	}
	// The generator talks to the nodes directly, over HTTP/1.1, so that
	// -conns counts TCP connections (HTTP/2 would multiplex on one).
	tr.Proxy = nil
	tr.ForceAttemptHTTP2 = false
	tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	tr.MaxConnsPerHost = cfg.Conns
	tr.MaxIdleConnsPerHost = cfg.Conns
	tr.MaxIdleConns = 0
	tr.DisableCompression = true
	tr.ResponseHeaderTimeout = cfg.Timeout
	r.tr = tr
	for _, a := range cfg.Addrs {
		ep, err := parseEndpoint(a)
		if err != nil {
			return err
		}
		r.eps = append(r.eps, ep)
	}
	r.admin = api.NewClient(r.eps[0].String(), cfg.Token, &http.Client{Transport: tr, Timeout: cfg.Timeout})
	if cfg.Channels == 1 {
		r.channels = []string{cfg.Channel}
	} else {
		for i := range cfg.Channels {
			r.channels = append(r.channels, cfg.Channel+"-"+strconv.Itoa(i))
		}
	}
	if cfg.Read != api.Linearizable {
		r.query = "consistency=" + string(cfg.Read)
	}
	// One value for every write: the server stores what it is given, and
	// varying bytes would cost the generator CPU for nothing it measures.
	r.value = make([]byte, cfg.ValueSize)
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	for i := range r.value {
		r.value[i] = alphabet[i%len(alphabet)]
	}
	r.value64 = []byte(base64.StdEncoding.EncodeToString(r.value))
	auth := http.Header{}
	if cfg.Token != "" {
		auth.Set("Authorization", "Bearer "+cfg.Token)
	}
	r.hdrRead = auth
	r.hdrWrite = auth.Clone()
	r.hdrWrite.Set("Content-Type", "application/octet-stream")
	r.hdrTxn = auth.Clone()
	r.hdrTxn.Set("Content-Type", "application/json")
	if cfg.Rate > 0 {
		// A burst of 10 ms of requests: smooth, without a timer per
		// request at high rates.
		r.limiter = rate.NewLimiter(rate.Limit(cfg.Rate), max(1, int(cfg.Rate/100)))
	}
	seed := cfg.Seed
	if seed == 0 {
		seed = rand.Uint64()
	}
	for i := range cfg.Clients {
		tmpl, err := http.NewRequestWithContext(r.ctx, http.MethodGet, "http://127.0.0.1/", nil)
		if err != nil {
			return fmt.Errorf("loadgen: request template: %w", err)
		}
		l := &loop{r: r, rng: rand.New(rand.NewPCG(seed, uint64(i))), rr: i, tmpl: tmpl}
		r.loops = append(r.loops, l)
	}
	return nil
}

// appendKey appends the name of key k: key-0000001 (at least 7 digits).
func appendKey(b []byte, k int) []byte {
	b = append(b, "key-"...)
	var digits [20]byte
	d := strconv.AppendInt(digits[:0], int64(k), 10)
	for i := len(d); i < 7; i++ {
		b = append(b, '0')
	}
	return append(b, d...)
}

// KeyName returns the name of key k of the key space, as a run writes it.
func KeyName(k int) string { return string(appendKey(nil, k)) }

// FilePath returns the path of file k, as a run writes it.
func FilePath(k int) string { return "bench/" + KeyName(k) }

// ChannelOf returns the channel that key k of a run over channels goes to.
func ChannelOf(channels []string, k int) string { return channels[k%len(channels)] }

// loop is one request loop: its random keys, its counters, its histogram.
type loop struct {
	r    *runner
	rng  *rand.Rand
	rr   int           // round-robin position over the endpoints (TargetAny)
	path []byte        // the last request's path, its buffer reused
	tmpl *http.Request // an empty request with the run's context

	hist   Histogram
	done   atomic.Int64 // finished requests, success or not
	errs   atomic.Int64
	status [600]atomic.Int64 // errors by status; [0]: no answer
}

// body is a request body over shared bytes: one small allocation per
// request; the bytes are never written, so a transport still reading them
// after the answer (a node that answered early) reads what it read first.
type body struct{ bytes.Reader }

func (*body) Close() error { return nil }

func newBody(b []byte) *body {
	bd := &body{}
	bd.Reset(b)
	return bd
}

// build makes the request of op for key k.
func (l *loop) build(op Op, k int) *http.Request {
	r := l.r
	chIdx := k % len(r.channels)
	var ep endpoint
	if r.chanEP != nil {
		ep = r.eps[r.chanEP[chIdx]]
	} else {
		ep = r.eps[l.rr%len(r.eps)]
		l.rr++
	}
	p := append(l.path[:0], "/v1/channels/"...)
	p = append(p, r.channels[chIdx]...)
	// A copy of the template carries the run's context without the second
	// allocation WithContext would make.
	req := new(http.Request)
	*req = *l.tmpl
	var rawQuery string
	switch op {
	case OpPut, OpFilePut:
		if op == OpPut {
			p = append(p, "/kv/"...)
		} else {
			p = append(p, "/files/bench/"...)
		}
		p = appendKey(p, k)
		req.Method, req.Header = http.MethodPut, r.hdrWrite
		req.Body, req.ContentLength = newBody(r.value), int64(len(r.value))
		if len(r.value) == 0 {
			req.Body = http.NoBody
		}
	case OpGet, OpFileGet:
		if op == OpGet {
			p = append(p, "/kv/"...)
		} else {
			p = append(p, "/files/bench/"...)
		}
		p = appendKey(p, k)
		req.Method, req.Header, rawQuery = http.MethodGet, r.hdrRead, r.query
	case OpTxn:
		p = append(p, "/txn"...)
		b := l.txnBody(k)
		req.Method, req.Header = http.MethodPost, r.hdrTxn
		req.Body, req.ContentLength = newBody(b), int64(len(b))
	}
	l.path = p
	req.URL = &url.URL{Scheme: ep.scheme, Host: ep.host, Path: string(p), RawQuery: rawQuery}
	req.Host = ep.host
	return req
}

// txnBody is a compare-and-put of key k: if its value is the run's value,
// put it again, else put it; every transaction writes (one log entry) and
// evaluates its compare against the stored value, as a CAS loop's does.
func (l *loop) txnBody(k int) []byte {
	v := l.r.value64
	b := make([]byte, 0, 160+3*len(v))
	b = append(b, `{"compares":[{"key":"`...)
	b = appendKey(b, k)
	b = append(b, `","target":"value","result":"equal","value":"`...)
	b = append(b, v...)
	for _, branch := range []string{`"}],"success":[{"op":"put","key":"`, `"}],"failure":[{"op":"put","key":"`} {
		b = append(b, branch...)
		b = appendKey(b, k)
		b = append(b, `","value":"`...)
		b = append(b, v...)
	}
	return append(b, `"}]}`...)
}

// send sends the request of op for key k and reads its answer; status is 0
// when there was none.
func (l *loop) send(op Op, k int) (status int, err error) {
	resp, err := l.r.tr.RoundTrip(l.build(op, k))
	if err != nil {
		return 0, err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, err
}

// take says whether the loop may send another request.
func (r *runner) take() bool {
	if r.stop.Load() {
		return false
	}
	if r.cfg.Count > 0 && r.issued.Add(1) > r.cfg.Count {
		return false
	}
	if r.limiter != nil && r.limiter.Wait(r.ctx) != nil {
		return false
	}
	return !r.stop.Load()
}

func (l *loop) run() {
	r := l.r
	op, keys, ratio := r.cfg.Op, r.cfg.Keys, r.cfg.ReadRatio
	for r.take() {
		k := l.rng.IntN(keys)
		o := op
		if op == OpMixed {
			o = OpPut
			if l.rng.Float64() < ratio {
				o = OpGet
			}
		}
		t0 := time.Now()
		status, err := l.send(o, k)
		lat := time.Since(t0)
		if err != nil && r.ctx.Err() != nil {
			return // cut off by the interrupt: neither a success nor the server's error
		}
		switch {
		case err != nil: // no answer, or one cut short
			l.errs.Add(1)
			l.status[0].Add(1)
		case status >= 200 && status < 300:
			l.hist.Record(lat)
		default:
			l.errs.Add(1)
			l.status[min(max(status, 1), len(l.status)-1)].Add(1)
		}
		l.done.Add(1)
	}
}

// measure runs the loops until the count, the duration or the context ends
// them, and sums what they measured.
func (r *runner) measure() *Result {
	cfg := &r.cfg
	cpu0, cpuOK := cpuTime()
	start := time.Now()
	var stoppedBy atomic.Value
	stoppedBy.Store("count")
	timer := time.AfterFunc(cfg.Duration, func() { stoppedBy.Store("duration"); r.stop.Store(true) })
	defer timer.Stop()
	quit := make(chan struct{})
	defer close(quit)
	go func() {
		select {
		case <-r.ctx.Done():
			stoppedBy.Store("interrupt")
			r.stop.Store(true)
		case <-quit:
		}
	}()
	var wg sync.WaitGroup
	for _, l := range r.loops {
		wg.Add(1)
		go func() { defer wg.Done(); l.run() }()
	}
	var prog *progress
	if cfg.Progress != nil {
		prog = startProgress(r, start)
	}
	wg.Wait()
	elapsed := time.Since(start)
	cpu1, _ := cpuTime()
	if prog != nil {
		prog.finish()
	}

	res := &Result{
		Op: cfg.Op, Channels: cfg.Channels, Conns: cfg.Conns, Clients: cfg.Clients, ValueSize: cfg.ValueSize,
		Keys: cfg.Keys, Read: string(cfg.Read), Target: cfg.Target, Rate: cfg.Rate,
		ErrorsByStatus: map[string]int64{}, DurationS: elapsed.Seconds(), Hist: &Histogram{},
		StoppedBy: stoppedBy.Load().(string),
	}
	if cfg.Op == OpMixed {
		res.ReadRatio = cfg.ReadRatio
	}
	for _, l := range r.loops {
		res.Hist.Merge(&l.hist)
		res.Requests += l.done.Load()
		res.Errors += l.errs.Load()
		for s := range l.status {
			if n := l.status[s].Load(); n > 0 {
				key := "transport"
				if s > 0 {
					key = strconv.Itoa(s)
				}
				res.ErrorsByStatus[key] += n
			}
		}
	}
	if elapsed > 0 {
		res.Throughput = float64(res.Requests-res.Errors) / elapsed.Seconds()
	}
	res.Latency = latencyOf(res.Hist)
	if cpuOK && res.Requests > 0 {
		res.ClientCPUusPerReq = float64((cpu1 - cpu0).Microseconds()) / float64(res.Requests)
	}
	if r.chanEP != nil {
		res.Endpoints = map[string]string{}
		for i, ch := range r.channels {
			res.Endpoints[ch] = r.eps[r.chanEP[i]].String()
		}
	}
	return res
}

// prefill writes every key (files for the file operations) once, each loop
// taking the next key, and fails if a key could not be written in 3
// attempts.
func (r *runner) prefill() error {
	op := OpPut
	if r.cfg.Op == OpFilePut || r.cfg.Op == OpFileGet {
		op = OpFilePut
	}
	var next atomic.Int64
	var once sync.Once
	var failed error
	var wg sync.WaitGroup
	for _, l := range r.loops {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				k := int(next.Add(1) - 1)
				if k >= r.cfg.Keys || r.ctx.Err() != nil {
					return
				}
				var status int
				var err error
				for attempt := 0; attempt < 3; attempt++ {
					if status, err = l.send(op, k); err == nil && status >= 200 && status < 300 {
						break
					}
					if attempt < 2 {
						time.Sleep(100 * time.Millisecond)
					}
				}
				if err == nil && (status < 200 || status >= 300) {
					err = fmt.Errorf("HTTP %d", status)
				}
				if err != nil {
					once.Do(func() { failed = fmt.Errorf("loadgen: prefill of %s: %w", KeyName(k), err) })
					next.Store(int64(r.cfg.Keys)) // the others stop too
					return
				}
			}
		}()
	}
	wg.Wait()
	if failed == nil && r.ctx.Err() != nil {
		failed = fmt.Errorf("loadgen: prefill: %w", r.ctx.Err())
	}
	return failed
}
