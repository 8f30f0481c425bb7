package server

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/shardnet/shardnet/api"
)

func TestRateLimitPerClient(t *testing.T) {
	f := newFake("nft")
	c, s, _ := clientFor(t, Config{Backend: f, RateLimit: 0.001, RateBurst: 3})
	ctx := t.Context()
	for i := range 3 {
		if _, err := c.Put(ctx, "nft", "k", []byte("v"), api.PutOptions{}); err != nil {
			t.Fatalf("request %d within the burst: %v", i, err)
		}
	}
	before := f.proposals.Load()
	_, err := c.Put(ctx, "nft", "k", []byte("v"), api.PutOptions{})
	if e := api.AsError(err); e == nil || e.Status != 429 || e.Code != api.CodeRateLimited || e.RetryAfter == 0 {
		t.Fatalf("request beyond the limit: %v", err)
	}
	if f.proposals.Load() != before {
		t.Fatal("a rate-limited write reached the backend")
	}
	// Requests forwarded by a peer were counted where the client sent them.
	req := httptest.NewRequest(http.MethodGet, "/v1/channels/nft/kv/k", nil)
	req.RemoteAddr = "127.0.0.1:1234"
	rec := httptest.NewRecorder()
	s.PeerHandler().ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		t.Fatalf("peer request: %d %s", rec.Code, rec.Body)
	}
	// Another client has its own bucket.
	req = httptest.NewRequest(http.MethodGet, "/v1/channels/nft/kv/k", nil)
	req.RemoteAddr = "10.1.2.3:1234"
	rec = httptest.NewRecorder()
	s.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		t.Fatalf("another client: %d %s", rec.Code, rec.Body)
	}
}
