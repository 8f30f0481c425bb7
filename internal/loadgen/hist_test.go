package loadgen

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// Every value falls in a bucket that holds it, and no bucket above the
// exact range is wider than 1/128 of its lower bound.
func TestHistogramBuckets(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	check := func(v uint64) {
		i := bucketOf(v)
		lo, hi := bucketRange(i)
		if v < lo || v > hi {
			t.Fatalf("value %d in bucket %d = [%d, %d]", v, i, lo, hi)
		}
		if lo >= 1<<subBits && float64(hi-lo+1)/float64(lo) > 1.0/128 {
			t.Fatalf("bucket %d = [%d, %d] is wider than 1/128 of its bound", i, lo, hi)
		}
	}
	for v := uint64(0); v < 5000; v++ {
		check(v)
	}
	for range 100000 {
		check(rng.Uint64N(1 << 40))
	}
	if got := bucketOf(1 << 62); got != nBuckets-1 {
		t.Fatalf("a huge value went to bucket %d, want the last (%d)", got, nBuckets-1)
	}
	// Buckets are contiguous: the next one starts where one ends.
	for i := 0; i < nBuckets-1; i++ {
		_, hi := bucketRange(i)
		lo, _ := bucketRange(i + 1)
		if lo != hi+1 {
			t.Fatalf("bucket %d ends at %d, bucket %d starts at %d", i, hi, i+1, lo)
		}
	}
}

// A known sample: 1 µs .. 100,000 µs, each once.
func TestHistogramKnownSample(t *testing.T) {
	var h Histogram
	for us := 1; us <= 100000; us++ {
		h.Record(time.Duration(us) * time.Microsecond)
	}
	if h.Count() != 100000 || h.Min() != time.Microsecond || h.Max() != 100*time.Millisecond {
		t.Fatalf("count %d, min %v, max %v", h.Count(), h.Min(), h.Max())
	}
	if want := 50000500 * time.Nanosecond; h.Mean() != want {
		t.Fatalf("mean %v, want %v", h.Mean(), want)
	}
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{
		{0.5, 50 * time.Millisecond},
		{0.9, 90 * time.Millisecond},
		{0.99, 99 * time.Millisecond},
		{0.999, 99900 * time.Microsecond},
		{1, 100 * time.Millisecond},
		{0, time.Microsecond},
	} {
		got := h.Quantile(c.q)
		if err := math.Abs(float64(got-c.want)) / float64(c.want); err > 0.01 {
			t.Errorf("quantile %v = %v, want %v (±1 %%): off by %.2f %%", c.q, got, c.want, 100*err)
		}
	}
}

// Small values are exact: the nearest-rank quantile of 1..200 ns.
func TestHistogramExactBelow256(t *testing.T) {
	var h Histogram
	for v := 200; v >= 1; v-- {
		h.Record(time.Duration(v))
	}
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 100}, {0.9, 180}, {0.99, 198}, {0.001, 1}, {1, 200}} {
		if got := h.Quantile(c.q); got != c.want {
			t.Errorf("quantile %v = %v, want %v", c.q, got, c.want)
		}
	}
}

// Against a sorted sample of a long-tailed distribution, merged from
// several histograms as a run merges its loops'.
func TestHistogramMatchesSortedSample(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	parts := make([]Histogram, 4)
	var sample []time.Duration
	for i := range 50000 {
		d := time.Duration(math.Exp(rng.NormFloat64()*1.2+13.5)) + 50*time.Microsecond // ~1 ms median, a long tail
		sample = append(sample, d)
		parts[i%4].Record(d)
	}
	var h Histogram
	for i := range parts {
		h.Merge(&parts[i])
	}
	slices.Sort(sample)
	for _, q := range []float64{0.01, 0.1, 0.5, 0.9, 0.99, 0.999, 0.9999} {
		want := sample[int(math.Ceil(q*float64(len(sample))))-1]
		got := h.Quantile(q)
		if err := math.Abs(float64(got-want)) / float64(want); err > 0.01 {
			t.Errorf("quantile %v = %v, sorted sample says %v: off by %.2f %%", q, got, want, 100*err)
		}
	}
	if h.Min() != sample[0] || h.Max() != sample[len(sample)-1] || h.Count() != uint64(len(sample)) {
		t.Errorf("min %v max %v count %d; sample %v %v %d", h.Min(), h.Max(), h.Count(), sample[0], sample[len(sample)-1], len(sample))
	}
	var total uint64
	for _, n := range []uint64{h.CountBetween(0, time.Millisecond), h.CountBetween(time.Millisecond, time.Hour)} {
		total += n
	}
	if total != h.Count() {
		t.Errorf("CountBetween over two halves: %d, want %d", total, h.Count())
	}
}

func TestHistogramEmpty(t *testing.T) {
	var h Histogram
	if h.Quantile(0.99) != 0 || h.Mean() != 0 || h.Min() != 0 || h.Max() != 0 {
		t.Fatalf("an empty histogram answered %v %v %v %v", h.Quantile(0.99), h.Mean(), h.Min(), h.Max())
	}
}
