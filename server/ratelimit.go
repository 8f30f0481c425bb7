package server

import (
	"context"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/shardnet/shardnet/cluster"
	"golang.org/x/time/rate"
)

// rateLimiter bounds requests per client IP with a token bucket each
// (golang.org/x/time/rate). Requests a peer forwarded were counted on the
// node the client talked to and are not counted again.
type rateLimiter struct {
	limit rate.Limit
	burst int

	mu      sync.Mutex
	clients map[string]*clientBucket
	swept   time.Time
}

type clientBucket struct {
	lim  *rate.Limiter
	seen time.Time
}

func newRateLimiter(perSecond float64, burst int) *rateLimiter {
	if perSecond <= 0 {
		return nil
	}
	if burst <= 0 {
		burst = int(2 * perSecond)
	}
	return &rateLimiter{limit: rate.Limit(perSecond), burst: burst, clients: map[string]*clientBucket{}, swept: time.Now()}
}

// allow reports whether a request from ip may go ahead now.
func (l *rateLimiter) allow(ip string) bool {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.swept) > time.Minute {
		// Forget clients idle for a minute: their buckets are full again.
		for k, b := range l.clients {
			if now.Sub(b.seen) > time.Minute {
				delete(l.clients, k)
			}
		}
		l.swept = now
	}
	b, ok := l.clients[ip]
	if !ok {
		b = &clientBucket{lim: rate.NewLimiter(l.limit, l.burst)}
		l.clients[ip] = b
	}
	b.seen = now
	return b.lim.AllowN(now, 1)
}

func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

type peerKey struct{}

// PeerHandler serves requests that arrive from other nodes over the cluster
// port (forwarded by nodes of the previous version): the same API, exempt
// from the per-client rate limit since the node the client talked to
// counted them, and served here or refused, never sent on
// (cluster.ServeLocally).
func (s *Server) PeerHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.ServeHTTP(w, r.WithContext(cluster.ServeLocally(context.WithValue(r.Context(), peerKey{}, true))))
	})
}

func fromPeer(r *http.Request) bool {
	v, _ := r.Context().Value(peerKey{}).(bool)
	return v
}
