// Command failover measures one leader loss of a shardnet channel: while a
// client writes through a surviving node, it kills the channel leader's
// process with SIGKILL and reports the time from the kill to the first
// acknowledged (2xx) write sent after it.
//
// It leaves finding the leader, restarting the killed node and repeating the
// trial to bench/failover.sh.
//
//	failover -pid 1234 -url http://127.0.0.1:18510 -channel bench -token T
//
// Writes are sent open-loop, one every -interval, each on its own goroutine,
// so a request stuck on the dead leader does not hide the moment the new one
// answers: the resolution of the result is -interval plus one write's latency.
// The last line is "FAILOVER ms=<milliseconds>" for the script to parse.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"
)

type config struct {
	pid      int
	url      string
	channel  string
	token    string
	interval time.Duration
	warmup   time.Duration
	timeout  time.Duration
	inFlight int
}

// result is the outcome of one write.
type result struct {
	sent, done time.Time
	status     int    // 0: transport error
	code       string // shardnet error code, or the transport error
}

func main() {
	var c config
	flag.IntVar(&c.pid, "pid", 0, "process id of the channel leader to kill (required)")
	flag.StringVar(&c.url, "url", "", "base URL of a surviving node to write through (required)")
	flag.StringVar(&c.channel, "channel", "bench", "channel to write to")
	flag.StringVar(&c.token, "token", "", "operator token")
	flag.DurationVar(&c.interval, "interval", 5*time.Millisecond, "time between two writes")
	flag.DurationVar(&c.warmup, "warmup", time.Second, "writes must succeed for this long before the kill")
	flag.DurationVar(&c.timeout, "timeout", 30*time.Second, "give up when no write is acknowledged this long after the kill")
	flag.IntVar(&c.inFlight, "max-in-flight", 256, "most writes outstanding at once; further ticks are skipped")
	flag.Parse()
	if c.pid <= 0 || c.url == "" || c.interval <= 0 {
		flag.Usage()
		os.Exit(2)
	}
	if err := run(c); err != nil {
		fmt.Fprintf(os.Stderr, "failover: %v\n", err)
		os.Exit(1)
	}
}

func run(c config) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	client := &http.Client{
		Timeout:   15 * time.Second,
		Transport: &http.Transport{MaxIdleConnsPerHost: c.inFlight},
	}
	results := make(chan result, 1024)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	sem := make(chan struct{}, c.inFlight)
	wg.Add(1) // the ticker itself, so its Adds never race with Wait
	go func() {
		defer wg.Done()
		t := time.NewTicker(c.interval)
		defer t.Stop()
		for seq := 0; ; seq++ {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			select {
			case sem <- struct{}{}:
			default:
				continue // too many outstanding: skip this tick
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				r := write(ctx, client, c, fmt.Sprintf("failover-%06d", seq%100000))
				select {
				case results <- r:
				case <-ctx.Done():
				}
			}()
		}
	}()

	// Warm up: the kill only counts from a cluster that is acknowledging
	// writes through this node right now.
	var firstOK time.Time
	deadline := time.After(c.timeout)
	for firstOK.IsZero() || time.Since(firstOK) < c.warmup {
		select {
		case r := <-results:
			if r.status/100 == 2 && firstOK.IsZero() {
				firstOK = r.done
			}
		case <-deadline:
			return errors.New("no write acknowledged before the kill: is the cluster up?")
		}
	}

	killed := time.Now()
	if err := syscall.Kill(c.pid, syscall.SIGKILL); err != nil {
		return fmt.Errorf("kill leader pid %d: %w", c.pid, err)
	}
	failures := map[string]*span{}
	deadline = time.After(c.timeout)
	for {
		select {
		case r := <-results:
			if r.status/100 == 2 && !r.sent.Before(killed) {
				ms := float64(r.done.Sub(killed).Microseconds()) / 1000
				fmt.Printf("first acknowledged write %.1f ms after the kill; failed writes meanwhile: %s\n", ms, summarize(failures))
				fmt.Printf("FAILOVER ms=%.1f\n", ms)
				return nil
			}
			if r.status/100 != 2 {
				what := fmt.Sprintf("%d %s", r.status, r.code)
				if r.sent.Before(killed) {
					what += " (sent before the kill)"
				}
				failures[what] = failures[what].add(r.done.Sub(killed))
			}
		case <-deadline:
			return fmt.Errorf("no write acknowledged within %v of the kill; failures: %s", c.timeout, summarize(failures))
		}
	}
}

// span counts the failed writes of one kind and when, after the kill, their
// answers came: the sequence (unavailable while the survivor still forwards
// to the dead leader, then no_leader until one is elected) shows where the
// time goes.
type span struct {
	n           int
	first, last time.Duration
}

func (s *span) add(at time.Duration) *span {
	if s == nil {
		return &span{n: 1, first: at, last: at}
	}
	s.n++
	s.first, s.last = min(s.first, at), max(s.last, at)
	return s
}

func write(ctx context.Context, client *http.Client, c config, key string) result {
	u := strings.TrimRight(c.url, "/") + "/v1/channels/" + c.channel + "/kv/" + key
	r := result{sent: time.Now()}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, u, bytes.NewReader(bytes.Repeat([]byte("f"), 256)))
	if err != nil {
		r.done, r.code = time.Now(), err.Error()
		return r
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := client.Do(req)
	if err != nil {
		r.done, r.code = time.Now(), "transport error"
		return r
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	r.done, r.status = time.Now(), resp.StatusCode
	var e struct {
		Error struct {
			Code string `json:"code"`
		} `json:"error"`
	}
	if r.status/100 != 2 && json.Unmarshal(body, &e) == nil {
		r.code = e.Error.Code
	}
	return r
}

func summarize(m map[string]*span) string {
	if len(m) == 0 {
		return "none"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return m[keys[i]].first < m[keys[j]].first })
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		s := m[k]
		parts = append(parts, fmt.Sprintf("%s ×%d (answered %d–%d ms after the kill)", k, s.n, s.first.Milliseconds(), s.last.Milliseconds()))
	}
	return strings.Join(parts, ", ")
}
