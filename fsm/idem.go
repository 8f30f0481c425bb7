package fsm

import (
	"bytes"
	"container/heap"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/cockroachdb/pebble/v2"
)

// Idempotency records (docs/design.md "D15"). A write under an
// idempotency key leaves a record of its outcome in the channel's state, in
// the same batch as the write, so that a retry of it (a client that got
// 503 outcome_unknown, or lost its connection) answers that outcome rather
// than applying again. Records live in the channel's generation beside the
// data, under user keys that start with NUL, which no user key may
// (ValidateKey): so they move with the generation through Restore, are
// deleted with the channel, are hashed by hash checks and carried by
// snapshots, and every scan of user keys starts above them
// (userKeysStart).
//
//	0x00 'r' | bytes(scope) | key        → record (below)
//	0x00 'x' | BE64(expire) | bytes(scope) | key → empty: the expiry queue
//
//	record: version byte (1) | BE64 expire | hash (IdemHashBytes bytes) |
//	        index uvarint | outcome byte (0 applied, 1 cas mismatch,
//	        2 key not found) | succeeded byte (0, 1) | ops uvarint, then
//	        per op: type byte, found byte (0, 1), key bytes, and for a get
//	        that found its key: create uvarint, modify uvarint, value bytes
//
// A record of the write at index I expires at I+Window: from that index on
// it answers nothing (a retry that late is applied as a new write), and
// each later keyed write deletes up to idemPruneMax expired records, the
// oldest first, by walking the expiry queue in key order. Everything is a
// function of the log: no clock, no randomness, no map order.
//
// Like log entries, records outlive the binary that wrote them (they are
// in snapshots): change the layout only with a new record version.

const (
	idemRecordTag byte = 'r'
	idemExpiryTag byte = 'x'

	idemRecordVersion byte = 1
	// idemPruneMax bounds the expired records one keyed write deletes; more
	// than one, so that the queue shrinks while keyed writes keep coming.
	idemPruneMax = 4
	// maxIdemRecordBytes bounds a stored record: a txn's results carry the
	// values its gets read, at most MaxTxnOps of them.
	maxIdemRecordBytes = 1 + 8 + IdemHashBytes + 64 + MaxTxnOps*(MaxKeyBytes+MaxValueBytes+64)
	// maxIdemKeyBytes bounds the user key of a record or expiry entry.
	maxIdemKeyBytes = 2 + 8 + binary.MaxVarintLen64 + MaxIdemScopeBytes + MaxIdemKeyBytes
)

// userKeysStart is the smallest user key a client can write: every key
// below it (they start with NUL) is an idempotency record.
var userKeysStart = []byte{0x01}

func isIdemKey(user []byte) bool { return len(user) > 0 && user[0] == 0 }

func idemRecordKey(scope, key []byte) []byte {
	k := make([]byte, 0, 2+binary.MaxVarintLen64+len(scope)+len(key))
	k = append(k, 0, idemRecordTag)
	k = appendBytes(k, scope)
	return append(k, key...)
}

func idemExpiryKey(expire uint64, scope, key []byte) []byte {
	k := make([]byte, 0, 2+8+binary.MaxVarintLen64+len(scope)+len(key))
	k = append(k, 0, idemExpiryTag)
	k = binary.BigEndian.AppendUint64(k, expire)
	k = appendBytes(k, scope)
	return append(k, key...)
}

// idemRecord is a decoded record.
type idemRecord struct {
	expire uint64
	hash   [IdemHashBytes]byte
	result Result
}

var idemOutcomes = []error{nil, ErrCASMismatch, ErrKeyNotFound}

func encodeIdemRecord(expire uint64, hash [IdemHashBytes]byte, r *Result) []byte {
	b := make([]byte, 0, 1+8+IdemHashBytes+32)
	b = append(b, idemRecordVersion)
	b = binary.BigEndian.AppendUint64(b, expire)
	b = append(b, hash[:]...)
	b = binary.AppendUvarint(b, r.Index)
	outcome := byte(0)
	for i, e := range idemOutcomes {
		if e != nil && errors.Is(r.Err, e) {
			outcome = byte(i)
		}
	}
	b = append(b, outcome, flag(r.Succeeded))
	b = binary.AppendUvarint(b, uint64(len(r.Ops)))
	for _, op := range r.Ops {
		b = append(b, byte(op.Type), flag(op.Found))
		b = appendBytes(b, op.Key)
		if op.Type == OpGet && op.Found {
			b = binary.AppendUvarint(b, op.Entry.CreateIndex)
			b = binary.AppendUvarint(b, op.Entry.ModifyIndex)
			b = appendBytes(b, op.Entry.Value)
		}
	}
	return b
}

func flag(v bool) byte {
	if v {
		return 1
	}
	return 0
}

// decodeIdemRecord parses a record; the result does not alias v.
func decodeIdemRecord(v []byte) (idemRecord, error) {
	var rec idemRecord
	if len(v) < 1+8+IdemHashBytes || v[0] != idemRecordVersion {
		return rec, fmt.Errorf("fsm: idempotency record of %d bytes, or of a version other than %d", len(v), idemRecordVersion)
	}
	rec.expire = binary.BigEndian.Uint64(v[1:])
	copy(rec.hash[:], v[9:])
	d := decoder{buf: bytes.Clone(v[9+IdemHashBytes:])}
	rec.result.Index = d.uvarint()
	outcome := d.u8()
	if int(outcome) < len(idemOutcomes) {
		rec.result.Err = idemOutcomes[outcome]
	} else {
		d.fail(fmt.Errorf("unknown outcome %d", outcome))
	}
	rec.result.Succeeded = d.flag()
	if n := d.count(MaxTxnOps); n > 0 {
		rec.result.Ops = make([]OpResult, n)
	}
	for i := range rec.result.Ops {
		op := &rec.result.Ops[i]
		op.Type = OpType(d.u8())
		op.Found = d.flag()
		op.Key = d.bytes(MaxKeyBytes)
		if op.Type == OpGet && op.Found {
			op.Entry.Key = op.Key
			op.Entry.CreateIndex = d.uvarint()
			op.Entry.ModifyIndex = d.uvarint()
			op.Entry.Value = d.bytes(MaxValueBytes)
		}
	}
	if d.err == nil && len(d.buf) != 0 {
		d.fail(fmt.Errorf("%d trailing bytes", len(d.buf)))
	}
	if d.err != nil {
		return idemRecord{}, fmt.Errorf("fsm: idempotency record: %w", d.err)
	}
	return rec, nil
}

func (d *decoder) flag() bool {
	switch f := d.u8(); f {
	case 0:
		return false
	case 1:
		return true
	default:
		d.fail(errFlags)
		return false
	}
}

// applyIdempotent applies a keyed write (see Idempotent): the recorded
// outcome of a live record with the same hash, ErrIdempotencyKeyReused for
// another hash, else the write itself, recorded until a.index+p.Window.
func (a *applier) applyIdempotent(p *Idempotent) *Result {
	a.pruneIdem()
	q := a.c.idemQ
	user := idemRecordKey(p.Scope, p.Key)
	rk := a.dataKey(user)
	var v []byte
	var closer io.Closer
	err := pebble.ErrNotFound
	if _, ok := q.live[string(user)]; ok {
		// Read only a record the queue knows: a miss would read through
		// every level of the LSM to find nothing (a third of a keyed put).
		v, closer, err = a.b.Get(rk)
	}
	switch {
	case errors.Is(err, pebble.ErrNotFound):
	case err != nil:
		panic(fmt.Sprintf("fsm: channel %d: entry %d: read idempotency record: %v", a.c.gid, a.index, err))
	default:
		rec, derr := decodeIdemRecord(v)
		closer.Close()
		if derr != nil {
			panic(fmt.Sprintf("fsm: channel %d: entry %d: %v", a.c.gid, a.index, derr))
		}
		if rec.expire > a.index {
			if rec.hash != p.Hash {
				return &Result{Index: a.index, Err: ErrIdempotencyKeyReused}
			}
			res := rec.result
			return &res
		}
		// Expired but not pruned yet: the write is new; its record
		// replaces this one, whose queue entry goes now.
		ek := idemExpiryKey(rec.expire, p.Scope, p.Key)
		a.del(a.dataKey(ek))
		q.dead[string(ek)] = struct{}{}
	}
	res := a.apply(p.Cmd)
	expire := a.index + p.Window
	ek := idemExpiryKey(expire, p.Scope, p.Key)
	a.set(rk, encodeIdemRecord(expire, p.Hash, res))
	a.set(a.dataKey(ek), nil)
	heap.Push(&q.h, ek)
	q.live[string(user)] = struct{}{}
	return res
}

// pruneIdem deletes up to idemPruneMax records that expired at or before
// the current index, in the order of the expiry queue.
func (a *applier) pruneIdem() {
	q := a.idemQueue()
	for n := 0; n < idemPruneMax && len(q.h) > 0; {
		top := q.h[0]
		if binary.BigEndian.Uint64(top[2:]) > a.index {
			return
		}
		heap.Pop(&q.h)
		if _, ok := q.dead[string(top)]; ok {
			delete(q.dead, string(top))
			continue
		}
		n++
		user := recordOfExpiry(top)
		delete(q.live, string(user))
		a.del(a.dataKey(user))
		a.del(a.dataKey(top))
	}
}

// idemQueue mirrors the state's expiry queue in memory, so that pruning
// reads no pebble iterator on every keyed write: one cost 45 % of a keyed
// put, and a scan from the queue's start stepped over every tombstone its
// deletes left until a compaction (4 ms per keyed put after 20,000 of
// them). Like the key index it is a cache of the state: built by one scan
// on the first keyed write after the channel opens or restores, updated
// as the apply path writes the queue, dropped by Restore and Close; it
// pops entries in the queue's key order, so what a write prunes is what a
// scan of the state would find. It also knows which records exist, so a
// write under a new key reads nothing. About 150 bytes per live record.
type idemQueue struct {
	h idemHeap
	// dead holds entries deleted from the state (a record that expired
	// and was replaced before it was pruned) but still in h.
	dead map[string]struct{}
	// live holds the user key of every record in the state.
	live map[string]struct{}
}

// recordOfExpiry returns the record key of an expiry queue key: scope and
// key follow 0x00 'x' BE64(expire) in one, 0x00 'r' in the other.
func recordOfExpiry(expiry []byte) []byte {
	return append([]byte{0, idemRecordTag}, expiry[2+8:]...)
}

// idemHeap is a min-heap of expiry queue user keys in byte order, which
// is (expire, scope, key) order.
type idemHeap [][]byte

func (h idemHeap) Len() int           { return len(h) }
func (h idemHeap) Less(i, j int) bool { return bytes.Compare(h[i], h[j]) < 0 }
func (h idemHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *idemHeap) Push(x any)        { *h = append(*h, x.([]byte)) }
func (h *idemHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

func (a *applier) idemQueue() *idemQueue {
	if q := a.c.idemQ; q != nil {
		return q
	}
	q := &idemQueue{dead: map[string]struct{}{}, live: map[string]struct{}{}}
	lo := a.dataKey([]byte{0, idemExpiryTag})
	it, err := a.b.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: a.dataKey([]byte{0, idemExpiryTag + 1})})
	if err != nil {
		panic(fmt.Sprintf("fsm: channel %d: entry %d: scan idempotency records: %v", a.c.gid, a.index, err))
	}
	for valid := it.First(); valid; valid = it.Next() {
		ek := bytes.Clone(it.Key()[genPrefixLen:])
		q.h = append(q.h, ek) // in order: a heap already
		q.live[string(recordOfExpiry(ek))] = struct{}{}
	}
	if err := it.Close(); err != nil {
		panic(fmt.Sprintf("fsm: channel %d: entry %d: scan idempotency records: %v", a.c.gid, a.index, err))
	}
	a.c.idemQ = q
	return q
}

func (a *applier) dataKey(user []byte) []byte { return dataKey(a.c.gid, a.gen, user) }

func (a *applier) set(k, v []byte) {
	if err := a.b.Set(k, v, nil); err != nil {
		panic(fmt.Sprintf("fsm: channel %d: entry %d: write idempotency record: %v", a.c.gid, a.index, err))
	}
}

func (a *applier) del(k []byte) {
	if err := a.b.Delete(k, nil); err != nil {
		panic(fmt.Sprintf("fsm: channel %d: entry %d: delete idempotency record: %v", a.c.gid, a.index, err))
	}
}

// validIdemRecord checks a record as a snapshot carries it: its user key
// (NUL-prefixed) and its value.
func validIdemRecord(user, value []byte) error {
	if len(user) < 2 {
		return errors.New("idempotency key too short")
	}
	switch user[1] {
	case idemRecordTag:
		_, err := decodeIdemRecord(value)
		return err
	case idemExpiryTag:
		if len(user) < 2+8 || len(value) != 0 {
			return errors.New("malformed idempotency queue entry")
		}
		return nil
	}
	return fmt.Errorf("unknown idempotency record tag 0x%02x", user[1])
}
