package api

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
)

// TestKeyedWriteNotResentByNetHTTP: a write the node received on a kept-alive
// connection that then broke is not sent again behind the caller's back
// (net/http resends requests carrying an Idempotency-Key), for a PUT with a
// body and a DELETE without one: the chaos checker caught a PUT answered
// "connection refused" whose first send had been applied.
func TestKeyedWriteNotResentByNetHTTP(t *testing.T) {
	var got atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/channels/c/kv/warm" {
			w.Header().Set("X-Shardnet-Index", "1")
			_, _ = w.Write([]byte(`{"index":1}`))
			return
		}
		got.Add(1)
		panic(http.ErrAbortHandler) // the answer is lost, the connection closed
	}))
	defer srv.Close()
	c := NewClient(srv.URL, "", srv.Client())
	ctx := context.Background()
	for _, write := range []func() error{
		func() error { _, err := c.Put(ctx, "c", "k", []byte("v"), PutOptions{}); return err },
		func() error { _, err := c.Delete(ctx, "c", "k", DeleteOptions{}); return err },
	} {
		got.Store(0)
		// A first request leaves a kept-alive connection to reuse.
		if _, err := c.Put(ctx, "c", "warm", []byte("v"), PutOptions{}); err != nil {
			t.Fatal(err)
		}
		if err := write(); err == nil {
			t.Fatal("a write whose answer was lost succeeded")
		}
		if n := got.Load(); n != 1 {
			t.Fatalf("the node received the write %d times, want once", n)
		}
	}
}
