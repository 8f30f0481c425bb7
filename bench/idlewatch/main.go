// Command idlewatch is bench/idle.sh's client: it creates many channels
// quickly, and times how long a restarted node takes to serve them again.
//
//	idlewatch create  -url U1,U2,U3 -n 1000 -c 8     # channels idle-0000.., one key each
//	idlewatch serving -url U -n 1000 -since NANOS    # until every channel answers a stale GET on U
//	idlewatch led     -url U -node n2 -since NANOS   # until n2 leads every channel placed first on it
//
// create sends at most -c creations at once (a channel is created by the
// meta leader, one meta entry each), then writes key "k" of each channel,
// so that a stale read has a value to answer with. serving reads key "k"
// of every channel at consistency=stale through one node, each channel
// again until it answers 200, and prints "SERVING ms=<the last channel's>
// first_ms=<the first's>", counted from -since (the Unix time in
// nanoseconds at which the script started the node); http_ms is its first
// HTTP answer of any status (the node's start before it serves). led polls the
// channel listing until every channel whose placement names -node first
// (its preferred leader, shard/DESIGN.md "Leadership goes back to the
// placement") is led by it, and prints "LED ms=<ms> preferred=<count>".
// Standard library only, as the other bench helpers.
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
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

type config struct {
	urls    []string
	token   string
	prefix  string
	n       int
	conc    int
	since   time.Time
	node    string
	timeout time.Duration
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: idlewatch create|serving|led [flags]")
		os.Exit(2)
	}
	cmd := os.Args[1]
	fs := flag.NewFlagSet(cmd, flag.ExitOnError)
	var c config
	urls := fs.String("url", "", "base URL(s) of the node(s), comma-separated")
	fs.StringVar(&c.token, "token", os.Getenv("SHARDNET_TOKEN"), "operator token")
	fs.StringVar(&c.prefix, "prefix", "idle-", "channel name prefix")
	fs.IntVar(&c.n, "n", 1000, "number of channels")
	fs.IntVar(&c.conc, "c", 16, "requests at once")
	since := fs.Int64("since", 0, "Unix nanoseconds to count from (default: now)")
	fs.StringVar(&c.node, "node", "", "node id (led)")
	fs.DurationVar(&c.timeout, "timeout", 5*time.Minute, "give up after")
	_ = fs.Parse(os.Args[2:])
	c.urls = strings.Split(*urls, ",")
	c.since = time.Now()
	if *since > 0 {
		c.since = time.Unix(0, *since)
	}
	if *urls == "" || c.n <= 0 || c.conc <= 0 {
		fs.Usage()
		os.Exit(2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	var err error
	switch cmd {
	case "create":
		err = create(ctx, c)
	case "serving":
		err = serving(ctx, c)
	case "led":
		if c.node == "" {
			err = errors.New("led needs -node")
			break
		}
		err = led(ctx, c)
	default:
		err = fmt.Errorf("unknown command %q", cmd)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "idlewatch %s: %v\n", cmd, err)
		os.Exit(1)
	}
}

var client = &http.Client{
	Timeout:   10 * time.Second,
	Transport: &http.Transport{MaxIdleConnsPerHost: 64},
}

func (c config) name(i int) string { return fmt.Sprintf("%s%04d", c.prefix, i) }

// do sends one request and returns the status and body (status 0: a
// transport error, in the body).
func (c config) do(ctx context.Context, method, url string, body []byte) (int, []byte) {
	req, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(body))
	if err != nil {
		return 0, []byte(err.Error())
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, []byte(err.Error())
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// each runs f for channels 0..n-1 on c.conc workers and returns the first
// error.
func (c config) each(ctx context.Context, f func(ctx context.Context, i int) error) error {
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, c.conc)
	for w := 0; w < c.conc; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= c.n || ctx.Err() != nil {
					return
				}
				if err := f(ctx, i); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// retry calls f until it reports done, pausing a little between tries.
func retry(ctx context.Context, what string, pause time.Duration, f func() (bool, string)) error {
	last := ""
	for {
		ok, why := f()
		if ok {
			return nil
		}
		last = why
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w (last answer: %s)", what, ctx.Err(), last)
		case <-time.After(pause):
		}
	}
}

func create(ctx context.Context, c config) error {
	start := time.Now()
	err := c.each(ctx, func(ctx context.Context, i int) error {
		u := c.urls[i%len(c.urls)]
		name := c.name(i)
		body := []byte(fmt.Sprintf(`{"name":%q,"replicas":3}`, name))
		if err := retry(ctx, "create "+name, 200*time.Millisecond, func() (bool, string) {
			st, b := c.do(ctx, http.MethodPost, u+"/v1/channels", body)
			return st == http.StatusCreated || st == http.StatusConflict && bytes.Contains(b, []byte("channel_exists")), fmt.Sprintf("%d %s", st, b)
		}); err != nil {
			return err
		}
		return retry(ctx, "write to "+name, 100*time.Millisecond, func() (bool, string) {
			st, b := c.do(ctx, http.MethodPut, u+"/v1/channels/"+name+"/kv/k", []byte("v"))
			return st/100 == 2, fmt.Sprintf("%d %s", st, b)
		})
	})
	if err != nil {
		return err
	}
	fmt.Printf("CREATED n=%d s=%.1f\n", c.n, time.Since(start).Seconds())
	return nil
}

func serving(ctx context.Context, c config) error {
	var mu sync.Mutex
	var up, first, last time.Duration = -1, -1, 0
	err := c.each(ctx, func(ctx context.Context, i int) error {
		url := c.urls[0] + "/v1/channels/" + c.name(i) + "/kv/k?consistency=stale"
		return retry(ctx, "stale read of "+c.name(i), 20*time.Millisecond, func() (bool, string) {
			st, b := c.do(ctx, http.MethodGet, url, nil)
			if st != 0 {
				mu.Lock()
				if d := time.Since(c.since); up < 0 || d < up {
					up = d
				}
				mu.Unlock()
			}
			if st != http.StatusOK {
				return false, fmt.Sprintf("%d %s", st, b)
			}
			d := time.Since(c.since)
			mu.Lock()
			if first < 0 || d < first {
				first = d
			}
			last = max(last, d)
			mu.Unlock()
			return true, ""
		})
	})
	if err != nil {
		return err
	}
	fmt.Printf("SERVING ms=%d first_ms=%d http_ms=%d\n", last.Milliseconds(), first.Milliseconds(), up.Milliseconds())
	return nil
}

type channelInfo struct {
	Name      string `json:"name"`
	Leader    string `json:"leader"`
	Placement []struct {
		NodeID string `json:"node_id"`
	} `json:"placement"`
}

func led(ctx context.Context, c config) error {
	preferred := 0
	err := retry(ctx, "preferred leaders", 500*time.Millisecond, func() (bool, string) {
		st, b := c.do(ctx, http.MethodGet, c.urls[0]+"/v1/channels", nil)
		if st != http.StatusOK {
			return false, fmt.Sprintf("%d %s", st, b)
		}
		var list []channelInfo
		if err := json.Unmarshal(b, &list); err != nil {
			return false, err.Error()
		}
		want, have := 0, 0
		for _, ch := range list {
			if !strings.HasPrefix(ch.Name, c.prefix) || len(ch.Placement) == 0 || ch.Placement[0].NodeID != c.node {
				continue
			}
			want++
			if ch.Leader == c.node {
				have++
			}
		}
		preferred = want
		return want > 0 && have == want, fmt.Sprintf("%d of %d preferred channels led by %s", have, want, c.node)
	})
	if err != nil {
		return err
	}
	fmt.Printf("LED ms=%d preferred=%d\n", time.Since(c.since).Milliseconds(), preferred)
	return nil
}
