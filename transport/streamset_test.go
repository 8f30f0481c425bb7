package transport

import (
	"errors"
	"net"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/yamux"
)

// abortAll ends a Read blocked without a deadline at once (yamux's own
// shutdown makes such a reader spin instead, streamset.go), and a stream
// accepted after it is refused.
func TestStreamSetAbortEndsBlockedReads(t *testing.T) {
	a, b := net.Pipe()
	cfg := yamuxConfig(hclog.NewNullLogger())
	client, err := yamux.Client(a, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server, err := yamux.Server(b, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()

	set := newStreamSet()
	const n = 50
	done := make(chan error, n)
	for range n {
		cs, err := client.OpenStream()
		if err != nil {
			t.Fatal(err)
		}
		defer cs.Close()
		if _, err := cs.Write([]byte{1}); err != nil { // the server accepts on first data
			t.Fatal(err)
		}
		ss, err := server.AcceptStream()
		if err != nil {
			t.Fatal(err)
		}
		if !set.add(ss) {
			t.Fatal("add to an open set refused")
		}
		go func() {
			var buf [2]byte
			_, err := ss.Read(buf[:1]) // the byte sent
			if err == nil {
				_, err = ss.Read(buf[:]) // nothing more comes: blocks
			}
			done <- err
		}()
	}
	time.Sleep(50 * time.Millisecond)
	select {
	case err := <-done:
		t.Fatalf("a read returned before the abort: %v", err)
	default:
	}
	set.abortAll()
	timeout := time.After(10 * time.Second)
	for range n {
		select {
		case err := <-done:
			if !errors.Is(err, yamux.ErrTimeout) {
				t.Fatalf("aborted read returned %v, want yamux.ErrTimeout", err)
			}
		case <-timeout:
			t.Fatal("reads still blocked 10 s after abortAll")
		}
	}
	cs, err := client.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	_, _ = cs.Write([]byte{1})
	ss, err := server.AcceptStream()
	if err != nil {
		t.Fatal(err)
	}
	if set.add(ss) {
		t.Fatal("add after abortAll accepted")
	}
}
