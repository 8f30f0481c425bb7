package e2e

import (
	"fmt"
	"net/http"
	"os"
	"runtime"
	"runtime/pprof"
	"testing"
	"time"
)

// TestMain checks for leaked goroutines once every cluster of the package
// has been closed: a stopped node must leave nothing running behind it.
func TestMain(m *testing.M) {
	base := runtime.NumGoroutine()
	code := m.Run()
	if code == 0 {
		http.DefaultClient.CloseIdleConnections()
		deadline := time.Now().Add(15 * time.Second)
		for runtime.NumGoroutine() > base+5 && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
		}
		if n := runtime.NumGoroutine(); n > base+5 {
			fmt.Fprintf(os.Stderr, "goroutine leak: %d goroutines after the tests, %d before\n", n, base)
			_ = pprof.Lookup("goroutine").WriteTo(os.Stderr, 1)
			code = 1
		}
	}
	os.Exit(code)
}
