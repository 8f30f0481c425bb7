package loadgen

import (
	"math"
	"math/bits"
	"sync/atomic"
	"time"
)

// The histogram is log-linear, as HdrHistogram is (a small one of our own
// rather than a dependency): values below 2^subBits are counted exactly, and
// each power of two above is cut into 2^(subBits-1) equal buckets, so a
// bucket is never wider than 1/128 of its lower bound. A value read back is its bucket's
// midpoint: at most 0.4 % from the value recorded. Values are nanoseconds;
// above maxExp (2^40 ns, 18 minutes) they are clamped into the last bucket.
const (
	subBits  = 8                  // values below 2^subBits are exact
	subHalf  = 1 << (subBits - 1) // buckets per power of two above
	maxExp   = 40 - subBits       // the largest shift: values up to 2^40 ns
	nBuckets = (maxExp+1)*subHalf + subHalf
)

// Histogram counts durations. Record is safe for concurrent use and takes no
// lock (one atomic add per field), so a progress reader can merge it while
// request loops record; one Histogram per loop keeps the adds uncontended.
type Histogram struct {
	counts [nBuckets]atomic.Uint64
	n      atomic.Uint64
	sum    atomic.Uint64 // nanoseconds
	min    atomic.Uint64 // nanoseconds + 1; 0: none yet
	max    atomic.Uint64 // nanoseconds
}

// bucketOf returns the bucket index of v.
func bucketOf(v uint64) int {
	if v < 1<<subBits {
		return int(v)
	}
	e := bits.Len64(v) - subBits
	if e > maxExp {
		return nBuckets - 1
	}
	// v>>e has subBits bits: it lies in [2^(subBits-1), 2^subBits).
	return e*subHalf + int(v>>e)
}

// bucketRange returns the smallest and largest value of bucket i.
func bucketRange(i int) (lo, hi uint64) {
	if i < 1<<subBits {
		return uint64(i), uint64(i)
	}
	e := i/subHalf - 1
	m := uint64(i - e*subHalf)
	return m << e, (m+1)<<e - 1
}

// Record counts one duration (negative ones as 0).
func (h *Histogram) Record(d time.Duration) {
	v := uint64(max(d, 0))
	h.counts[bucketOf(v)].Add(1)
	h.n.Add(1)
	h.sum.Add(v)
	for {
		cur := h.max.Load()
		if v <= cur || h.max.CompareAndSwap(cur, v) {
			break
		}
	}
	for {
		cur := h.min.Load()
		if (cur != 0 && v+1 >= cur) || h.min.CompareAndSwap(cur, v+1) {
			break
		}
	}
}

// Merge adds o's counts into h.
func (h *Histogram) Merge(o *Histogram) {
	if o.n.Load() == 0 {
		return
	}
	for i := range o.counts {
		if c := o.counts[i].Load(); c != 0 {
			h.counts[i].Add(c)
		}
	}
	h.n.Add(o.n.Load())
	h.sum.Add(o.sum.Load())
	if m := o.max.Load(); m > h.max.Load() {
		h.max.Store(m)
	}
	if m := o.min.Load(); m != 0 && (h.min.Load() == 0 || m < h.min.Load()) {
		h.min.Store(m)
	}
}

// Count returns how many durations were recorded.
func (h *Histogram) Count() uint64 { return h.n.Load() }

// Min returns the smallest duration recorded (exact), 0 when none was.
func (h *Histogram) Min() time.Duration {
	if m := h.min.Load(); m != 0 {
		return time.Duration(m - 1)
	}
	return 0
}

// Max returns the largest duration recorded (exact).
func (h *Histogram) Max() time.Duration { return time.Duration(h.max.Load()) }

// Mean returns the mean duration (exact), 0 when none was recorded.
func (h *Histogram) Mean() time.Duration {
	n := h.n.Load()
	if n == 0 {
		return 0
	}
	return time.Duration(h.sum.Load() / n)
}

// Quantile returns the duration below or at which a fraction q (0..1) of
// the recorded ones lie: the nearest-rank value ceil(q·n), as its bucket's
// midpoint kept within [Min, Max]. 0 when nothing was recorded.
func (h *Histogram) Quantile(q float64) time.Duration {
	n := h.n.Load()
	if n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(n)))
	rank = min(max(rank, 1), n)
	var seen uint64
	for i := range h.counts {
		seen += h.counts[i].Load()
		if seen >= rank {
			lo, hi := bucketRange(i)
			v := time.Duration(lo + (hi-lo)/2)
			return min(max(v, h.Min()), h.Max())
		}
	}
	return h.Max() // counts raced ahead of n: the top
}

// CountBetween returns how many recorded durations fall in buckets whose
// midpoint is in [lo, hi): what a printed histogram's bar shows.
func (h *Histogram) CountBetween(lo, hi time.Duration) uint64 {
	var c uint64
	for i := bucketOf(uint64(max(lo, 0))); i < nBuckets; i++ {
		blo, bhi := bucketRange(i)
		mid := time.Duration(blo + (bhi-blo)/2)
		if mid >= hi {
			break
		}
		if mid >= lo {
			c += h.counts[i].Load()
		}
	}
	return c
}

// reset empties h; no Record may run meanwhile.
func (h *Histogram) reset() {
	for i := range h.counts {
		h.counts[i].Store(0)
	}
	h.n.Store(0)
	h.sum.Store(0)
	h.min.Store(0)
	h.max.Store(0)
}
