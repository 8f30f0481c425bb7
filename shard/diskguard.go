package shard

import (
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
)

// diskGuard refuses writes before the disk is full (docs/design.md "D14"):
// pebble failing mid-write would panic the node (docs/raft-notes.md "R5"), while
// a refused proposal is a clean 507 that the client can act on. It polls the
// free space of the data dir's filesystem once a second.
type diskGuard struct {
	dir     string
	minFree uint64
	log     hclog.Logger
	full    atomic.Bool
	free    atomic.Uint64
	stop    chan struct{}
	done    chan struct{}
	once    sync.Once
}

func newDiskGuard(dir string, minFree uint64, log hclog.Logger) *diskGuard {
	g := &diskGuard{dir: dir, minFree: minFree, log: log, stop: make(chan struct{}), done: make(chan struct{})}
	g.check()
	go g.run()
	return g
}

func (g *diskGuard) run() {
	defer close(g.done)
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-g.stop:
			return
		case <-t.C:
			g.check()
		}
	}
}

func (g *diskGuard) check() {
	var st syscall.Statfs_t
	if err := syscall.Statfs(g.dir, &st); err != nil {
		g.log.Warn("cannot read free disk space", "dir", g.dir, "error", err)
		return
	}
	free := st.Bavail * uint64(st.Bsize)
	g.free.Store(free)
	full := free < g.minFree
	if was := g.full.Swap(full); was != full {
		if full {
			g.log.Error("disk almost full: refusing writes", "free_bytes", free, "min_free_bytes", g.minFree)
		} else {
			g.log.Info("disk space recovered: accepting writes", "free_bytes", free)
		}
	}
}

// close stops the guard; a second call (Close after Kill) is a no-op.
func (g *diskGuard) close() {
	g.once.Do(func() { close(g.stop) })
	<-g.done
}
