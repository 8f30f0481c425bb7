package server

import (
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
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

// TestPprofCmdlineHidesSecrets: the command line served by pprof never
// shows a secret flag's value, in any form the flag package accepts.
func TestPprofCmdlineHidesSecrets(t *testing.T) {
	saved := os.Args
	t.Cleanup(func() { os.Args = saved })
	os.Args = []string{"shardnet", "agent", "-name", "n1", "-token", "s3cret-a", "--token=s3cret-b",
		"-cluster-key", "s3cret-c", "--cluster-key", "s3cret-d", "-cluster-key=s3cret-e", "-data-dir", "/d"}
	_, s, _ := clientFor(t, Config{Backend: newFake("nft"), Token: "tok"})
	req := httptest.NewRequest(http.MethodGet, "/debug/pprof/cmdline", nil)
	req.Header.Set("Authorization", "Bearer tok")
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, req)
	got := rec.Body.String()
	if rec.Code != 200 || strings.Contains(got, "s3cret") {
		t.Fatalf("cmdline: %d %q", rec.Code, got)
	}
	for _, keep := range []string{"agent", "n1", "/d", "--token=<redacted>", "-cluster-key"} {
		if !strings.Contains(got, keep) {
			t.Errorf("cmdline %q lost %q", got, keep)
		}
	}
	if n := strings.Count(got, "<redacted>"); n != 5 {
		t.Errorf("cmdline %q: %d values redacted, want 5", got, n)
	}
}

func TestRedactArgs(t *testing.T) {
	for _, tc := range []struct{ in, want []string }{
		{[]string{"-token"}, []string{"-token"}}, // no value to hide
		{[]string{"-token", "x", "-name", "y"}, []string{"-token", "<redacted>", "-name", "y"}},
		{[]string{"-tokens", "x"}, []string{"-tokens", "x"}},
		{[]string{"--", "-token", "x"}, []string{"--", "-token", "x"}},
		{[]string{"-token-file", "/run/tok"}, []string{"-token-file", "/run/tok"}},
		{[]string{"-encrypt", "a2V5", "--encrypt=a2V5"}, []string{"-encrypt", "<redacted>", "--encrypt=<redacted>"}},
		{[]string{"-encrypt-file", "/run/gk"}, []string{"-encrypt-file", "/run/gk"}},
	} {
		if got := RedactArgs(tc.in); !slices.Equal(got, tc.want) {
			t.Errorf("RedactArgs(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
