package chaos

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"
)

// Availability is measured, not hidden. The linearizability check leaves
// out every read that failed, so a cluster that answered no read for
// seconds would still pass it; these figures show it. An attempt is one
// operation the workload sent; it succeeded when the cluster gave a
// definite answer (a value, not found, a CAS mismatch), and failed when it
// answered an error or nothing in time.

// attempt is one operation sent, in Recorder time.
type attempt struct {
	write     bool
	call, ret int64
	ok        bool
}

// Attempt records an operation sent and whether it succeeded.
func (r *Recorder) Attempt(write bool, call, ret int64, ok bool) {
	r.mu.Lock()
	r.attempts = append(r.attempts, attempt{write: write, call: call, ret: ret, ok: ok})
	r.mu.Unlock()
}

// Availability sums the attempts of a span of time.
type Availability struct {
	Reads, ReadsOK   int
	Writes, WritesOK int
	// ReadGap and WriteGap are the longest stretches of the span in which
	// no read (write) succeeded: between two successful answers, or
	// between an end of the span and the nearest one. ReadGapAt and
	// WriteGapAt are when they began (Recorder time), to find them in the
	// nemesis log.
	ReadGap, WriteGap     time.Duration
	ReadGapAt, WriteGapAt time.Duration
}

// ReadFraction is the share of reads that succeeded (1 with none sent).
func (a Availability) ReadFraction() float64 { return fraction(a.ReadsOK, a.Reads) }

// WriteFraction is the share of writes that succeeded (1 with none sent).
func (a Availability) WriteFraction() float64 { return fraction(a.WritesOK, a.Writes) }

func fraction(ok, all int) float64 {
	if all == 0 {
		return 1
	}
	return float64(ok) / float64(all)
}

// AvailabilityReport is a run's availability in all and during each kind
// of fault (the operations sent while a fault of that kind was in force;
// the gaps are the longest within one such fault).
type AvailabilityReport struct {
	Run     Availability
	ByFault map[string]Availability
	Faults  map[string]int // faults of each kind
}

// Availability reports the attempts recorded up to end (Recorder time:
// when the load stopped).
func (r *Recorder) Availability(end int64) AvailabilityReport {
	r.mu.Lock()
	atts := slices.Clone(r.attempts)
	notes := slices.Clone(r.notes)
	r.mu.Unlock()
	rep := AvailabilityReport{Run: availabilityOf(atts, 0, end), ByFault: map[string]Availability{}, Faults: map[string]int{}}
	for _, n := range notes {
		kind, _, _ := strings.Cut(n.Description, " ")
		win := availabilityOf(atts, n.Start, min(n.End, end))
		sum := rep.ByFault[kind]
		sum.Reads += win.Reads
		sum.ReadsOK += win.ReadsOK
		sum.Writes += win.Writes
		sum.WritesOK += win.WritesOK
		if win.ReadGap > sum.ReadGap {
			sum.ReadGap, sum.ReadGapAt = win.ReadGap, win.ReadGapAt
		}
		if win.WriteGap > sum.WriteGap {
			sum.WriteGap, sum.WriteGapAt = win.WriteGap, win.WriteGapAt
		}
		rep.ByFault[kind] = sum
		rep.Faults[kind]++
	}
	return rep
}

// availabilityOf counts the attempts sent in [from, to) and the longest
// gaps between successful answers within [from, to].
func availabilityOf(atts []attempt, from, to int64) Availability {
	var a Availability
	var readDone, writeDone []int64
	for _, at := range atts {
		if at.call >= from && at.call < to {
			if at.write {
				a.Writes++
			} else {
				a.Reads++
			}
			if at.ok {
				if at.write {
					a.WritesOK++
				} else {
					a.ReadsOK++
				}
			}
		}
		if at.ok && at.ret >= from && at.ret <= to {
			if at.write {
				writeDone = append(writeDone, at.ret)
			} else {
				readDone = append(readDone, at.ret)
			}
		}
	}
	a.ReadGap, a.ReadGapAt = longestGap(readDone, from, to)
	a.WriteGap, a.WriteGapAt = longestGap(writeDone, from, to)
	return a
}

// longestGap is the longest stretch of [from, to] with no time in done, and
// when it began.
func longestGap(done []int64, from, to int64) (gap, at time.Duration) {
	slices.Sort(done)
	prev := from
	for _, t := range append(done, to) {
		if d := time.Duration(t - prev); d > gap {
			gap, at = d, time.Duration(prev)
		}
		prev = t
	}
	return gap, at
}

// String is a table of the report, for the test log.
func (rep AvailabilityReport) String() string {
	var b strings.Builder
	row := func(name string, a Availability) {
		fmt.Fprintf(&b, "  %-32s reads %6.2f%% of %6d, longest gap %-8v (at %-8v)  writes %6.2f%% of %6d, longest gap %-8v (at %v)\n",
			name, 100*a.ReadFraction(), a.Reads, a.ReadGap.Round(time.Millisecond), a.ReadGapAt.Round(100*time.Millisecond),
			100*a.WriteFraction(), a.Writes, a.WriteGap.Round(time.Millisecond), a.WriteGapAt.Round(100*time.Millisecond))
	}
	b.WriteString("availability (operations answered; longest stretch without a successful answer):\n")
	row("whole run", rep.Run)
	kinds := make([]string, 0, len(rep.ByFault))
	for k := range rep.ByFault {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	for _, k := range kinds {
		row(fmt.Sprintf("during %s ×%d", k, rep.Faults[k]), rep.ByFault[k])
	}
	return b.String()
}
