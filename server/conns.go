package server

import (
	"container/list"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/shardnet/shardnet/api"
)

// Connection limits of the public listener. Without them, a client that
// made one request and kept its connection open (GET /v1/health needs no
// token) held a file descriptor for ever; twenty thousand of them took a
// node's API down. Now:
//
//   - a keep-alive connection idle for IdleTimeout is closed (net/http);
//   - one client address holds at most MaxConnsPerClient connections: the
//     next is answered 429 too_many_connections and closed;
//   - at MaxConns in all, a new connection makes room by closing the
//     connection idle the longest, else one that has not sent a whole
//     request head within a second of connecting (a slow-loris), else it
//     is answered 503 too_many_connections. A flood of idle or silent
//     connections therefore never locks out a client that sends requests:
//     the health check and the operator are still served;
//   - a write that makes no progress for BodyTimeout fails and closes the
//     connection (a client that never reads its answers holds nothing).
//
// Refusals and evictions are counted (shardnet_http_connections_*) and
// logged at warn, at most once per logEvery with the counts.

// refusalWriters bounds the goroutines answering refused connections; past
// it a refused connection is closed without an answer.
const (
	refusalWriters = 32
	refusalTimeout = time.Second
	slowHeadAfter  = time.Second
	logEvery       = 10 * time.Second
)

// connLimiter tracks the public listener's connections by state.
type connLimiter struct {
	max, perClient int
	sendTimeout    time.Duration
	log            hclog.Logger
	metrics        *metrics
	tls            *tls.Config // set: refusals are answered inside TLS

	mu       sync.Mutex
	conns    map[net.Conn]*connEntry
	perIP    map[string]int
	idle     *list.List // *connEntry in StateIdle, oldest first
	fresh    *list.List // *connEntry in StateNew, oldest first
	refusing chan struct{}

	// counts since the last warning
	refused, evicted int
	lastLog          time.Time
	logPending       bool // a warning is due at lastLog+logEvery
}

type connEntry struct {
	conn     net.Conn
	ip       string
	accepted time.Time
	elem     *list.Element // in idle or fresh, or nil
	gone     bool          // evicted: already uncounted
}

func newConnLimiter(max, perClient int, sendTimeout time.Duration, log hclog.Logger, m *metrics) *connLimiter {
	return &connLimiter{
		max: max, perClient: perClient, sendTimeout: sendTimeout, log: log, metrics: m,
		conns: map[net.Conn]*connEntry{}, perIP: map[string]int{},
		idle: list.New(), fresh: list.New(), refusing: make(chan struct{}, refusalWriters),
	}
}

// listener wraps the public listener: Accept admits, or answers and closes.
type limitListener struct {
	net.Listener
	l *connLimiter
}

func (ll *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := ll.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if c = ll.l.admit(c); c != nil {
			return c, nil
		}
	}
}

// admit returns the connection to serve, or nil when it was refused.
func (l *connLimiter) admit(c net.Conn) net.Conn {
	ip := remoteIP(c.RemoteAddr())
	now := time.Now()
	l.mu.Lock()
	if l.perClient > 0 && l.perIP[ip] >= l.perClient {
		l.mu.Unlock()
		l.refuse(c, http.StatusTooManyRequests, "per_client",
			fmt.Sprintf("client %s already has %d connections open to this node, the most one client address may hold", ip, l.perClient))
		return nil
	}
	if l.max > 0 && len(l.conns) >= l.max && !l.evictLocked(now) {
		l.mu.Unlock()
		l.refuse(c, http.StatusServiceUnavailable, "total",
			fmt.Sprintf("this node already serves %d connections, all of them busy", l.max))
		return nil
	}
	tc := &sendConn{Conn: c, timeout: l.sendTimeout}
	e := &connEntry{conn: tc, ip: ip, accepted: now}
	l.conns[tc] = e
	l.perIP[ip]++
	e.elem = l.fresh.PushBack(e)
	l.metrics.conns.Set(float64(len(l.conns)))
	l.mu.Unlock()
	return tc
}

// evictLocked closes the connection idle the longest, else the oldest that
// has not sent a request head within slowHeadAfter, to make room for a new
// one. It reports whether it made room.
func (l *connLimiter) evictLocked(now time.Time) bool {
	var victim *connEntry
	state := "idle"
	if front := l.idle.Front(); front != nil {
		victim = front.Value.(*connEntry)
	} else if front := l.fresh.Front(); front != nil && now.Sub(front.Value.(*connEntry).accepted) > slowHeadAfter {
		victim, state = front.Value.(*connEntry), "new"
	}
	if victim == nil {
		return false
	}
	l.forgetLocked(victim)
	victim.gone = true
	_ = victim.conn.Close() // its ConnState(StateClosed) finds it gone
	l.metrics.evicted.WithLabelValues(state).Inc()
	l.evicted++
	l.maybeLogLocked(now)
	return true
}

// forgetLocked uncounts e.
func (l *connLimiter) forgetLocked(e *connEntry) {
	l.unlistLocked(e)
	delete(l.conns, e.conn)
	if l.perIP[e.ip]--; l.perIP[e.ip] <= 0 {
		delete(l.perIP, e.ip)
	}
	l.metrics.conns.Set(float64(len(l.conns)))
}

func (l *connLimiter) unlistLocked(e *connEntry) {
	if e.elem != nil {
		// Remove checks which list an element is in: safe on both.
		l.idle.Remove(e.elem)
		l.fresh.Remove(e.elem)
		e.elem = nil
	}
}

// connState is the http.Server's ConnState hook.
func (l *connLimiter) connState(c net.Conn, state http.ConnState) {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn() // the connection admit returned, under TLS
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	e, ok := l.conns[c]
	if !ok || e.gone {
		return
	}
	switch state {
	case http.StateIdle:
		l.unlistLocked(e)
		e.elem = l.idle.PushBack(e)
	case http.StateActive:
		l.unlistLocked(e)
	case http.StateClosed, http.StateHijacked:
		l.forgetLocked(e)
	}
}

// refuse answers a refused connection with a JSON error and closes it, off
// the accept loop.
func (l *connLimiter) refuse(c net.Conn, status int, reason, msg string) {
	l.metrics.refused.WithLabelValues(reason).Inc()
	l.mu.Lock()
	l.refused++
	l.maybeLogLocked(time.Now())
	l.mu.Unlock()
	select {
	case l.refusing <- struct{}{}:
	default:
		_ = c.Close()
		return
	}
	go func() {
		defer func() { <-l.refusing }()
		if l.tls != nil {
			// A TLS client reads the answer only inside TLS; the
			// handshake runs under writeRefusal's deadline.
			c = tls.Server(c, l.tls)
		}
		writeRefusal(c, status, msg)
	}()
}

// maybeLogLocked logs the refusals and evictions since the last warning,
// at most once per logEvery; what comes within that time is logged when it
// ends, so the last of a flood is not left unsaid.
func (l *connLimiter) maybeLogLocked(now time.Time) {
	if wait := logEvery - now.Sub(l.lastLog); wait > 0 {
		if !l.logPending {
			l.logPending = true
			time.AfterFunc(wait, func() {
				l.mu.Lock()
				defer l.mu.Unlock()
				l.logPending = false
				if l.refused+l.evicted > 0 {
					l.logLocked(time.Now())
				}
			})
		}
		return
	}
	l.logLocked(now)
}

func (l *connLimiter) logLocked(now time.Time) {
	l.log.Warn("HTTP connections refused or closed to make room (connection limits)",
		"refused", l.refused, "evicted", l.evicted, "open", len(l.conns),
		"max_conns", l.max, "max_conns_per_client", l.perClient)
	l.refused, l.evicted, l.lastLog = 0, 0, now
}

// writeRefusal answers a connection that will not be served: a complete
// HTTP/1.1 response with a JSON error, then a graceful close, so that the
// client reads the reason rather than a reset.
func writeRefusal(c net.Conn, status int, msg string) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(refusalTimeout))
	body := errorJSON(api.CodeTooManyConns, msg)
	head := fmt.Sprintf("HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nX-Content-Type-Options: nosniff\r\n"+
		"Retry-After: 1\r\nConnection: close\r\nContent-Length: %d\r\n\r\n", status, http.StatusText(status), len(body))
	if _, err := c.Write(append([]byte(head), body...)); err != nil {
		return
	}
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
	// Read what the client sent until it closes (or the deadline): closing
	// with unread data would reset the connection and lose the answer.
	var buf [512]byte
	for {
		if _, err := c.Read(buf[:]); err != nil {
			return
		}
	}
}

func remoteIP(a net.Addr) string {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.IP.String()
	}
	host, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	return host
}

// sendConn fails a write that makes no progress for timeout: each write
// gets a deadline, re-armed when a quarter of it has passed, so a client
// that stops reading its answer loses the connection instead of holding a
// goroutine for ever (nginx's send_timeout).
type sendConn struct {
	net.Conn
	timeout time.Duration
	armed   atomic.Int64 // unix nanos of the last arming
}

func (c *sendConn) Write(p []byte) (int, error) {
	if c.timeout > 0 {
		now := time.Now()
		if now.UnixNano()-c.armed.Load() > int64(c.timeout/4) {
			c.armed.Store(now.UnixNano())
			_ = c.Conn.SetWriteDeadline(now.Add(c.timeout))
		}
	}
	return c.Conn.Write(p)
}

// CloseWrite lets a graceful close reach the TCP connection.
func (c *sendConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
