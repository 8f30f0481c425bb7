package server

import (
	"bufio"
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/shardnet/shardnet/api"
)

// TestConnectionLimitsOverTLS: with Config.TLS the connection limits work
// as over plain HTTP: connections are counted and forgotten when they
// close (http.Server reports the *tls.Conn, not the connection the limiter
// admitted), and a refused client gets its 429 over TLS, not bytes its TLS
// stack cannot read.
func TestConnectionLimitsOverTLS(t *testing.T) {
	borrowed := httptest.NewTLSServer(http.NotFoundHandler()) // for its certificate
	cert := borrowed.TLS.Certificates[0]
	borrowed.Close()
	const perClient = 2
	s := New(Config{Backend: newFake("nft"), Registry: prometheus.NewRegistry(), Limits: Limits{MaxConnsPerClient: perClient},
		TLS: &tls.Config{Certificates: []tls.Certificate{cert}}})
	addr := serveReal(t, s)
	dial := func() *tls.Conn {
		return tls.Client(dialFrom(t, "127.0.3.1", addr), &tls.Config{InsecureSkipVerify: true})
	}
	var held []*tls.Conn
	for range perClient {
		c := dial()
		held = append(held, c)
		if resp, _, err := roundTrip(c, bufio.NewReader(c), healthReq); err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("a connection within the cap: %v %v", resp, err)
		}
	}
	waitFor(t, "the connections counted", func() bool { return testutil.ToFloat64(s.metrics.conns) == perClient })
	c := dial()
	defer c.Close()
	resp, body, err := roundTrip(c, bufio.NewReader(c), healthReq)
	if err != nil {
		t.Fatalf("a refused TLS connection gets an answer, not %v", err)
	}
	if resp.StatusCode != http.StatusTooManyRequests || !strings.Contains(string(body), api.CodeTooManyConns) {
		t.Fatalf("a connection over the cap: %d %s", resp.StatusCode, body)
	}
	for _, c := range held {
		c.Close()
	}
	waitFor(t, "the closed connections forgotten", func() bool { return testutil.ToFloat64(s.metrics.conns) == 0 })
	c2 := dial()
	defer c2.Close()
	if resp, _, err := roundTrip(c2, bufio.NewReader(c2), healthReq); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("a connection once the others closed: %v %v", resp, err)
	}
}
