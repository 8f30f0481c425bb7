package cluster

import (
	"testing"
	"time"

	"github.com/shardnet/shardnet/fsm"
)

// The registry's state machine, step by step on a made-up clock.
func TestRegistryDecide(t *testing.T) {
	const deadAfter = time.Minute
	t0 := time.Unix(1000, 0)
	rec := func(state string) fsm.NodeRecord { return fsm.NodeRecord{ID: "n1", State: state} }
	steps := []struct {
		name   string
		have   string // "" no record
		gossip string
		at     time.Duration
		want   string
	}{
		{"new node", "", fsm.NodeAlive, 0, fsm.NodeAlive},
		{"gossip says dead: suspect", fsm.NodeAlive, fsm.NodeDead, 0, fsm.NodeSuspect},
		{"still absent before dead-after: suspect", fsm.NodeSuspect, fsm.NodeDead, 59 * time.Second, fsm.NodeSuspect},
		{"back: alive", fsm.NodeSuspect, fsm.NodeAlive, 60 * time.Second, fsm.NodeAlive},
		{"absent again: the timer starts over", fsm.NodeAlive, fsm.NodeSuspect, 61 * time.Second, fsm.NodeSuspect},
		{"59 s of this absence", fsm.NodeSuspect, fsm.NodeDead, 120 * time.Second, fsm.NodeSuspect},
		{"dead-after of continuous absence: dead", fsm.NodeSuspect, fsm.NodeDead, 121 * time.Second, fsm.NodeDead},
		{"dead stays dead", fsm.NodeDead, fsm.NodeDead, 500 * time.Second, fsm.NodeDead},
		{"back from dead: alive", fsm.NodeDead, fsm.NodeAlive, 501 * time.Second, fsm.NodeAlive},
		{"draining is not undone by gossip", fsm.NodeDraining, fsm.NodeAlive, 502 * time.Second, fsm.NodeDraining},
		{"draining while briefly absent", fsm.NodeDraining, fsm.NodeDead, 503 * time.Second, fsm.NodeDraining},
		{"draining and absent for dead-after: dead", fsm.NodeDraining, fsm.NodeDead, 563 * time.Second, fsm.NodeDead},
		{"left", fsm.NodeAlive, fsm.NodeLeft, 600 * time.Second, fsm.NodeLeft},
		{"left stays left while absent", fsm.NodeLeft, fsm.NodeDead, 700 * time.Second, fsm.NodeLeft},
	}
	r := &registry{absent: map[string]time.Time{}}
	for _, s := range steps {
		got := r.decide("n1", rec(s.have), s.have != "", s.gossip, t0.Add(s.at), deadAfter)
		if got != s.want {
			t.Fatalf("%s: %s", s.name, got)
		}
	}

	// A new meta leader starts the timers again: a node absent for most
	// of dead-after under the old leader is dead only dead-after after
	// the new one first saw it absent.
	fresh := &registry{absent: map[string]time.Time{}}
	if got := fresh.decide("n1", rec(fsm.NodeSuspect), true, fsm.NodeDead, t0, deadAfter); got != fsm.NodeSuspect {
		t.Fatalf("new leader, first look: %s", got)
	}
	if got := fresh.decide("n1", rec(fsm.NodeSuspect), true, fsm.NodeDead, t0.Add(deadAfter-time.Second), deadAfter); got != fsm.NodeSuspect {
		t.Fatalf("new leader, before dead-after: %s", got)
	}
}

// Disk figures are written only when they move enough.
func TestRegistryDiffers(t *testing.T) {
	const gib = 1 << 30
	base := fsm.NodeRecord{ID: "n1", Reported: true, DiskBytes: 100 * gib, DiskFree: 50 * gib, DataBytes: 10 * gib, State: fsm.NodeAlive}
	tests := []struct {
		name string
		edit func(*fsm.NodeRecord)
		want bool
	}{
		{"nothing", func(*fsm.NodeRecord) {}, false},
		{"free moved by 10 MiB", func(r *fsm.NodeRecord) { r.DiskFree -= 10 << 20 }, false},
		{"free moved by 1 GiB (1 % of 100 GiB)", func(r *fsm.NodeRecord) { r.DiskFree -= gib }, true},
		{"used moved by 500 MiB", func(r *fsm.NodeRecord) { r.DataBytes += 500 << 20 }, false},
		{"used from zero", func(r *fsm.NodeRecord) { r.DataBytes = 0 }, true},
		{"state alone (SetNodeState writes it)", func(r *fsm.NodeRecord) { r.State = fsm.NodeSuspect }, false},
		{"operator", func(r *fsm.NodeRecord) { r.Operator = "acme" }, true},
		{"serve-data", func(r *fsm.NodeRecord) { r.ServeData = true }, true},
		{"address", func(r *fsm.NodeRecord) { r.HTTPAddr = "127.0.0.1:1" }, true},
	}
	for _, tc := range tests {
		want := base
		tc.edit(&want)
		if got := registryDiffers(base, want); got != tc.want {
			t.Errorf("%s: differs = %v, want %v", tc.name, got, tc.want)
		}
	}
	// Crossing the allocator's reserve is written however small the step.
	small := fsm.NodeRecord{DiskBytes: 10 * gib, DiskFree: 512<<20 + 1<<20}
	low := small
	low.DiskFree = 511 << 20
	if !registryDiffers(small, low) {
		t.Errorf("free crossing the reserve (%d) not written", freeReserve(&small))
	}
	if diskStep(gib) != 64<<20 || diskStep(10*gib) != 10*gib/100 || diskStep(1<<40) != gib {
		t.Errorf("diskStep: %d %d %d", diskStep(gib), diskStep(10*gib), diskStep(1<<40))
	}
}

// Below cluster version 4 a record leaves out what version 4 added: an
// older replica of the meta state would apply it without them.
func TestRecordOfByClusterVersion(t *testing.T) {
	m := member{meta: nodeMeta{ID: "n1", ServerID: "n1@1", Role: fsm.RoleCore, Operator: "acme", ServeData: true,
		DiskBytes: 100, DiskFree: 50, DataBytes: 10, Version: 4}, gossipAddr: "127.0.0.1:1"}
	old := recordOf(m, false)
	if old.Reported || old.Operator != "" || old.ServeData || old.DiskFree != 0 || old.DataBytes != 0 {
		t.Fatalf("below version 4: %+v", old)
	}
	if !old.HostsData() {
		t.Fatal("a core node's record without the version-4 fields does not host data")
	}
	full := recordOf(m, true)
	if !full.Reported || full.Operator != "acme" || !full.ServeData || full.DiskFree != 50 || full.DataBytes != 10 || full.DiskBytes != 100 {
		t.Fatalf("at version 4: %+v", full)
	}
	full.ServeData = false
	if full.HostsData() {
		t.Fatal("a core node without -serve-data hosts data")
	}
}
