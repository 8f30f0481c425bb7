package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/shardnet/shardnet/api"
	"github.com/shardnet/shardnet/internal/testcluster"
	"github.com/shardnet/shardnet/server"
)

// TestHostileClientsOnARealNode: the attacks that once took a node's API
// down, against a node of a real 3-node cluster: 1,500 connections that
// each make one request and then stay open (from 15 addresses), and
// uploads that stall, one of them on a node that is not the channel's
// leader. The node keeps serving health, reads and writes all along, never
// holds more connections than its cap, answers the stalled uploads 408
// within the documented time, closes every idle connection within the idle
// timeout, and nothing is applied by the stalled uploads.
func TestHostileClientsOnARealNode(t *testing.T) {
	const (
		token       = "hostile-test-token"
		maxConns    = 400
		sources     = 15
		perSource   = 100
		idle        = 2 * time.Second
		bodyTimeout = time.Second
	)
	c := testcluster.New(t, testcluster.Options{Core: 3, Token: token, HTTP: server.Limits{
		MaxConns: maxConns, MaxConnsPerClient: perSource, IdleTimeout: idle, BodyTimeout: bodyTimeout,
	}})
	c.CreateChannel("hc", 3)
	leader := c.WaitLeader("hc")
	target := 0 // a node that does not lead "hc": its writes are forwarded
	for i, nd := range c.Nodes {
		if nd.Name != leader {
			target = i
			break
		}
	}
	ctx := ctxT(t)
	client := c.Client(target)
	if _, err := client.Put(ctx, "hc", "k", []byte("v0"), api.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(c.Nodes[target].URL())
	if err != nil {
		t.Fatal(err)
	}
	addr := u.Host
	dial := func(src string) net.Conn {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
		conn, err := d.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("dial from %s: %v", src, err)
		}
		return conn
	}
	healthOnce := func(conn net.Conn) (int, error) {
		_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.WriteString(conn, "GET /v1/health HTTP/1.1\r\nHost: node\r\n\r\n"); err != nil {
			return 0, err
		}
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			return 0, err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = conn.SetDeadline(time.Time{})
		return resp.StatusCode, nil
	}

	var flood []net.Conn
	defer func() {
		for _, conn := range flood {
			conn.Close()
		}
	}()
	for s := range sources {
		for range perSource {
			conn := dial(fmt.Sprintf("127.0.7.%d", s+1))
			_, _ = healthOnce(conn) // some are closed to make room first
			flood = append(flood, conn)
		}
		// The operator and the health check are served during the flood.
		probe := dial("127.0.0.1")
		if code, err := healthOnce(probe); err != nil || code != 200 {
			t.Fatalf("health during the flood: %d %v", code, err)
		}
		probe.Close()
		if _, err := client.Put(ctx, "hc", "k", []byte(fmt.Sprintf("v%d", s+1)), api.PutOptions{}); err != nil {
			t.Fatalf("write during the flood: %v", err)
		}
		if v, _, err := client.Get(ctx, "hc", "k", api.GetOptions{}); err != nil || string(v) != fmt.Sprintf("v%d", s+1) {
			t.Fatalf("read during the flood: %q %v", v, err)
		}
	}
	before, _, err := client.Get(ctx, "hc", "k", api.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}

	// Stalled uploads to the non-leader: headers, 10 of 1,000 bytes, then
	// nothing. Answered 408 within BodyTimeout plus 1,000 bytes at the
	// minimum rate; nothing reaches the leader.
	var stalled []net.Conn
	for i := range 20 {
		conn := dial(fmt.Sprintf("127.0.8.%d", i+1))
		stalled = append(stalled, conn)
		head := fmt.Sprintf("PUT /v1/channels/hc/kv/k HTTP/1.1\r\nHost: node\r\nAuthorization: Bearer %s\r\nContent-Length: 1000\r\n\r\n", token)
		if _, err := io.WriteString(conn, head+strings.Repeat("x", 10)); err != nil {
			t.Fatal(err)
		}
	}
	for _, conn := range stalled {
		_ = conn.SetReadDeadline(time.Now().Add(bodyTimeout + 3*time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatalf("a stalled upload got no answer: %v", err)
		}
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusRequestTimeout || !strings.Contains(string(body), api.CodeRequestTimeout) {
			t.Fatalf("a stalled upload: %d %s", resp.StatusCode, body)
		}
		conn.Close()
	}
	after, _, err := client.Get(ctx, "hc", "k", api.GetOptions{})
	if err != nil || string(after) != string(before) {
		t.Fatalf("the stalled uploads changed the key: %q -> %q (%v)", before, after, err)
	}

	// Every idle connection of the flood is closed within the idle timeout.
	deadline := time.Now().Add(idle + 3*time.Second)
	for _, conn := range flood {
		_ = conn.SetReadDeadline(deadline)
		if _, err := io.Copy(io.Discard, conn); err != nil {
			t.Fatalf("an idle connection is still open %v after the flood: %v", idle+3*time.Second, err)
		}
	}

	// The node reports what it did, on its metrics page.
	metrics := scrape(t, c.Nodes[target].URL(), token)
	for _, want := range []string{"shardnet_http_connections_evicted_total", "shardnet_http_body_timeouts_total"} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

func scrape(t *testing.T, base, token string) string {
	t.Helper()
	req, _ := http.NewRequestWithContext(context.Background(), "GET", base+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}
