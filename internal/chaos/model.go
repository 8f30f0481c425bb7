package chaos

import (
	"fmt"
	"hash/fnv"
	"sort"

	"github.com/anishathalye/porcupine"
)

// The model: one channel's KV API as a sequential specification, one
// partition per key (operations on different keys commute, so a history is
// linearizable iff each key's sub-history is).
//
// Per key the state is (exists, value, index, floor):
//
//   - value is the value last written; every write in a history writes a
//     value no other write uses (client id + sequence number), so a value
//     names the one log entry that wrote it.
//   - index is that entry's Raft index, i.e. the key's modify index, when
//     the history tells it: from the write's own 2xx answer, or from any read
//     that returned the value (X-Shardnet-Index). 0 means unknown: the write's
//     outcome was unknown and no read ever saw its value.
//   - floor is the highest log index of any write to the key linearized so
//     far whose index is known (successful or refused: a CAS mismatch and a
//     DELETE of a missing key are decided in the log and report their
//     entry's index too). The log order of a key's writes is their
//     linearization order, so a write with a known index must be above it.
//
// Why CAS is modelled on the value and not on a counter: modify indexes are
// Raft indexes, which also advance for other keys, refused commands, no-ops
// and configuration entries, so no per-key model can predict them. Instead,
// `PUT ?cas=N` succeeds iff the key exists and its current value is the one
// whose write got index N (or, for N = 0, iff the key is absent). That is
// sound because each index belongs to at most one committed entry, so at
// most one value has index N. When the current value's index is unknown
// (0), nobody observed it, so no client can hold it as N: every N a client
// sends came from an observation of some value, and that value is a
// different one, hence a different entry and index — the CAS must fail.
// (A client never uses the applied index of a 404 as N.)
//
// Unknown outcomes (5xx other than the retryable no_leader/unavailable, a
// timeout, a connection dropped after sending): the operation is recorded
// with a return time of +inf, so it may take effect at any point after its
// call, including never (linearized after everything else); the model then
// applies it whenever its precondition holds. A write refused with a 4xx (or
// a retryable 503, which the API contract says was never proposed) is not in
// the history at all: its value must then never be read, which Check
// verifies before porcupine runs.
//
// A channel's files are checked with the same model (files.go): a path is
// a key, a version of a file a value, a conditional upload an OpPutIf.

// OpKind names an operation of the model.
type OpKind uint8

// The operations the workload issues.
const (
	OpGet OpKind = iota
	OpPut
	OpCASPut
	OpDelete
	// OpTxn is a transaction on one key: if its value is Expect (or, with
	// ExpectAbsent, if it does not exist: create_index = 0), put Value and
	// get the key; otherwise get the key.
	OpTxn
	// OpPutIf is a conditional put that answers only whether it held (a
	// file upload with If-Match: the value Expect, or If-None-Match: *,
	// ExpectAbsent): StatusFailed is its 412.
	OpPutIf
)

func (k OpKind) String() string {
	switch k {
	case OpGet:
		return "get"
	case OpPut:
		return "put"
	case OpCASPut:
		return "cas"
	case OpDelete:
		return "del"
	case OpTxn:
		return "txn"
	case OpPutIf:
		return "putif"
	}
	return fmt.Sprintf("op(%d)", uint8(k))
}

// Status is how an operation ended, as far as the client knows.
type Status uint8

// Statuses of recorded operations.
const (
	// StatusOK: 2xx (a get: 200 with a value or 404 key_not_found).
	StatusOK Status = iota
	// StatusFailed: a write the channel decided against: 409 cas_mismatch
	// for a CAS put, 404 key_not_found for a delete.
	StatusFailed
	// StatusUnknown: a write that may or may not have been applied.
	StatusUnknown
)

func (s Status) String() string {
	switch s {
	case StatusOK:
		return "ok"
	case StatusFailed:
		return "failed"
	case StatusUnknown:
		return "unknown"
	}
	return fmt.Sprintf("status(%d)", uint8(s))
}

// Input is what a client asked.
type Input struct {
	Kind  OpKind
	Key   string
	Value string // put, cas, txn: the (unique) value written
	CAS   uint64 // cas: the expected modify index; 0 = must not exist
	// txn, putif: the compare: the key's value is Expect, or, with
	// ExpectAbsent, the key does not exist. del: with Expect set, only
	// that value is deleted (a file's If-Match).
	Expect       string
	ExpectAbsent bool
	// Index is the log index of the entry this write became, when known:
	// from its own answer (OK, or Failed with an index), or, for a put or
	// cas whose value some read returned, from that read. 0 = unknown.
	// Check fills it in from the whole history before checking.
	Index uint64
}

// Output is what the client was told.
type Output struct {
	Status Status
	Found  bool   // get, txn: the key existed (a txn: as its get op saw it)
	Value  string // get, txn: the value read
	Index  uint64 // get: the modify index read; writes: the entry's index (0 if none)
	// txn: whether the compare held, and the modify index its get op read.
	Succeeded bool
	ReadIndex uint64
	// del with Expect: a StatusFailed that found another value (412), not
	// an absent key (404).
	Precondition bool
}

// kvState is one key's state; comparable, so porcupine's default == works.
type kvState struct {
	Exists bool
	Value  string
	Index  uint64 // modify index of Value; 0 = unknown (see above)
	Floor  uint64 // highest known log index of the writes linearized so far
}

// Model returns the porcupine model of a channel's KV API.
func Model() porcupine.Model {
	return porcupine.Model{
		Partition: partitionByKey,
		Init:      func() interface{} { return kvState{} },
		Step: func(state, input, output interface{}) (bool, interface{}) {
			return step(state.(kvState), input.(Input), output.(Output))
		},
		Hash: func(state interface{}) uint64 {
			s := state.(kvState)
			h := fnv.New64a()
			fmt.Fprintf(h, "%t|%s|%d|%d", s.Exists, s.Value, s.Index, s.Floor)
			return h.Sum64()
		},
		DescribeOperation: func(input, output interface{}) string {
			return describeOp(input.(Input), output.(Output))
		},
		DescribeState: func(state interface{}) string {
			s := state.(kvState)
			if !s.Exists {
				return fmt.Sprintf("absent (floor %d)", s.Floor)
			}
			return fmt.Sprintf("%s@%s (floor %d)", s.Value, idx(s.Index), s.Floor)
		},
		DescribeOperationMetadata: func(info interface{}) string {
			if info == nil {
				return ""
			}
			return fmt.Sprint(info)
		},
	}
}

func partitionByKey(history []porcupine.Operation) [][]porcupine.Operation {
	byKey := map[string][]porcupine.Operation{}
	for _, op := range history {
		k := op.Input.(Input).Key
		byKey[k] = append(byKey[k], op)
	}
	keys := make([]string, 0, len(byKey))
	for k := range byKey {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([][]porcupine.Operation, 0, len(keys))
	for _, k := range keys {
		out = append(out, byKey[k])
	}
	return out
}

// step is the sequential specification of one key.
func step(s kvState, in Input, out Output) (bool, kvState) {
	// A write whose entry index is known must come after every known write
	// already linearized: the log orders a key's writes.
	if in.Kind != OpGet && in.Index != 0 {
		if in.Index <= s.Floor {
			return false, s
		}
	}
	next := s
	if in.Kind != OpGet && in.Index != 0 {
		next.Floor = in.Index
	}
	switch in.Kind {
	case OpGet:
		if !out.Found {
			return !s.Exists, s
		}
		return s.Exists && s.Value == out.Value && (s.Index == 0 || s.Index == out.Index), s

	case OpPut:
		// OK or Unknown: unconditional, it takes effect where linearized.
		if out.Status == StatusFailed {
			return false, s
		}
		next.Exists, next.Value, next.Index = true, in.Value, in.Index
		return true, next

	case OpCASPut:
		holds := (in.CAS == 0 && !s.Exists) || (in.CAS != 0 && s.Exists && s.Index == in.CAS)
		switch out.Status {
		case StatusOK:
			if !holds {
				return false, s
			}
		case StatusFailed:
			return !holds, next
		case StatusUnknown:
			if !holds {
				return true, next
			}
		}
		next.Exists, next.Value, next.Index = true, in.Value, in.Index
		return true, next

	case OpTxn:
		holds := (in.ExpectAbsent && !s.Exists) || (!in.ExpectAbsent && s.Exists && s.Value == in.Expect)
		switch {
		case out.Status == StatusUnknown:
			if !holds {
				return true, next
			}
		case out.Succeeded:
			// The get after the put sees the new value at the txn's index.
			if !holds || !out.Found || out.Value != in.Value || (in.Index != 0 && out.ReadIndex != in.Index) {
				return false, s
			}
		default:
			// The compare failed and the failure get saw the state as is.
			if holds || out.Found != s.Exists {
				return false, s
			}
			if s.Exists && (out.Value != s.Value || (s.Index != 0 && out.ReadIndex != s.Index)) {
				return false, s
			}
			return true, next
		}
		next.Exists, next.Value, next.Index = true, in.Value, in.Index
		return true, next

	case OpPutIf:
		holds := (in.ExpectAbsent && !s.Exists) || (!in.ExpectAbsent && s.Exists && s.Value == in.Expect)
		switch out.Status {
		case StatusOK:
			if !holds {
				return false, s
			}
		case StatusFailed:
			return !holds, next
		case StatusUnknown:
			if !holds {
				return true, next
			}
		}
		next.Exists, next.Value, next.Index = true, in.Value, in.Index
		return true, next

	case OpDelete:
		holds := s.Exists && (in.Expect == "" || s.Value == in.Expect)
		switch out.Status {
		case StatusOK:
			if !holds {
				return false, s
			}
		case StatusFailed:
			if out.Precondition {
				return s.Exists && !holds, next
			}
			return !s.Exists, next
		case StatusUnknown:
			if !holds {
				return true, next
			}
		}
		next.Exists, next.Value, next.Index = false, "", 0
		return true, next
	}
	return false, s
}

func idx(i uint64) string {
	if i == 0 {
		return "?"
	}
	return fmt.Sprint(i)
}

func describeOp(in Input, out Output) string {
	res := out.Status.String()
	switch {
	case out.Status == StatusUnknown:
		res = "unknown"
		if in.Index != 0 {
			res += " (applied @" + fmt.Sprint(in.Index) + ")"
		}
	case in.Kind == OpGet && out.Found:
		res = fmt.Sprintf("%s@%d", out.Value, out.Index)
	case in.Kind == OpGet:
		res = "absent"
	case in.Kind == OpCASPut && out.Status == StatusFailed:
		res = "mismatch@" + idx(out.Index)
	case in.Kind == OpTxn && out.Succeeded:
		res = "put@" + idx(out.Index)
	case in.Kind == OpTxn && out.Found:
		res = fmt.Sprintf("failed, saw %s@%d", out.Value, out.ReadIndex)
	case in.Kind == OpTxn:
		res = "failed, saw absent"
	case in.Kind == OpDelete && out.Status == StatusFailed && out.Precondition:
		res = "precondition failed@" + idx(out.Index)
	case in.Kind == OpDelete && out.Status == StatusFailed:
		res = "not found@" + idx(out.Index)
	case in.Kind == OpPutIf && out.Status == StatusFailed:
		res = "precondition failed"
	case out.Status == StatusOK:
		res = "ok@" + idx(out.Index)
	}
	switch in.Kind {
	case OpGet:
		return fmt.Sprintf("get %s → %s", in.Key, res)
	case OpPut:
		return fmt.Sprintf("put %s=%s → %s", in.Key, in.Value, res)
	case OpCASPut:
		return fmt.Sprintf("cas %s=%s if @%d → %s", in.Key, in.Value, in.CAS, res)
	case OpDelete:
		if in.Expect != "" {
			return fmt.Sprintf("del %s if =%s → %s", in.Key, in.Expect, res)
		}
		return fmt.Sprintf("del %s → %s", in.Key, res)
	case OpPutIf:
		cond := "=" + in.Expect
		if in.ExpectAbsent {
			cond = " absent"
		}
		return fmt.Sprintf("put %s=%s if%s → %s", in.Key, in.Value, cond, res)
	case OpTxn:
		cond := "=" + in.Expect
		if in.ExpectAbsent {
			cond = " absent"
		}
		return fmt.Sprintf("txn if %s%s put %s → %s", in.Key, cond, in.Value, res)
	}
	return fmt.Sprintf("%v → %v", in, out)
}
