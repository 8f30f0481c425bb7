package loadgen

import (
	"fmt"
	"sync"
	"time"
)

// progress prints a line each second while a run measures: the requests
// per second of the last second, the errors so far and the p99 so far.
type progress struct {
	r     *runner
	start time.Time
	quit  chan struct{}
	wg    sync.WaitGroup
	sum   Histogram // the loops' histograms merged, reset each second
	last  int64
}

func startProgress(r *runner, start time.Time) *progress {
	p := &progress{r: r, start: start, quit: make(chan struct{})}
	p.wg.Add(1)
	go p.loop()
	return p
}

func (p *progress) loop() {
	defer p.wg.Done()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	lastAt := p.start
	for {
		select {
		case <-p.quit:
			return
		case now := <-t.C:
			p.print(now, now.Sub(lastAt))
			lastAt = now
		}
	}
}

func (p *progress) print(now time.Time, since time.Duration) {
	var done, errs int64
	p.sum.reset()
	for _, l := range p.r.loops {
		done += l.done.Load()
		errs += l.errs.Load()
		p.sum.Merge(&l.hist)
	}
	rate := float64(done-p.last) / max(since.Seconds(), 1e-3)
	p.last = done
	line := fmt.Sprintf("%s %4.0fs  %8.0f req/s  %9d requests  %6d errors  p99 %8.3f ms",
		p.r.cfg.Op, now.Sub(p.start).Seconds(), rate, done, errs, ms(p.sum.Quantile(0.99)))
	if p.r.cfg.ProgressTTY {
		fmt.Fprintf(p.r.cfg.Progress, "\r%s  ", line)
	} else {
		fmt.Fprintln(p.r.cfg.Progress, line)
	}
}

// finish stops the line; on a terminal it ends it.
func (p *progress) finish() {
	close(p.quit)
	p.wg.Wait()
	if p.r.cfg.ProgressTTY && p.last > 0 {
		fmt.Fprintln(p.r.cfg.Progress)
	}
}
