package cluster

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestUploadMemory: the budget lets uploadMemoryBytes of chunk buffers out
// at once; one more waits until a buffer comes back (or its upload's
// context ends), a chunk larger than the budget takes it whole instead of
// waiting forever, and the gauge follows what is out.
func TestUploadMemory(t *testing.T) {
	m := &uploadMemory{gauge: prometheus.NewGauge(prometheus.GaugeOpts{Name: "g"})}
	const chunk = 4 << 20
	for i := 0; i < uploadMemoryBytes/chunk; i++ {
		if err := m.acquire(context.Background(), chunk); err != nil {
			t.Fatal(err)
		}
	}
	if got := testutil.ToFloat64(m.gauge); got != uploadMemoryBytes {
		t.Fatalf("gauge %v with the budget out, want %d", got, uploadMemoryBytes)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := m.acquire(ctx, chunk); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a chunk beyond the budget: %v, want it to wait until its context ends", err)
	}
	got := make(chan error, 1)
	go func() { got <- m.acquire(context.Background(), chunk) }()
	select {
	case err := <-got:
		t.Fatalf("a chunk beyond the budget was let out (%v) before any came back", err)
	case <-time.After(50 * time.Millisecond):
	}
	m.release(chunk)
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a waiting chunk did not get the buffer given back")
	}
	for i := 0; i < uploadMemoryBytes/chunk; i++ {
		m.release(chunk)
	}
	if got := testutil.ToFloat64(m.gauge); got != 0 {
		t.Fatalf("gauge %v with everything back, want 0", got)
	}
	if err := m.acquire(context.Background(), 2*uploadMemoryBytes); err != nil {
		t.Fatalf("a chunk larger than the budget: %v", err)
	}
	m.release(2 * uploadMemoryBytes)
	if !m.sem.TryAcquire(uploadMemoryBytes) {
		t.Fatal("the budget is not whole after every chunk came back")
	}
}
