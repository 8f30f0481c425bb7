package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shardnet/shardnet/api"
	"github.com/shardnet/shardnet/internal/testcluster"
)

// A channel under more load than it takes answers 429 with Retry-After
// beyond its bound of proposals in flight, and everything it accepted is
// applied: the queue is bounded, nothing is half-done.
func TestOverloadAnswers429(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{Core: 1, MaxInFlight: 2})
	c.CreateChannel("hot", 1)
	ctx := ctxT(t)
	var ok, limited, other atomic.Int64
	var wg sync.WaitGroup
	val := make([]byte, 64<<10)
	for w := range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 10 {
				_, err := c.Client(0).Put(ctx, "hot", fmt.Sprintf("w%d-%d", w, i), val, api.PutOptions{})
				switch e := api.AsError(err); {
				case err == nil:
					ok.Add(1)
				case e != nil && e.Status == 429 && e.Code == api.CodeOverloaded && e.RetryAfter > 0:
					limited.Add(1)
				default:
					other.Add(1)
					t.Errorf("unexpected answer: %v", err)
				}
			}
		}()
	}
	wg.Wait()
	t.Logf("%d accepted, %d refused with 429", ok.Load(), limited.Load())
	if limited.Load() == 0 {
		t.Fatal("64 concurrent writers against 2 proposals in flight were never refused")
	}
	list, err := c.Client(0).List(ctx, "hot", "w", "", 1000, api.Linearizable)
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(list.Items)) != ok.Load() {
		t.Fatalf("%d keys stored, %d writes acknowledged", len(list.Items), ok.Load())
	}
}

// A client that asks for a large value and never reads the answer holds up
// only its own request: writes and reads of others go on.
func TestSlowReaderDoesNotBlockWriters(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{Core: 1})
	c.CreateChannel("big", 1)
	ctx := ctxT(t)
	big := []byte(strings.Repeat("x", 1<<20))
	if _, err := c.Client(0).Put(ctx, "big", "blob", big, api.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	var stalled []net.Conn
	defer func() {
		for _, conn := range stalled {
			conn.Close()
		}
	}()
	host := strings.TrimPrefix(c.Nodes[0].URL(), "http://")
	for range 8 {
		conn, err := net.Dial("tcp", host)
		if err != nil {
			t.Fatal(err)
		}
		stalled = append(stalled, conn)
		fmt.Fprintf(conn, "GET /v1/channels/big/kv/blob HTTP/1.1\r\nHost: %s\r\n\r\n", host)
		// Read only the status line, then never again.
		if line, err := bufio.NewReader(conn).ReadString('\n'); err != nil || !strings.Contains(line, "200") {
			t.Fatalf("slow reader: %q %v", line, err)
		}
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for i := range 50 {
		if _, err := c.Client(0).Put(wctx, "big", fmt.Sprintf("k%d", i), []byte("v"), api.PutOptions{}); err != nil {
			t.Fatalf("write %d while readers stall: %v", i, err)
		}
	}
	if _, _, err := c.Client(0).Get(wctx, "big", "k49", api.GetOptions{}); err != nil {
		t.Fatalf("read while readers stall: %v", err)
	}
}
