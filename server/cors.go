package server

import (
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/shardnet/shardnet/fsm"
)

// CORS per channel (docs/api.md "Channel settings"): the channel's settings
// say which origins may call its routes from a browser. A preflight needs
// no token (browsers send none with it).

// defaultCORSMethods are what a policy that lists no methods allows.
var defaultCORSMethods = []string{http.MethodGet, http.MethodHead}

// exposedHeaders are the answer headers a page may read.
const exposedHeaders = "X-Shardnet-Index, X-Shardnet-Create-Index, X-Shardnet-Lag, Retry-After, Content-Range, Accept-Ranges, Content-Length"

// cors adds the CORS headers of channel ch's policy for the request's
// Origin, and answers a preflight itself (then it returns false).
func (s *Server) cors(w http.ResponseWriter, r *http.Request, ch string) bool {
	origin := r.Header.Get("Origin")
	preflight := r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != ""
	var policy *fsm.CORS
	if st := s.b.ChannelSettings(ch); st != nil {
		policy = st.CORS
	}
	h := w.Header()
	h.Add("Vary", "Origin")
	allowed := policy != nil && originAllowed(policy, origin)
	if !preflight {
		if allowed {
			setAllowOrigin(h, policy, origin)
			h.Set("Access-Control-Expose-Headers", exposedHeaders)
		}
		return true
	}
	h.Add("Vary", "Access-Control-Request-Method")
	h.Add("Vary", "Access-Control-Request-Headers")
	method := r.Header.Get("Access-Control-Request-Method")
	methods := defaultCORSMethods
	if policy != nil && len(policy.AllowedMethods) > 0 {
		methods = policy.AllowedMethods
	}
	if !allowed || !slices.Contains(methods, method) {
		writeError(w, refuse(errForbidden, "channel %s allows no cross-origin %s from %q", ch, method, origin))
		return false
	}
	setAllowOrigin(h, policy, origin)
	h.Set("Access-Control-Allow-Methods", strings.Join(methods, ", "))
	if len(policy.AllowedHeaders) > 0 {
		h.Set("Access-Control-Allow-Headers", strings.Join(policy.AllowedHeaders, ", "))
	}
	if policy.MaxAge > 0 {
		h.Set("Access-Control-Max-Age", strconv.Itoa(policy.MaxAge))
	}
	w.WriteHeader(http.StatusNoContent)
	return false
}

func originAllowed(p *fsm.CORS, origin string) bool {
	return slices.Contains(p.AllowedOrigins, "*") || slices.Contains(p.AllowedOrigins, origin)
}

func setAllowOrigin(h http.Header, p *fsm.CORS, origin string) {
	if slices.Contains(p.AllowedOrigins, "*") {
		h.Set("Access-Control-Allow-Origin", "*")
		return
	}
	h.Set("Access-Control-Allow-Origin", origin)
}
