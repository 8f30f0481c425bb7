// Command prefill writes every key of the benchmark's key space (key-00000 ..
// key-09999 by default, 256-byte values) into shardnet or etcd, so that the
// read runs of bench/compare.sh always hit.
//
// It leaves the load itself to wrk and bench/wrk/*.lua; it only needs to be
// quick and to refuse to report success unless every key was acknowledged.
//
//	prefill -system shardnet -url http://127.0.0.1:18500 -channel bench -token T
//	prefill -system etcd -url http://127.0.0.1:12379
package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

type config struct {
	system    string
	url       string
	channel   string
	token     string
	keys      int
	valueSize int
	conns     int
	timeout   time.Duration
}

func main() {
	var c config
	flag.StringVar(&c.system, "system", "shardnet", "shardnet or etcd")
	flag.StringVar(&c.url, "url", "", "base URL of the node or member to write to")
	flag.StringVar(&c.channel, "channel", "bench", "shardnet channel")
	flag.StringVar(&c.token, "token", "", "shardnet operator token")
	flag.IntVar(&c.keys, "keys", 10000, "keys to write: key-00000 onwards")
	flag.IntVar(&c.valueSize, "value-size", 256, "bytes per value")
	flag.IntVar(&c.conns, "conns", 16, "concurrent writers")
	flag.DurationVar(&c.timeout, "timeout", 2*time.Minute, "give up after this long")
	flag.Parse()
	if c.url == "" || (c.system != "shardnet" && c.system != "etcd") || c.keys < 1 || c.conns < 1 {
		flag.Usage()
		os.Exit(2)
	}
	start := time.Now()
	if err := run(c); err != nil {
		fmt.Fprintf(os.Stderr, "prefill %s: %v\n", c.system, err)
		os.Exit(1)
	}
	fmt.Printf("prefilled %d keys of %d bytes into %s in %.1fs\n", c.keys, c.valueSize, c.system, time.Since(start).Seconds())
}

func run(c config) error {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	client := &http.Client{
		Timeout:   15 * time.Second,
		Transport: &http.Transport{MaxIdleConnsPerHost: c.conns, MaxConnsPerHost: c.conns},
	}
	value := make([]byte, c.valueSize)
	const alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	for i := range value {
		value[i] = alphabet[rand.IntN(len(alphabet))]
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make([]error, c.conns)
	for w := 0; w < c.conns; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= c.keys {
					return
				}
				if err := putRetrying(ctx, client, c, fmt.Sprintf("key-%05d", i), value); err != nil {
					errs[w] = err
					cancel()
					return
				}
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// putRetrying retries answers that say the write was not applied and may be
// retried (429, 503 with Retry-After), and transport errors: the value is
// the same every time, so a repeated write is harmless.
func putRetrying(ctx context.Context, client *http.Client, c config, key string, value []byte) error {
	backoff := 20 * time.Millisecond
	for {
		status, body, err := put(ctx, client, c, key, value)
		if err == nil && status/100 == 2 {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("put %s: %w (last: status %d %s, error %v)", key, ctx.Err(), status, body, err)
		}
		if err == nil && status != http.StatusTooManyRequests && status != http.StatusServiceUnavailable {
			return fmt.Errorf("put %s: status %d: %s", key, status, body)
		}
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, time.Second)
	}
}

func put(ctx context.Context, client *http.Client, c config, key string, value []byte) (int, string, error) {
	var req *http.Request
	var err error
	switch c.system {
	case "shardnet":
		u := strings.TrimRight(c.url, "/") + "/v1/channels/" + c.channel + "/kv/" + key
		req, err = http.NewRequestWithContext(ctx, http.MethodPut, u, bytes.NewReader(value))
		if err == nil && c.token != "" {
			req.Header.Set("Authorization", "Bearer "+c.token)
		}
	case "etcd":
		body, _ := json.Marshal(map[string]string{
			"key":   base64.StdEncoding.EncodeToString([]byte(key)),
			"value": base64.StdEncoding.EncodeToString(value),
		})
		req, err = http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(c.url, "/")+"/v3/kv/put", bytes.NewReader(body))
		if err == nil {
			req.Header.Set("Content-Type", "application/json")
		}
	}
	if err != nil {
		return 0, "", fmt.Errorf("build request: %w", err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	return resp.StatusCode, strings.TrimSpace(string(b)), nil
}
