package logstore

import (
	"fmt"

	"github.com/cockroachdb/pebble/v2"
	"github.com/hashicorp/go-hclog"
)

// pebbleLogger routes pebble's log lines to hclog. pebble reports every
// flush, compaction and WAL rotation; under load that is several lines a
// second, so routine messages go to a quiet level (Debug for pebble's own
// Infof, Trace for the event listener) and only errors stay loud.
type pebbleLogger struct {
	log   hclog.Logger
	level hclog.Level // level of Infof lines
}

var _ pebble.Logger = pebbleLogger{}

func (p pebbleLogger) Infof(format string, args ...any) {
	// Skip the formatting when the level is off, as it is in production.
	if (p.level == hclog.Trace && !p.log.IsTrace()) || (p.level == hclog.Debug && !p.log.IsDebug()) {
		return
	}
	p.log.Log(p.level, fmt.Sprintf(format, args...))
}

func (p pebbleLogger) Errorf(format string, args ...any) {
	p.log.Error(fmt.Sprintf(format, args...))
}

// Fatalf is called by pebble on broken invariants (corruption it cannot
// continue from) and must not return. pebble's default exits the process;
// a panic does the same loudly but still lets tests observe it. Serving Raft
// on a broken disk is worse than stopping (docs/raft-notes.md "R5").
func (p pebbleLogger) Fatalf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	p.log.Error("fatal pebble error", "error", msg)
	panic("logstore: pebble fatal: " + msg)
}

// eventListener logs pebble's routine events at Trace, and the ones an
// operator must see (background errors, corruption, write stalls, slow or
// full disks) at Warn or Error. Write stalls are also counted, since they
// stall every Raft group of the node at once.
func eventListener(log hclog.Logger, m *metrics) *pebble.EventListener {
	l := pebble.MakeLoggingEventListener(pebbleLogger{log: log, level: hclog.Trace})
	l.BackgroundError = func(err error) {
		log.Error("pebble background error", "error", err)
	}
	l.DataCorruption = func(info pebble.DataCorruptionInfo) {
		log.Error("pebble data corruption", "info", info.String())
	}
	l.DiskSlow = func(info pebble.DiskSlowInfo) {
		log.Warn("disk slow", "info", info.String())
	}
	l.LowDiskSpace = func(info pebble.LowDiskSpaceInfo) {
		log.Warn("low disk space", "info", info.String())
	}
	l.WriteStallBegin = func(info pebble.WriteStallBeginInfo) {
		m.writeStalls.Inc()
		log.Warn("write stall begins: every Raft group's appends wait", "reason", info.Reason)
	}
	l.WriteStallEnd = func() {
		log.Info("write stall ends")
	}
	return &l
}
