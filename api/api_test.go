package api

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"
)

func TestEscapeKey(t *testing.T) {
	tests := []struct{ key, want string }{
		{"a", "a"},
		{"a/b", "a/b"},
		{"a%2Fb", "a%252Fb"},
		{"..", "%2E%2E"},
		{".", "%2E"},
		{"a/../b", "a/%2E%2E/b"},
		{"a/./b", "a/%2E/b"},
		{"...", "..."},
		{"a//b", "a//b"},
		{"/lead", "/lead"},
		{"with space", "with%20space"},
		{"q?x#y", "q%3Fx%23y"},
		{"plus+", "plus+"},
		{"日", "%E6%97%A5"},
	}
	for _, tt := range tests {
		got := EscapeKey(tt.key)
		if got != tt.want {
			t.Errorf("EscapeKey(%q) = %q, want %q", tt.key, got, tt.want)
		}
		back, err := UnescapeKey(got)
		if err != nil || back != tt.key {
			t.Errorf("UnescapeKey(%q) = %q, %v; want %q", got, back, err, tt.key)
		}
		// What a Go client sends is what the server reads back.
		u, err := url.Parse("http://x/v1/channels/c/kv/" + got)
		if err != nil || u.EscapedPath() != "/v1/channels/c/kv/"+got {
			t.Errorf("key %q: URL path becomes %q (%v)", tt.key, u.EscapedPath(), err)
		}
	}
}

// TestErrorFromAnotherServer: an error answer that is not ours (a proxy's)
// still becomes an *Error with the status and the text.
func TestErrorFromAnotherServer(t *testing.T) {
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/status" {
			w.Header().Set("Retry-After", "7")
			http.Error(w, "upstream gone", http.StatusBadGateway)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set(HeaderIndex, "42")
		w.WriteHeader(http.StatusNotFound)
		w.Write([]byte(`{"error":{"code":"key_not_found","message":"key \"k\" not found"}}`))
	}))
	defer hs.Close()
	c := NewClient(hs.URL, "", nil)
	_, err := c.Status(context.Background())
	e := AsError(err)
	if e == nil || e.Status != 502 || e.Code != "http_502" || e.Message != "upstream gone" || e.RetryAfter != 7*time.Second {
		t.Fatalf("proxy error: %#v", err)
	}
	_, _, err = c.Get(context.Background(), "c", "k", GetOptions{})
	e = AsError(err)
	if !IsNotFound(err) || e.Code != CodeKeyNotFound || e.Index != 42 || e.Error() != `key "k" not found (key_not_found, HTTP 404)` {
		t.Fatalf("our error: %#v", err)
	}
	if IsConflict(err) || IsRetryable(err) {
		t.Fatalf("a 404 is neither a conflict nor retryable")
	}
}

func TestNewClientAddr(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1:8500":         "http://127.0.0.1:8500",
		"http://127.0.0.1:8500/": "http://127.0.0.1:8500",
		"https://node.example":   "https://node.example",
	} {
		if got := NewClient(in, "", nil).Addr(); got != want {
			t.Errorf("NewClient(%q).Addr() = %q, want %q", in, got, want)
		}
	}
}
