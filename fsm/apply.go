package fsm

import (
	"bytes"
	"cmp"
	"fmt"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/hashicorp/raft"
)

// Apply applies one committed log entry; see ApplyBatch.
func (c *Channel) Apply(l *raft.Log) any {
	return c.ApplyBatch([]*raft.Log{l})[0]
}

// ApplyBatch applies committed log entries in one pebble batch that also
// records the last index, committed without fsync: the Raft log is the
// durable record, and an entry lost from the state by a crash is re-applied
// from it. It returns one result per entry: a *Result for each command entry
// applied, nil for configuration entries, skippable unknown entries and
// entries at or below Applied() (raft replays those after a restart,
// docs/raft-notes.md "R1").
//
// An entry that cannot be decoded, or a storage failure, panics: a replica
// that skips a committed entry diverges silently, which is worse than a
// crash.
func (c *Channel) ApplyBatch(logs []*raft.Log) []any {
	if h := c.applyHook.Load(); h != nil && len(logs) > 0 {
		(*h)(logs[0].Index, logs[len(logs)-1].Index)
	}
	results := make([]any, len(logs))
	c.applyMu.Lock()
	defer c.applyMu.Unlock()
	if c.closed {
		// Nothing is written, so the entries are applied again when the
		// channel reopens; their proposers learn nothing certain.
		for i, l := range logs {
			if l.Type == raft.LogCommand {
				results[i] = &Result{Index: l.Index, Err: ErrClosed}
			}
		}
		return results
	}
	start := time.Now() // for the histogram only; never reaches the state

	c.ensureIndex()
	last := c.applied.Load()
	a := applier{
		c:     c,
		b:     c.db.NewIndexedBatch(),
		gen:   c.gen,
		keys:  c.keys,
		bytes: c.bytes,
	}
	defer func() { a.b.Close() }()
	n := 0
	for i, l := range logs {
		if l.Index <= last {
			continue
		}
		last = l.Index
		n++
		if l.Type == raft.LogConfiguration {
			// The configuration in force from here on, for the holders
			// check of file manifests (files.go).
			a.index = l.Index
			a.applyConfiguration(l)
			continue
		}
		if l.Type != raft.LogCommand {
			// Anything else raft may hand a BatchingFSM only advances
			// the applied index.
			continue
		}
		cmd, err := Decode(l.Data)
		if err != nil {
			panic(fmt.Sprintf("fsm: channel %d: committed log entry %d (term %d, %d bytes, type %#x) cannot be decoded; "+
				"refusing to skip it, as that would diverge this replica: %v; if another node wrote it with a newer binary "+
				"(this one supports command version %d), start this node with that binary (docs/operations.md \"Upgrades\")",
				c.gid, l.Index, l.Term, len(l.Data), l.Data[:min(len(l.Data), 1)], err, Version))
		}
		a.index = l.Index
		if _, ok := cmd.(*HashCheck); ok {
			// The state as of this index: commit what comes before, pin
			// it, and hash it off the apply path (hashcheck.go).
			a.commit(last)
			c.startHash(c.db.NewSnapshot(), c.gen, last)
			a.b.Close()
			a.b = c.db.NewIndexedBatch()
			results[i] = &Result{Index: l.Index}
			continue
		}
		if r := a.apply(cmd); r != nil { // no typed nil in the results
			results[i] = r
		}
	}
	if n == 0 {
		return results
	}
	if last > a.committed {
		a.commit(last)
	}
	c.keys, c.bytes = a.keys, a.bytes
	c.applied.Store(last)
	c.publishStats()
	c.w.afterApply(last, a.changed, a.deleted)

	c.s.metrics.appliedEntries.Add(float64(n))
	c.s.metrics.applyBatches.Inc()
	c.s.metrics.applyBatchSeconds.Observe(time.Since(start).Seconds())
	return results
}

// applier applies the commands of one batch. It reads through the indexed
// batch, so a command sees every earlier command of the same batch.
type applier struct {
	c           *Channel
	b           *pebble.Batch
	gen         uint64
	index       uint64 // the entry being applied
	keys, bytes uint64
	changed     [][]byte    // keys written or deleted, for the waiters
	deleted     []deleteRec // keys deleted, for the waiters
	committed   uint64      // the applied index of the last commit of this batch
}

// commit writes the meta with applied index last and commits the batch.
func (a *applier) commit(last uint64) {
	meta := channelMeta{gen: a.gen, applied: last, keys: a.keys, bytes: a.bytes}
	if err := a.b.Set(metaKey(a.c.gid), meta.encode(), nil); err != nil {
		panic(fmt.Sprintf("fsm: channel %d: write applied index %d: %v", a.c.gid, last, err))
	}
	if err := a.b.Commit(pebble.NoSync); err != nil {
		panic(fmt.Sprintf("fsm: channel %d: commit batch up to index %d: %v", a.c.gid, last, err))
	}
	a.committed = last
}

func (a *applier) apply(cmd Command) *Result {
	switch cmd := cmd.(type) {
	case *Put:
		return a.applyPut(cmd)
	case *Delete:
		return a.applyDelete(cmd)
	case *Txn:
		return a.applyTxn(cmd)
	case *Idempotent:
		return a.applyIdempotent(cmd)
	case *PutFile:
		return a.applyPutFile(cmd)
	case *DeleteFile:
		return a.applyDeleteFile(cmd)
	case *Unknown:
		// Written by a newer node and marked skippable: a no-op here.
		return nil
	}
	panic(fmt.Sprintf("fsm: channel %d: entry %d: no apply for command %T", a.c.gid, a.index, cmd))
}

// lookup returns what a write needs of key's entry: from the key index when
// the channel has one, else read through the batch.
func (a *applier) lookup(key []byte) (keyMeta, bool) {
	if ix := a.c.index; ix != nil {
		m, ok := ix.m[string(key)]
		return m, ok
	}
	e, found := a.get(key)
	return keyMeta{create: e.CreateIndex, modify: e.ModifyIndex, size: len(e.Value)}, found
}

// get reads key's whole entry (its value too) through the batch.
func (a *applier) get(key []byte) (Entry, bool) {
	e, found, err := getEntry(a.b, a.c.gid, a.gen, key)
	if err != nil {
		panic(fmt.Sprintf("fsm: channel %d: entry %d: %v", a.c.gid, a.index, err))
	}
	return e, found
}

// CAS semantics, as etcd's and Consul's: a CAS index is compared with the
// key's modify index, and a missing key has modify index 0. So cas=0 means
// "only if the key does not exist", and cas=N>0 "only if the key was last
// written at N". Put with a matching CAS writes; Delete with a matching CAS
// deletes, except that cas=0 on a missing key matches but finds nothing to
// delete: ErrKeyNotFound, as a Delete without CAS of a missing key. A
// mismatch is ErrCASMismatch and writes nothing.

func (a *applier) applyPut(p *Put) *Result {
	old, found := a.lookup(p.Key)
	if p.HasCAS && old.modify != p.CAS {
		return &Result{Index: a.index, Err: ErrCASMismatch}
	}
	a.put(p.Key, p.Value, old, found)
	return &Result{Index: a.index}
}

func (a *applier) applyDelete(d *Delete) *Result {
	old, found := a.lookup(d.Key)
	if d.HasCAS && old.modify != d.CAS {
		return &Result{Index: a.index, Err: ErrCASMismatch}
	}
	if !found {
		return &Result{Index: a.index, Err: ErrKeyNotFound}
	}
	a.delete(d.Key, old)
	return &Result{Index: a.index}
}

// applyTxn evaluates every compare against the state before the txn (which
// includes the earlier entries of this batch), then runs the success or the
// failure ops in order; a get sees the earlier ops of the same txn.
func (a *applier) applyTxn(t *Txn) *Result {
	res := &Result{Index: a.index, Succeeded: true}
	for _, cmp := range t.Compares {
		var e Entry
		if cmp.Target == TargetValue {
			e, _ = a.get(cmp.Key)
		} else {
			m, _ := a.lookup(cmp.Key)
			e = Entry{CreateIndex: m.create, ModifyIndex: m.modify}
		}
		if !compareHolds(cmp, e) {
			res.Succeeded = false
			break
		}
	}
	ops := t.Success
	if !res.Succeeded {
		ops = t.Failure
	}
	if len(ops) > 0 {
		res.Ops = make([]OpResult, len(ops))
	}
	for i, op := range ops {
		r := OpResult{Type: op.Type, Key: op.Key}
		switch op.Type {
		case OpPut:
			old, found := a.lookup(op.Key)
			a.put(op.Key, op.Value, old, found)
		case OpDelete:
			old, found := a.lookup(op.Key)
			r.Found = found
			if found {
				a.delete(op.Key, old)
			}
		case OpGet:
			e, found := a.get(op.Key)
			r.Found = found
			if found {
				r.Entry = e
			}
		}
		res.Ops[i] = r
	}
	return res
}

// compareHolds evaluates one compare; a missing key reads as an empty value
// with indexes 0 (e is the zero Entry).
func compareHolds(c Compare, e Entry) bool {
	var r int
	switch c.Target {
	case TargetValue:
		r = bytes.Compare(e.Value, c.Value)
	case TargetModifyIndex:
		r = cmp.Compare(e.ModifyIndex, c.Index)
	case TargetCreateIndex:
		r = cmp.Compare(e.CreateIndex, c.Index)
	}
	switch c.Result {
	case Equal:
		return r == 0
	case NotEqual:
		return r != 0
	case Greater:
		return r > 0
	case Less:
		return r < 0
	}
	return false // Decode refuses other results
}

// put writes key at the current index. A key written after a delete is a new
// key: its create index is this entry's.
//
// The key index is updated as the batch is written, before it commits: a
// commit that fails panics, so no index outlives a batch that did not land.
func (a *applier) put(key, value []byte, old keyMeta, found bool) {
	create := a.index
	if found {
		create = old.create
		a.bytes -= uint64(len(key) + old.size)
	} else {
		a.keys++
	}
	a.bytes += uint64(len(key) + len(value))
	if err := a.b.Set(dataKey(a.c.gid, a.gen, key), encodeValue(create, a.index, value), nil); err != nil {
		panic(fmt.Sprintf("fsm: channel %d: entry %d: put: %v", a.c.gid, a.index, err))
	}
	a.c.indexPut(key, keyMeta{create: create, modify: a.index, size: len(value)})
	a.changed = append(a.changed, key)
}

func (a *applier) delete(key []byte, old keyMeta) {
	a.keys--
	a.bytes -= uint64(len(key) + old.size)
	if err := a.b.Delete(dataKey(a.c.gid, a.gen, key), nil); err != nil {
		panic(fmt.Sprintf("fsm: channel %d: entry %d: delete: %v", a.c.gid, a.index, err))
	}
	a.c.indexDelete(key)
	a.changed = append(a.changed, key)
	a.deleted = append(a.deleted, deleteRec{key: string(key), index: a.index})
}
