// Package procs runs an agent process on one processor while it is nearly
// idle, and on every processor Go would give it otherwise.
//
// Why: an idle node still wakes up a few thousand times a second (the
// heartbeats of its channel groups, the prober, gossip). After each wake-up
// Go's scheduler, with a second processor (P) free, starts another thread
// spinning to look for work, which mostly finds none: on 3 agents hosting
// 1,000 idle channel replicas each, about a fifth of their CPU
// (docs/benchmarks.md "Idle channels, real agents"). With GOMAXPROCS=1 the
// spinning stops. A loaded node needs every core, so this package decides
// from the process's own CPU use, measured each second (getrusage):
//
//   - below Low of one core for Settle seconds in a row: one P;
//   - above High of one core in any second while on one P: Go's default
//     again (runtime.SetDefaultGOMAXPROCS, which follows the CPU limit of
//     the container as Go does).
//
// A burst of load therefore runs on one P for at most a second. Nothing is
// changed when the operator set GOMAXPROCS in the environment.
package procs

import (
	"context"
	"os"
	"runtime"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
)

// Config is the controller's thresholds; the zero value of a field takes
// its default.
type Config struct {
	Every  time.Duration // how often CPU use is sampled (1 s)
	Low    float64       // share of one core below which the process is idle (0.25)
	High   float64       // share of one core above which it is busy (0.45)
	Settle int           // idle samples in a row before one P (5)
	Logger hclog.Logger
	// CPU returns the process's CPU time so far (tests); default getrusage.
	CPU func() time.Duration
}

func (c *Config) defaults() {
	if c.Every <= 0 {
		c.Every = time.Second
	}
	if c.Low <= 0 {
		c.Low = 0.25
	}
	if c.High <= 0 {
		c.High = 0.45
	}
	if c.Settle <= 0 {
		c.Settle = 5
	}
	if c.Logger == nil {
		c.Logger = hclog.NewNullLogger()
	}
	if c.CPU == nil {
		c.CPU = processCPU
	}
}

// Enabled reports whether the controller may change GOMAXPROCS: not when
// the operator set it, and not on a single-core machine.
func Enabled() bool {
	_, set := os.LookupEnv("GOMAXPROCS")
	return !set && runtime.GOMAXPROCS(0) > 1
}

// Run samples the process's CPU use and sets GOMAXPROCS until ctx ends,
// then gives Go its default back. It returns at once if !Enabled().
func Run(ctx context.Context, cfg Config) {
	if !Enabled() {
		return
	}
	cfg.defaults()
	d := decider{low: cfg.Low, high: cfg.High, settle: cfg.Settle}
	tick := time.NewTicker(cfg.Every)
	defer tick.Stop()
	defer func() {
		if d.single {
			runtime.SetDefaultGOMAXPROCS()
		}
	}()
	last, at := cfg.CPU(), time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			cpu := cfg.CPU()
			share := float64(cpu-last) / float64(now.Sub(at))
			last, at = cpu, now
			if !d.step(share) {
				continue
			}
			if d.single {
				runtime.GOMAXPROCS(1)
				cfg.Logger.Debug("nearly idle: running on one processor", "cpu_share", share)
			} else {
				runtime.SetDefaultGOMAXPROCS()
				cfg.Logger.Debug("busy: running on every processor", "cpu_share", share, "gomaxprocs", runtime.GOMAXPROCS(0))
			}
		}
	}
}

// decider is Run's decision, apart from the clock and the runtime.
type decider struct {
	low, high float64
	settle    int
	quiet     int  // idle samples in a row
	single    bool // on one P
}

// step takes one sample (the share of one core used since the last) and
// reports whether the decision changed (d.single is the new one).
func (d *decider) step(share float64) bool {
	if d.single {
		if share > d.high {
			d.single, d.quiet = false, 0
			return true
		}
		return false
	}
	if share >= d.low {
		d.quiet = 0
		return false
	}
	d.quiet++
	if d.quiet < d.settle {
		return false
	}
	d.single = true
	return true
}

func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
