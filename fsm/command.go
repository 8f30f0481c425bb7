package fsm

import (
	"errors"
	"fmt"
	"unicode/utf8"
)

// Limits every channel command obeys. The server checks them first so that a
// client gets a clear 4xx; Decode checks them again because a log entry is the
// last line of defence against a write that would be refused on replay.
const (
	MaxKeyBytes   = 1024    // a key is at most 1 KiB of UTF-8 without NUL
	MaxValueBytes = 1 << 20 // a value is at most 1 MiB
	MaxTxnOps     = 128     // compares + success ops + failure ops

	// Idempotency keys (idem.go): a key is 1..MaxIdemKeyBytes of visible
	// ASCII, a scope at most MaxIdemScopeBytes, a record lives 1 to
	// MaxIdemWindow entries (DefaultIdemWindow unless the leader says
	// otherwise).
	MaxIdemKeyBytes   = 255
	MaxIdemScopeBytes = 64
	IdemHashBytes     = 32
	DefaultIdemWindow = 100_000
	MaxIdemWindow     = 1 << 32
)

// Sentinel errors. Business outcomes (CAS mismatch, not found) travel in
// Result.Err; they are decided deterministically inside Apply.
var (
	ErrCASMismatch = errors.New("fsm: cas mismatch")
	ErrKeyNotFound = errors.New("fsm: key not found")
	ErrInvalidKey  = errors.New("fsm: invalid key")
	ErrKeyTooLarge = errors.New("fsm: key too large")
	ErrValueLarge  = errors.New("fsm: value too large")
	ErrTxnTooLarge = errors.New("fsm: transaction too large")
	ErrDecode      = errors.New("fsm: cannot decode command")
	// ErrIdempotencyKeyReused is the outcome of a keyed write whose key was
	// used, inside the window, by a write with another request hash:
	// nothing was applied (idem.go).
	ErrIdempotencyKeyReused = errors.New("fsm: idempotency key reused with another request")
)

// Command is one decoded channel command: *Put, *Delete, *Txn, *Idempotent,
// *PutFile, *DeleteFile or *HashCheck (or *Unknown, a skippable entry of a newer type, see
// codec.go).
type Command interface{ isCommand() }

// Put writes Value under Key. With HasCAS the write only happens when the
// key's modify index equals CAS (0: the key must not exist).
type Put struct {
	Key, Value []byte
	HasCAS     bool
	CAS        uint64
}

// Delete removes Key, with the same CAS rule as Put.
type Delete struct {
	Key    []byte
	HasCAS bool
	CAS    uint64
}

// Txn evaluates every compare against the state before the transaction; if
// all hold it runs Success, otherwise Failure. Either way it commits
// atomically in the entry's batch.
type Txn struct {
	Compares []Compare
	Success  []Op
	Failure  []Op
}

// HashCheck changes nothing: applying it at index I makes the replica hash
// its state as of I (hashcheck.go), so that the replicas of a group can
// compare the same state.
type HashCheck struct{}

// Idempotent is a write (Cmd: a *Put, *Delete or *Txn) sent under a
// client's idempotency key (docs/design.md "D15"). Applying it at index I
// looks up the record of (Scope, Key) in the channel's state: a live record
// with the same Hash answers the recorded outcome and applies nothing; one
// with another Hash answers ErrIdempotencyKeyReused and applies nothing;
// otherwise Cmd is applied and its outcome recorded, in the same batch,
// until index I+Window (idem.go).
type Idempotent struct {
	// Scope is who the key belongs to, computed by the server (the bearer
	// token's hash today); the channel is implicit.
	Scope []byte
	// Key is the client's Idempotency-Key (ValidateIdemKey).
	Key []byte
	// Hash identifies the request's effect (the server hashes the
	// channel and the encoded Cmd): a retry must carry the same.
	Hash [IdemHashBytes]byte
	// Window is how many log entries after this one the record answers
	// retries (1..MaxIdemWindow); the leader chooses it, so replicas
	// never disagree on it.
	Window uint64
	Cmd    Command
}

func (*Put) isCommand()        {}
func (*Delete) isCommand()     {}
func (*Txn) isCommand()        {}
func (*HashCheck) isCommand()  {}
func (*Idempotent) isCommand() {}

// CompareTarget is what a Compare looks at.
type CompareTarget uint8

const (
	TargetValue       CompareTarget = 1 // the value bytes (lexicographic)
	TargetModifyIndex CompareTarget = 2 // the key's modify index, 0 when absent
	TargetCreateIndex CompareTarget = 3 // the key's create index, 0 when absent
)

// CompareResult is the relation a Compare requires.
type CompareResult uint8

const (
	Equal    CompareResult = 1
	NotEqual CompareResult = 2
	Greater  CompareResult = 3
	Less     CompareResult = 4
)

// Compare holds when (target of Key) Result (Value or Index). A missing key
// has an empty value and indexes 0, as in etcd.
type Compare struct {
	Key    []byte
	Target CompareTarget
	Result CompareResult
	Value  []byte // for TargetValue
	Index  uint64 // for the index targets
}

// OpType names a transaction operation.
type OpType uint8

const (
	OpPut    OpType = 1
	OpDelete OpType = 2
	OpGet    OpType = 3
)

// Op is one operation inside a Txn.
type Op struct {
	Type  OpType
	Key   []byte
	Value []byte // OpPut only
}

// Entry is a key as stored: its value and the Raft indexes of the entries
// that created it and last modified it.
type Entry struct {
	Key         []byte
	Value       []byte
	CreateIndex uint64
	ModifyIndex uint64
}

// Result is what Apply returns for one command entry.
type Result struct {
	Index     uint64     // the Raft index of the entry
	Err       error      // ErrCASMismatch, ErrKeyNotFound, nil; ErrClosed: not applied here, outcome unknown
	Succeeded bool       // Txn: whether the compares held
	Ops       []OpResult // Txn: one per executed op
}

// OpResult is the outcome of one Txn op.
type OpResult struct {
	Type  OpType
	Key   []byte
	Found bool  // OpGet, OpDelete: whether the key existed
	Entry Entry // OpGet: the entry read (inside the txn, after earlier ops)
}

// ValidateKey reports whether key may be stored.
func ValidateKey(key []byte) error {
	if len(key) == 0 {
		return ErrInvalidKey
	}
	if len(key) > MaxKeyBytes {
		return ErrKeyTooLarge
	}
	if !utf8.Valid(key) {
		return ErrInvalidKey
	}
	for _, b := range key {
		if b == 0 {
			return ErrInvalidKey
		}
	}
	return nil
}

// ValidateIdemKey reports whether key may be an idempotency key: 1 to
// MaxIdemKeyBytes bytes of visible ASCII (0x21..0x7E), so that it travels
// in an HTTP header unchanged.
func ValidateIdemKey(key []byte) error {
	if len(key) == 0 || len(key) > MaxIdemKeyBytes {
		return fmt.Errorf("%w: an idempotency key is 1 to %d bytes, not %d", ErrInvalidIdemKey, MaxIdemKeyBytes, len(key))
	}
	for i, b := range key {
		if b < 0x21 || b > 0x7e {
			return fmt.Errorf("%w: byte %d (0x%02x) is not visible ASCII", ErrInvalidIdemKey, i, b)
		}
	}
	return nil
}

// ErrInvalidIdemKey is a malformed idempotency key.
var ErrInvalidIdemKey = errors.New("fsm: invalid idempotency key")
