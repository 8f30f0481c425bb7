package transport

import (
	"crypto/tls"
	"net"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// coalescingConn batches the writes yamux makes to the TCP connection.
//
// yamux's send loop writes every frame header and every frame body with its
// own write syscall; over loopback a write also runs the receiver's TCP
// processing, and with hundreds of groups sending small RPCs the syscalls
// were half of all CPU (profile of BenchmarkRaftApply/groups=16). Here Write
// only appends to a buffer, and one flusher goroutine per connection writes
// out everything that queued up while its previous syscall ran: an idle
// connection adds no delay, a busy one sends many frames per syscall. The
// buffer is bounded, so a slow peer still pushes back on yamux.
type coalescingConn struct {
	net.Conn

	mu    sync.Mutex
	cond  sync.Cond
	buf   []byte // bytes waiting for the flusher
	spare []byte // the flusher's previous buffer, reused
	err   error  // sticky: the first write error, or net.ErrClosed

	batch  *batchConn         // under a TLS connection: one write per batch
	writes prometheus.Counter // the node's conn_writes_total
}

// maxPending bounds the bytes waiting for the flusher; Write blocks beyond.
const maxPending = 512 << 10

// newCoalescingConn wraps c; start runs the flusher (on a goroutine the node
// waits for) and reports false when it could not. writes counts the flushes.
func newCoalescingConn(c net.Conn, start func(func()) bool, writes prometheus.Counter) net.Conn {
	cc := &coalescingConn{Conn: c, writes: writes}
	if tc, ok := c.(*tls.Conn); ok {
		cc.batch, _ = tc.NetConn().(*batchConn)
	}
	cc.cond.L = &cc.mu
	if !start(cc.flushLoop) {
		_ = c.Close()
		cc.err = net.ErrClosed
	}
	return cc
}

func (c *coalescingConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.err == nil && len(c.buf) >= maxPending {
		c.cond.Wait()
	}
	if c.err != nil {
		return 0, c.err
	}
	if len(c.buf) == 0 {
		c.cond.Broadcast() // wake the flusher
	}
	c.buf = append(c.buf, p...)
	return len(p), nil
}

func (c *coalescingConn) flushLoop() {
	c.mu.Lock()
	for {
		for c.err == nil && len(c.buf) == 0 {
			c.cond.Wait()
		}
		if c.err != nil {
			c.mu.Unlock()
			return
		}
		out := c.buf
		c.buf = c.spare[:0]
		c.cond.Broadcast() // room for blocked writers
		c.mu.Unlock()

		err := c.write(out)

		c.mu.Lock()
		if cap(out) <= 2*maxPending {
			c.spare = out[:0]
		} else {
			c.spare = nil
		}
		if err != nil && c.err == nil {
			c.err = err
			c.cond.Broadcast()
			c.mu.Unlock()
			_ = c.Conn.Close() // yamux's reader notices and ends the session
			return
		}
	}
}

// write sends out; under TLS, as one write to the TCP connection.
func (c *coalescingConn) write(out []byte) error {
	c.writes.Inc()
	if c.batch == nil {
		_, err := c.Conn.Write(out)
		return err
	}
	c.batch.begin()
	_, err := c.Conn.Write(out)
	if ferr := c.batch.end(); err == nil {
		err = ferr
	}
	return err
}

// Close fails pending and future writes and closes the connection.
func (c *coalescingConn) Close() error {
	c.mu.Lock()
	if c.err == nil {
		c.err = net.ErrClosed
	}
	c.buf = nil
	c.cond.Broadcast()
	c.mu.Unlock()
	return c.Conn.Close()
}

// batchConn sits under a TLS connection and lets coalescingConn's flusher
// send one batch as one write. crypto/tls writes every record with its own
// write to the connection under it (at most 16 KiB each), so a batch of
// many frames cost one syscall per record with TLS and one in all without:
// the profile of BenchmarkAppendEntries/tls=on spent half its time in
// write syscalls. Between begin and end, writes are collected and end
// writes them at once; outside, a write goes straight through (the
// handshake, alerts, and TLS 1.3 key updates that a read may send).
type batchConn struct {
	net.Conn

	mu  sync.Mutex // held while writing to Conn, so records keep their order
	on  bool
	buf []byte
}

func (b *batchConn) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.on {
		b.buf = append(b.buf, p...)
		return len(p), nil
	}
	return b.Conn.Write(p)
}

func (b *batchConn) begin() {
	b.mu.Lock()
	b.on = true
	b.mu.Unlock()
}

// end writes what was collected since begin.
func (b *batchConn) end() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.on = false
	if len(b.buf) == 0 {
		return nil
	}
	_, err := b.Conn.Write(b.buf)
	if cap(b.buf) <= 2*maxPending {
		b.buf = b.buf[:0]
	} else {
		b.buf = nil
	}
	return err
}
