package cluster

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/shardnet/shardnet/fsm"
)

// TestWatchFrames: frames read back as written; a stream cut inside a
// frame is an error, not a clean end; a frame over the limit is refused.
func TestWatchFrames(t *testing.T) {
	var buf bytes.Buffer
	fw := frameWriter{w: &buf}
	want := []struct {
		kind byte
		b    []byte
	}{{frameView, []byte(`{"voters":[]}`)}, {frameSnapshot, []byte(`{"version":1}`)}, {frameEntry, make([]byte, 20)}, {frameProgress, u64(7)}}
	for _, f := range want {
		if err := fw.frame(f.kind, f.b); err != nil {
			t.Fatal(err)
		}
	}
	whole := buf.Bytes()
	br := bufio.NewReader(bytes.NewReader(whole))
	for _, f := range want {
		kind, b, err := readWatchFrame(br)
		if err != nil || kind != f.kind || !bytes.Equal(b, f.b) {
			t.Fatalf("read %c %q, %v; want %c %q", kind, b, err, f.kind, f.b)
		}
	}
	if _, _, err := readWatchFrame(br); !errors.Is(err, io.EOF) {
		t.Fatalf("after the last frame: %v, want io.EOF", err)
	}
	br = bufio.NewReader(bytes.NewReader(whole[:len(whole)-3]))
	var err error
	for range want {
		if _, _, err = readWatchFrame(br); err != nil {
			break
		}
	}
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("a frame cut short: %v, want io.ErrUnexpectedEOF", err)
	}
	huge := []byte{frameSnapshot, 0xff, 0xff, 0xff, 0xff}
	if _, _, err := readWatchFrame(bufio.NewReader(bytes.NewReader(huge))); err == nil {
		t.Fatal("a frame over the limit was read")
	}
}

// TestFollowerCopyMatchesSource: a follower fed a state and then the
// entries after it, some of them twice (a watch opened again on another
// core node from an older index), holds exactly the source's state; what
// Raft delivers once the node follows by watch is dropped.
func TestFollowerCopyMatchesSource(t *testing.T) {
	src := fsm.NewMeta()
	var entries []*raft.Log
	add := func(cmd fsm.MetaCommand) {
		b, err := fsm.EncodeMeta(cmd)
		if err != nil {
			t.Fatal(err)
		}
		l := &raft.Log{Index: uint64(len(entries) + 1), Term: 1, Type: raft.LogCommand, Data: b}
		entries = append(entries, l)
		src.Apply(l)
	}
	add(&fsm.SetClusterID{ID: "c1"})
	for i := range 6 {
		add(&fsm.UpsertNode{Node: fsm.NodeRecord{ID: fmt.Sprintf("n%d", i), ServerID: fmt.Sprintf("n%d@1", i), Role: fsm.RoleResource}})
	}
	// The state at index 4, as a core node sends it.
	mid := fsm.NewMeta()
	for _, l := range entries[:4] {
		mid.Apply(l)
	}
	state, at, err := mid.State()
	if err != nil || at != 4 {
		t.Fatalf("state at %d, %v", at, err)
	}

	n := &Node{metaFSM: fsm.NewMeta(), log: hclog.NewNullLogger(), metrics: newMetrics(nil)}
	entry := func(l *raft.Log) []byte {
		return append(binary.BigEndian.AppendUint64(u64(l.Index), l.Term), l.Data...)
	}
	apply := func(kind byte, b []byte) {
		t.Helper()
		if err := n.applyWatchFrame(kind, b); err != nil {
			t.Fatal(err)
		}
	}
	apply(frameSnapshot, state)
	for _, l := range entries[2:] { // 3 and 4 are in the state already
		apply(frameEntry, entry(l))
	}
	apply(frameProgress, u64(uint64(len(entries))))
	got, gotAt, _ := n.metaFSM.State()
	want, wantAt, _ := src.State()
	if gotAt != wantAt || !bytes.Equal(got, want) {
		t.Fatalf("follower's copy at %d:\n%s\nsource at %d:\n%s", gotAt, got, wantAt, want)
	}
	if p := n.follow.progress.Load(); p != uint64(len(entries)) {
		t.Fatalf("progress %d, want %d", p, len(entries))
	}

	// Following by watch, Raft's deliveries change nothing.
	n.follow.watching.Store(true)
	g := &raftMetaFSM{f: &n.follow, m: n.metaFSM}
	b, _ := fsm.EncodeMeta(&fsm.UpsertNode{Node: fsm.NodeRecord{ID: "late", ServerID: "late@1", Role: fsm.RoleResource}})
	g.Apply(&raft.Log{Index: 100, Term: 2, Type: raft.LogCommand, Data: b})
	if err := g.Restore(io.NopCloser(bytes.NewReader([]byte(`{"version":1}`)))); err != nil {
		t.Fatal(err)
	}
	if after, _, _ := n.metaFSM.State(); !bytes.Equal(after, got) {
		t.Fatalf("Raft changed a copy fed by watch:\n%s", after)
	}
}
