package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/shardnet/shardnet/api"
	"github.com/shardnet/shardnet/internal/loadgen"
)

const benchHelp = `Send load to the cluster's HTTP API and report throughput, latency and errors,
in the manner of etcd's benchmark tool. OP is one of:
  put       PUT of a key (-value-size bytes)
  get       GET of a key at the -read level
  mixed     GET with probability -read-ratio, else PUT
  txn       a compare-and-put transaction of one key (compare its value, put it)
  file-put  PUT of a file of -value-size bytes under bench/
  file-get  GET of such a file (-prefill writes them first)
Keys are key-0000000 .. key-(K-1), drawn uniformly. Latency counts successful
(2xx) requests; any other answer or a failed request is an error, by status.
Requests/sec counts successful requests only. See docs/benchmarks.md "shardnet bench".`

// runBench: shardnet bench [flags] OP
func runBench(ctx context.Context, c *cli, args []string) int {
	f := c.newFlags("bench", "OP", benchHelp).withJSON()
	f.Lookup("addr").Usage = "HTTP addresses of nodes, comma-separated (default $SHARDNET_ADDR, else " + api.DefaultAddr + "); -target any sends to each in turn"
	var cfg loadgen.Config
	var target, read string
	var progress bool
	f.StringVar(&cfg.Channel, "channel", "bench", "channel `NAME`; with -channels N>1 the channels NAME-0 .. NAME-(N-1)")
	f.IntVar(&cfg.Channels, "channels", 1, "channels to spread the keys over (key k to channel k mod N)")
	f.BoolVar(&cfg.Create, "create", false, "create the channels that are missing and wait until they serve")
	f.IntVar(&cfg.Replicas, "replicas", 3, "replicas of the channels -create creates")
	f.StringVar(&target, "target", "any", "which node gets each channel's load: leader, follower, or any (the -addr list in turn)")
	f.IntVar(&cfg.Conns, "conns", 16, "TCP connections (keep-alive) to each node, at most")
	f.IntVar(&cfg.Clients, "clients", 0, "concurrent request loops sharing the connections (default: -conns)")
	f.IntVar(&cfg.ValueSize, "value-size", 256, "bytes of each value or file")
	f.IntVar(&cfg.Keys, "keys", 10000, "size of the key space")
	f.StringVar(&read, "read", string(api.Linearizable), "read level of get, mixed and file-get: linearizable, lease or stale")
	f.Float64Var(&cfg.ReadRatio, "read-ratio", 0.9, "mixed: the fraction of reads")
	f.DurationVar(&cfg.Duration, "duration", 10*time.Second, "stop after this long (also caps -count)")
	f.Int64Var(&cfg.Count, "count", 0, "stop after this many requests (0: -duration alone)")
	f.Float64Var(&cfg.Rate, "rate", 0, "requests per second of all clients together (0: as fast as answered)")
	f.BoolVar(&cfg.Prefill, "prefill", false, "write every key (files for file-*) once before measuring; not counted")
	f.BoolVar(&progress, "progress", false, "print a progress line each second on stderr (always on a terminal)")
	f.DurationVar(&cfg.Timeout, "timeout", 30*time.Second, "wait this long at most for each answer")
	pos, code, ok := f.parse(args, 1, 1)
	if !ok {
		return code
	}
	cfg.Op, cfg.Target, cfg.Read = loadgen.Op(pos[0]), loadgen.Target(target), api.Consistency(read)
	if !slices.Contains(loadgen.Ops, cfg.Op) {
		return c.usageError("unknown operation %q: one of put, get, mixed, txn, file-put, file-get", pos[0])
	}
	switch {
	case cfg.Channels < 1, cfg.Conns < 1, cfg.Clients < 0, cfg.ValueSize < 1, cfg.Keys < 1, cfg.Replicas < 1:
		return c.usageError("-channels, -conns, -value-size, -keys and -replicas must be at least 1")
	case cfg.Duration <= 0, cfg.Timeout <= 0:
		return c.usageError("-duration and -timeout must be positive")
	case cfg.Count < 0, cfg.Rate < 0:
		return c.usageError("-count and -rate must not be negative")
	}
	addr, token, ca := f.target()
	var addrs listFlag
	_ = addrs.Set(addr)
	cfg.Addrs, cfg.Token = addrs, token
	if t, ok := c.transport(); ok {
		cfg.Transport = t
	}
	if ca != "" {
		hc, err := api.NewHTTPClient(ca)
		if err != nil {
			return c.fail(err)
		}
		cfg.Transport = hc.Transport.(*http.Transport)
	}
	tty := isTerminal(c.stderr)
	if progress || tty {
		cfg.Progress, cfg.ProgressTTY = c.stderr, tty
	}
	res, err := loadgen.Run(ctx, cfg)
	if errors.Is(err, loadgen.ErrConfig) {
		return c.usageError("%v", err)
	}
	if err != nil {
		return c.fail(err)
	}
	if f.json {
		return c.printJSON(res)
	}
	printBench(c.stdout, res)
	return 0
}

// transport returns the CLI's own HTTP transport, when a test gave one.
func (c *cli) transport() (*http.Transport, bool) {
	if c.httpClient == nil {
		return nil, false
	}
	t, ok := c.httpClient.Transport.(*http.Transport)
	return t, ok
}

// isTerminal says whether w is a terminal (a character device).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// printBench writes a run's summary as etcd's benchmark does: totals, a
// latency histogram and the percentiles.
func printBench(w io.Writer, res *loadgen.Result) {
	h := res.Hist
	fmt.Fprintf(w, "shardnet bench %s: %d channel(s), target %s, %d conns, %d clients, %d-byte values, %d keys",
		res.Op, res.Channels, res.Target, res.Conns, res.Clients, res.ValueSize, res.Keys)
	if res.Op == loadgen.OpGet || res.Op == loadgen.OpMixed || res.Op == loadgen.OpFileGet {
		fmt.Fprintf(w, ", %s reads", res.Read)
	}
	if res.Op == loadgen.OpMixed {
		fmt.Fprintf(w, " (%.0f %%)", 100*res.ReadRatio)
	}
	fmt.Fprintln(w)
	if len(res.Endpoints) > 0 {
		chans := make([]string, 0, len(res.Endpoints))
		for ch := range res.Endpoints {
			chans = append(chans, ch)
		}
		sort.Strings(chans)
		for _, ch := range chans {
			fmt.Fprintf(w, "  %s -> %s\n", ch, res.Endpoints[ch])
		}
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Summary:")
	fmt.Fprintf(w, "  Total:        %.4f s (stopped by %s)\n", res.DurationS, res.StoppedBy)
	fmt.Fprintf(w, "  Requests:     %d (%d errors)\n", res.Requests, res.Errors)
	fmt.Fprintf(w, "  Slowest:      %.3f ms\n", res.Latency.Max)
	fmt.Fprintf(w, "  Fastest:      %.3f ms\n", res.Latency.Min)
	fmt.Fprintf(w, "  Average:      %.3f ms\n", res.Latency.Mean)
	fmt.Fprintf(w, "  Requests/sec: %.1f\n", res.Throughput)
	fmt.Fprintf(w, "  Client CPU:   %.1f µs/request\n", res.ClientCPUusPerReq)
	if h.Count() > 0 {
		fmt.Fprintln(w)
		fmt.Fprintln(w, "Response time histogram (ms, log-spaced):")
		printHistogram(w, h)
		fmt.Fprintln(w)
		fmt.Fprintln(w, "Latency distribution:")
		for _, p := range []struct {
			label string
			q     float64
		}{{"10", 0.1}, {"25", 0.25}, {"50", 0.5}, {"75", 0.75}, {"90", 0.9}, {"95", 0.95}, {"99", 0.99}, {"99.9", 0.999}} {
			fmt.Fprintf(w, "  %s%% in %.3f ms\n", p.label, float64(h.Quantile(p.q).Microseconds())/1000)
		}
	}
	if len(res.ErrorsByStatus) > 0 {
		fmt.Fprintln(w)
		fmt.Fprintln(w, "Errors by status:")
		keys := make([]string, 0, len(res.ErrorsByStatus))
		for k := range res.ErrorsByStatus {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(w, "  %s: %d\n", k, res.ErrorsByStatus[k])
		}
	}
	if len(res.LeaderMoved) > 0 {
		fmt.Fprintf(w, "\nWarning: the leader of %s moved during the run; the load did not all go to the %s.\n",
			strings.Join(res.LeaderMoved, ", "), res.Target)
	}
}

// printHistogram draws 10 log-spaced bars from the fastest to the slowest
// request.
func printHistogram(w io.Writer, h *loadgen.Histogram) {
	const bars, width = 10, 40
	lo, hi := h.Min(), h.Max()+1
	if lo < 1 {
		lo = 1
	}
	ratio := math.Pow(float64(hi)/float64(lo), 1.0/bars)
	edges := make([]time.Duration, bars+1)
	for i := range edges {
		edges[i] = time.Duration(float64(lo) * math.Pow(ratio, float64(i)))
	}
	edges[0], edges[bars] = 0, hi+time.Hour // every bucket falls in a bar
	counts := make([]uint64, bars)
	var most uint64
	for i := range counts {
		counts[i] = h.CountBetween(edges[i], edges[i+1])
		most = max(most, counts[i])
	}
	for i, n := range counts {
		from := max(edges[i], h.Min())
		bar := 0
		if most > 0 {
			bar = int(n * width / most)
		}
		fmt.Fprintf(w, "  %10.3f %-10s |%s\n", float64(from.Microseconds())/1000, fmt.Sprintf("[%d]", n), strings.Repeat("∎", bar))
	}
}
