package server

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestPprofNeedsTheToken(t *testing.T) {
	_, s, _ := clientFor(t, Config{Backend: newFake("nft"), Token: "tok"})
	for _, tc := range []struct {
		path, auth string
		status     int
	}{
		{"/debug/pprof/", "", 401},
		{"/debug/pprof/heap", "Bearer nope", 401},
		{"/debug/pprof/", "Bearer tok", 200},
		{"/debug/pprof/goroutine?debug=1", "Bearer tok", 200},
		{"/debug/pprof/cmdline", "Bearer tok", 200},
	} {
		req := httptest.NewRequest(http.MethodGet, tc.path, nil)
		if tc.auth != "" {
			req.Header.Set("Authorization", tc.auth)
		}
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, req)
		if rec.Code != tc.status {
			t.Errorf("%s with %q: %d, want %d", tc.path, tc.auth, rec.Code, tc.status)
		}
	}
}
