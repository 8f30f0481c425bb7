package server

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/shardnet/shardnet/api"
	"github.com/shardnet/shardnet/fsm"
)

// These tests serve on real loopback listeners (Serve, ServeForwarded):
// the limits live in the listener and in connection deadlines, which an
// in-memory recorder would not exercise. Clients take source addresses
// from 127.0.0.0/8 to look like many hosts.

// scaled stretches a test's patience on slow CI machines.
func scaled(d time.Duration) time.Duration {
	if s, err := strconv.ParseFloat(os.Getenv("SHARDNET_TEST_TIMEOUT_SCALE"), 64); err == nil && s > 0 {
		return time.Duration(float64(d) * s)
	}
	return d
}

// serveReal serves s's public API on a loopback port and returns its
// address.
func serveReal(t *testing.T, s *Server) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(l) }()
	t.Cleanup(func() {
		_ = s.Close()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return l.Addr().String()
}

// dialFrom connects to addr from the loopback address src.
func dialFrom(t *testing.T, src, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: scaled(5 * time.Second)}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial %s from %s: %v", addr, src, err)
	}
	return c
}

// roundTrip sends one raw request on c and reads its answer.
func roundTrip(c net.Conn, br *bufio.Reader, req string) (*http.Response, []byte, error) {
	_ = c.SetDeadline(time.Now().Add(scaled(5 * time.Second)))
	defer func() { _ = c.SetDeadline(time.Time{}) }()
	if _, err := io.WriteString(c, req); err != nil {
		return nil, nil, err
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return nil, nil, err
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, b, err
}

const healthReq = "GET /v1/health HTTP/1.1\r\nHost: node\r\n\r\n"

// waitClosed fails the test unless the server closes c within d.
func waitClosed(t *testing.T, c net.Conn, d time.Duration, what string) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(d))
	_, err := io.Copy(io.Discard, c) // nil at EOF
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("%s: still open after %v", what, d)
	}
}

// TestConnectionFlood: thousands of clients that each make one request and
// then keep their connection open can no longer take a node's API down.
// The node holds at most MaxConns, closing the longest idle to make room;
// the health check and the operator's writes are served all along; every
// idle connection is closed within IdleTimeout.
func TestConnectionFlood(t *testing.T) {
	const (
		maxConns  = 300
		sources   = 20
		perSource = 100 // 2,000 connections in all
		idle      = time.Second
	)
	reg := prometheus.NewRegistry()
	f := newFake("nft")
	s := New(Config{Backend: f, Token: "tok", Registry: reg, Limits: Limits{MaxConns: maxConns, MaxConnsPerClient: perSource, IdleTimeout: idle}})
	addr := serveReal(t, s)

	operator := func() {
		t.Helper()
		c := dialFrom(t, "127.0.0.1", addr)
		defer c.Close()
		br := bufio.NewReader(c)
		resp, body, err := roundTrip(c, br, healthReq)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("health during the flood: %v %v %s", resp, err, body)
		}
		resp, body, err = roundTrip(c, br, "PUT /v1/channels/nft/kv/op HTTP/1.1\r\nHost: node\r\nAuthorization: Bearer tok\r\nContent-Length: 2\r\n\r\nok")
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("operator's write during the flood: %v %v %s", resp, err, body)
		}
	}

	var (
		mu    sync.Mutex
		flood []net.Conn
		peak  float64
	)
	for i := range sources {
		src := fmt.Sprintf("127.0.1.%d", i+1)
		for range perSource {
			c := dialFrom(t, src, addr)
			// Some of these are closed to make room before they are
			// answered; the flood does not care.
			_, _, _ = roundTrip(c, bufio.NewReader(c), healthReq)
			mu.Lock()
			flood = append(flood, c)
			mu.Unlock()
		}
		if open := testutil.ToFloat64(s.metrics.conns); open > peak {
			peak = open
		}
		operator()
	}
	t.Cleanup(func() {
		for _, c := range flood {
			c.Close()
		}
	})
	if peak > maxConns {
		t.Errorf("the node held %v connections, over its cap of %d", peak, maxConns)
	}
	if ev := testutil.ToFloat64(s.metrics.evicted.WithLabelValues("idle")); ev < sources*perSource-maxConns {
		t.Errorf("%v idle connections closed to make room, want at least %d", ev, sources*perSource-maxConns)
	}
	// The flood stops: what it still holds is closed within the idle
	// timeout (give the last ones the whole timeout again, and slack).
	deadline := time.Now().Add(idle + scaled(3*time.Second))
	for _, c := range flood {
		waitClosed(t, c, time.Until(deadline), "an idle connection")
	}
	waitFor(t, "no connection left open", func() bool { return testutil.ToFloat64(s.metrics.conns) == 0 })
}

// TestConnectionsPerClient: one address holds at most MaxConnsPerClient
// connections; the next is answered 429 too_many_connections, counted, and
// closed; other addresses are still served.
func TestConnectionsPerClient(t *testing.T) {
	const perClient = 50
	logs := &syncBuffer{}
	s := New(Config{Backend: newFake("nft"), Registry: prometheus.NewRegistry(), Limits: Limits{MaxConnsPerClient: perClient},
		Logger: hclog.New(&hclog.LoggerOptions{Output: logs, Level: hclog.Warn})})
	addr := serveReal(t, s)
	var held []net.Conn
	t.Cleanup(func() {
		for _, c := range held {
			c.Close()
		}
	})
	for range perClient {
		c := dialFrom(t, "127.0.2.1", addr)
		held = append(held, c)
		if resp, _, err := roundTrip(c, bufio.NewReader(c), healthReq); err != nil || resp.StatusCode != 200 {
			t.Fatalf("connection within the cap: %v %v", resp, err)
		}
	}
	c := dialFrom(t, "127.0.2.1", addr)
	defer c.Close()
	resp, body, err := roundTrip(c, bufio.NewReader(c), healthReq)
	if err != nil {
		t.Fatalf("a refused connection gets an answer, not %v", err)
	}
	if resp.StatusCode != http.StatusTooManyRequests || !strings.Contains(string(body), api.CodeTooManyConns) ||
		!strings.Contains(string(body), strconv.Itoa(perClient)) || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("connection over the cap: %d %s (Retry-After %q)", resp.StatusCode, body, resp.Header.Get("Retry-After"))
	}
	waitClosed(t, c, scaled(3*time.Second), "a refused connection")
	if n := testutil.ToFloat64(s.metrics.refused.WithLabelValues("per_client")); n != 1 {
		t.Errorf("refusals counted: %v, want 1", n)
	}
	if got := logs.String(); !strings.Contains(got, "connection limits") || !strings.Contains(got, "refused=1") {
		t.Errorf("the refusal was not logged at warn: %q", got)
	}
	other := dialFrom(t, "127.0.2.2", addr)
	defer other.Close()
	if resp, _, err := roundTrip(other, bufio.NewReader(other), healthReq); err != nil || resp.StatusCode != 200 {
		t.Fatalf("another address: %v %v", resp, err)
	}
	// Closing one frees its place.
	held[0].Close()
	waitFor(t, "a freed place", func() bool { return testutil.ToFloat64(s.metrics.conns) == perClient })
	again := dialFrom(t, "127.0.2.1", addr)
	defer again.Close()
	if resp, _, err := roundTrip(again, bufio.NewReader(again), healthReq); err != nil || resp.StatusCode != 200 {
		t.Fatalf("after one closed: %v %v", resp, err)
	}
}

// TestSlowLorisMakesRoom: at the total cap, connections that have not sent
// a request head within a second are closed to make room for new ones.
func TestSlowLorisMakesRoom(t *testing.T) {
	const maxConns = 50
	s := New(Config{Backend: newFake("nft"), Registry: prometheus.NewRegistry(), Limits: Limits{MaxConns: maxConns}})
	addr := serveReal(t, s)
	var silent []net.Conn
	for i := range maxConns {
		c := dialFrom(t, fmt.Sprintf("127.0.3.%d", i+1), addr)
		silent = append(silent, c)
		_, _ = io.WriteString(c, "GET /v1/health HTTP/1.1\r\n") // and never the rest
	}
	defer func() {
		for _, c := range silent {
			c.Close()
		}
	}()
	waitFor(t, "the cap reached", func() bool { return testutil.ToFloat64(s.metrics.conns) == maxConns })
	time.Sleep(slowHeadAfter) // the silent ones must be older than this to be closed
	c := dialFrom(t, "127.0.0.1", addr)
	defer c.Close()
	if resp, body, err := roundTrip(c, bufio.NewReader(c), healthReq); err != nil || resp.StatusCode != 200 {
		t.Fatalf("health at the cap of silent connections: %v %v %s", resp, err, body)
	}
	if n := testutil.ToFloat64(s.metrics.evicted.WithLabelValues("new")); n < 1 {
		t.Errorf("silent connections closed to make room: %v", n)
	}
}

// stalledUpload sends a request head that declares length bytes of body,
// then the first part of the body, and stops.
func stalledUpload(t *testing.T, c net.Conn, auth string, length, sent int) {
	t.Helper()
	head := fmt.Sprintf("PUT /v1/channels/nft/kv/stalled HTTP/1.1\r\nHost: node\r\n%sContent-Length: %d\r\n\r\n", auth, length)
	if _, err := io.WriteString(c, head+strings.Repeat("x", sent)); err != nil {
		t.Fatal(err)
	}
}

// TestStalledBodies: a body that stops coming, or trickles in slower than
// the minimum rate, is answered 408 request_timeout within the documented
// time (BodyTimeout plus its length at BodyMinRate) and frees its
// connection; nothing is proposed. So is a stalled body sent to the
// listener that serves other nodes' forwarded requests, and one the node
// refuses unread (401).
func TestStalledBodies(t *testing.T) {
	const (
		bodyTimeout = 500 * time.Millisecond
		minRate     = 64 << 10
		stalls      = 300
	)
	cfg := Config{Backend: newFake("nft"), Token: "tok", Registry: prometheus.NewRegistry(),
		Limits: Limits{BodyTimeout: bodyTimeout, BodyMinRate: minRate}}
	f := cfg.Backend.(*fakeBackend)
	s := New(cfg)
	public := serveReal(t, s)
	pl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = s.ServeForwarded(pl) }()
	forwarded := pl.Addr().String()
	auth := "Authorization: Bearer tok\r\n"
	// bound is when a body of n bytes must be answered by, with slack.
	bound := func(n int) time.Duration {
		return bodyTimeout + time.Duration(n)*time.Second/minRate + scaled(2*time.Second)
	}
	expect408 := func(c net.Conn, n int, what string) {
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Errorf("%s: no answer: %v", what, err)
			return
		}
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusRequestTimeout || !strings.Contains(string(body), api.CodeRequestTimeout) {
			t.Errorf("%s: %d %s, want 408 %s", what, resp.StatusCode, body, api.CodeRequestTimeout)
		}
	}

	t.Run("stalled", func(t *testing.T) {
		start := time.Now()
		var wg sync.WaitGroup
		var answered atomic.Int64
		for i := range stalls {
			c := dialFrom(t, fmt.Sprintf("127.0.4.%d", i%200+1), public)
			defer c.Close()
			stalledUpload(t, c, auth, 1000, 10)
			wg.Add(1)
			go func() {
				defer wg.Done()
				_ = c.SetReadDeadline(time.Now().Add(bound(1000)))
				expect408(c, 1000, "a stalled upload")
				answered.Add(1)
			}()
		}
		wg.Wait()
		if took := time.Since(start); took > bound(1000) {
			t.Errorf("%d stalled uploads answered after %v", stalls, took)
		}
		waitFor(t, "the stalled uploads' connections closed", func() bool { return testutil.ToFloat64(s.metrics.conns) == 0 })
	})

	t.Run("trickle", func(t *testing.T) {
		// 200,000 bytes must arrive within 0.5 s + 3.05 s; at 10 KiB/s
		// they would take 20 s, though no read ever waits 100 ms.
		const n = 200_000
		c := dialFrom(t, "127.0.0.1", public)
		defer c.Close()
		stalledUpload(t, c, auth, n, 0)
		start := time.Now()
		stop := make(chan struct{})
		go func() {
			tick := time.NewTicker(100 * time.Millisecond)
			defer tick.Stop()
			for sent := 0; sent < n; sent += 1024 {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				if _, err := io.WriteString(c, strings.Repeat("x", 1024)); err != nil {
					return
				}
			}
		}()
		defer close(stop)
		_ = c.SetReadDeadline(time.Now().Add(bound(n)))
		expect408(c, n, "a trickled upload")
		if took := time.Since(start); took < bodyTimeout+n*time.Second/minRate-200*time.Millisecond {
			t.Errorf("the trickle was cut after %v, before its deadline", took)
		}
	})

	t.Run("refused unread", func(t *testing.T) {
		// 401 before the body is read: net/http would then wait for the
		// rest of the body to discard it, for ever without a deadline.
		c := dialFrom(t, "127.0.0.1", public)
		defer c.Close()
		stalledUpload(t, c, "", 1000, 10)
		_ = c.SetReadDeadline(time.Now().Add(bound(1000)))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil || resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("unauthenticated upload: %v %v", resp, err)
		}
		waitClosed(t, c, bound(1000), "a refused stalled upload")
	})

	t.Run("forwarded", func(t *testing.T) {
		c := dialFrom(t, "127.0.0.1", forwarded)
		defer c.Close()
		stalledUpload(t, c, auth, 1000, 10)
		_ = c.SetReadDeadline(time.Now().Add(bound(1000)))
		expect408(c, 1000, "a stalled forwarded upload")
		waitClosed(t, c, bound(1000), "a stalled forwarded upload")
	})

	if n := f.proposals.Load(); n != 0 {
		t.Errorf("%d proposals from stalled uploads", n)
	}
	if n := testutil.ToFloat64(s.metrics.timeouts.WithLabelValues("public")); n != stalls+1 {
		t.Errorf("body timeouts counted on the public listener: %v, want %d", n, stalls+1)
	}
	if n := testutil.ToFloat64(s.metrics.timeouts.WithLabelValues("forwarded")); n != 1 {
		t.Errorf("body timeouts counted on the forwarded listener: %v, want 1", n)
	}
}

// TestClientThatDoesNotRead: an answer the client never reads fails its
// writes after BodyTimeout and frees the connection.
func TestClientThatDoesNotRead(t *testing.T) {
	f := newFake("nft")
	big := strings.Repeat("v", 1<<20)
	for i := range 24 {
		if _, err := f.mem.Propose(t.Context(), "nft", mustEncodePut(t, fmt.Sprintf("k%02d", i), big)); err != nil {
			t.Fatal(err)
		}
	}
	s := New(Config{Backend: f, Registry: prometheus.NewRegistry(), Limits: Limits{BodyTimeout: 300 * time.Millisecond}})
	addr := serveReal(t, s)
	c := dialFrom(t, "127.0.0.1", addr)
	defer c.Close()
	// 24 MiB of values, 32 MiB of JSON: more than loopback's buffers hold.
	if _, err := io.WriteString(c, "GET /v1/channels/nft/kv/?limit=24 HTTP/1.1\r\nHost: node\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	// The handler returns (its write failed) and the connection closes.
	answered := s.metrics.requests.WithLabelValues("GET", routeKVList, "200")
	waitFor(t, "the unread answer's write given up", func() bool { return testutil.ToFloat64(answered) == 1 })
	waitFor(t, "the unread answer's connection closed", func() bool { return testutil.ToFloat64(s.metrics.conns) == 0 })
}

func mustEncodePut(t *testing.T, key, value string) []byte {
	t.Helper()
	b, err := fsm.Encode(&fsm.Put{Key: []byte(key), Value: []byte(value)})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// syncBuffer is a bytes.Buffer for a logger written from many goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
