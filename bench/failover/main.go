// Command failover measures one leader loss: while a client writes (and
// reads) through a surviving node, it makes the leader's node fail and
// reports the time from the fault to the first acknowledged (2xx) write
// sent after it, and to the first successful linearizable read.
//
// The fault (-fault) is kill (SIGKILL of -pid), stop (SIGSTOP of -pid: a
// process that stops answering without closing its connections; the
// script sends SIGCONT afterwards) or cmd (run -fault-cmd with sh -c, e.g.
// iptables rules that drop the node's packets: a blackholed node). The
// leader is a channel's (-group channel: writes are KV puts, reads KV gets)
// or the meta group's (-group meta: writes are channel creations; no reads).
//
// It leaves finding the leader, undoing the fault and repeating the trial
// to bench/failover.sh.
//
//	failover -pid 1234 -url http://127.0.0.1:18510 -channel bench -token T
//
// Requests are sent open-loop, one every -interval, each on its own
// goroutine, so a request stuck on the dead leader does not hide the moment
// the new one answers: the resolution of the result is -interval plus one
// request's latency. The last line is "FAILOVER ms=<write ms> read_ms=<read
// ms>" for the script to parse.
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
	"os/exec"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"
)

type config struct {
	fault    string
	faultCmd string
	group    string
	pid      int
	url      string
	channel  string
	token    string
	interval time.Duration
	warmup   time.Duration
	timeout  time.Duration
	inFlight int
}

// result is the outcome of one request.
type result struct {
	read       bool
	sent, done time.Time
	status     int    // 0: transport error
	code       string // shardnet error code, or the transport error
}

func main() {
	var c config
	flag.StringVar(&c.fault, "fault", "kill", "kill, stop (SIGSTOP) or cmd (run -fault-cmd)")
	flag.StringVar(&c.faultCmd, "fault-cmd", "", "shell command that makes the leader's node fail (-fault cmd)")
	flag.StringVar(&c.group, "group", "channel", "whose leader fails: channel or meta")
	flag.IntVar(&c.pid, "pid", 0, "process id of the leader's node (-fault kill or stop)")
	flag.StringVar(&c.url, "url", "", "base URL of a surviving node to write through (required)")
	flag.StringVar(&c.channel, "channel", "bench", "channel to write to")
	flag.StringVar(&c.token, "token", "", "operator token")
	flag.DurationVar(&c.interval, "interval", 5*time.Millisecond, "time between two writes")
	flag.DurationVar(&c.warmup, "warmup", time.Second, "writes must succeed for this long before the kill")
	flag.DurationVar(&c.timeout, "timeout", 30*time.Second, "give up when no write is acknowledged this long after the kill")
	flag.IntVar(&c.inFlight, "max-in-flight", 256, "most writes outstanding at once; further ticks are skipped")
	flag.Parse()
	valid := c.url != "" && c.interval > 0 && (c.group == "channel" || c.group == "meta")
	switch c.fault {
	case "kill", "stop":
		valid = valid && c.pid > 0
	case "cmd":
		valid = valid && c.faultCmd != ""
	default:
		valid = false
	}
	if !valid {
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
				var r result
				switch {
				case c.group == "meta":
					r = createChannel(ctx, client, c, fmt.Sprintf("fo-%d-%d", os.Getpid(), seq))
				case seq%2 == 1:
					r = read(ctx, client, c, fmt.Sprintf("failover-%06d", (seq-1)%100000))
				default:
					r = write(ctx, client, c, fmt.Sprintf("failover-%06d", seq%100000))
				}
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
	switch c.fault {
	case "kill":
		if err := syscall.Kill(c.pid, syscall.SIGKILL); err != nil {
			return fmt.Errorf("kill leader pid %d: %w", c.pid, err)
		}
	case "stop":
		if err := syscall.Kill(c.pid, syscall.SIGSTOP); err != nil {
			return fmt.Errorf("stop leader pid %d: %w", c.pid, err)
		}
	case "cmd":
		if out, err := exec.Command("sh", "-c", c.faultCmd).CombinedOutput(); err != nil {
			return fmt.Errorf("fault command: %v: %s", err, out)
		}
		// The fault is in force once the command returns: a write sent
		// while it ran could still reach the old leader.
		killed = time.Now()
	}
	failures := map[string]*span{}
	var writeMS, readMS float64 = -1, -1
	if c.group == "meta" {
		readMS = 0 // not measured
	}
	deadline = time.After(c.timeout)
	for writeMS < 0 || readMS < 0 {
		select {
		case r := <-results:
			ms := float64(r.done.Sub(killed).Microseconds()) / 1000
			ok := r.status/100 == 2 || (r.read && r.status == http.StatusNotFound)
			if ok && !r.sent.Before(killed) {
				if r.read && readMS < 0 {
					readMS = ms
				} else if !r.read && writeMS < 0 {
					writeMS = ms
				}
				continue
			}
			if !ok {
				what := fmt.Sprintf("%d %s", r.status, r.code)
				if r.read {
					what = "read " + what
				}
				if r.sent.Before(killed) {
					what += " (sent before the fault)"
				}
				failures[what] = failures[what].add(r.done.Sub(killed))
			}
		case <-deadline:
			return fmt.Errorf("no write and read answered within %v of the fault (write %.1f ms, read %.1f ms); failures: %s", c.timeout, writeMS, readMS, summarize(failures))
		}
	}
	what := "write"
	if c.group == "meta" {
		what = "channel creation"
	}
	fmt.Printf("first acknowledged %s %.1f ms after the %s", what, writeMS, c.fault)
	if c.group == "channel" {
		fmt.Printf(", first linearizable read %.1f ms", readMS)
	}
	fmt.Printf("; failed requests meanwhile: %s\n", summarize(failures))
	fmt.Printf("FAILOVER ms=%.1f read_ms=%.1f\n", writeMS, readMS)
	return nil
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
	return do(ctx, client, c, http.MethodPut, u, bytes.Repeat([]byte("f"), 256), false)
}

func read(ctx context.Context, client *http.Client, c config, key string) result {
	u := strings.TrimRight(c.url, "/") + "/v1/channels/" + c.channel + "/kv/" + key
	return do(ctx, client, c, http.MethodGet, u, nil, true)
}

// createChannel creates a one-replica channel: a write of the meta group
// that costs the cluster little.
func createChannel(ctx context.Context, client *http.Client, c config, name string) result {
	u := strings.TrimRight(c.url, "/") + "/v1/channels"
	return do(ctx, client, c, http.MethodPost, u, []byte(`{"name":"`+name+`","replicas":1}`), false)
}

func do(ctx context.Context, client *http.Client, c config, method, u string, body []byte, isRead bool) result {
	r := result{sent: time.Now(), read: isRead}
	req, err := http.NewRequestWithContext(ctx, method, u, bytes.NewReader(body))
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
	answer, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	r.done, r.status = time.Now(), resp.StatusCode
	var e struct {
		Error struct {
			Code string `json:"code"`
		} `json:"error"`
	}
	if r.status/100 != 2 && json.Unmarshal(answer, &e) == nil {
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
		parts = append(parts, fmt.Sprintf("%s ×%d (answered %d–%d ms after the fault)", k, s.n, s.first.Milliseconds(), s.last.Milliseconds()))
	}
	return strings.Join(parts, ", ")
}
