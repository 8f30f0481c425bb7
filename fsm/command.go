package fsm

import (
	"errors"
	"unicode/utf8"
)

// Limits every channel command obeys. The server checks them first so that a
// client gets a clear 4xx; Decode checks them again because a log entry is the
// last line of defence against a write that would be refused on replay.
const (
	MaxKeyBytes   = 1024    // a key is at most 1 KiB of UTF-8 without NUL
	MaxValueBytes = 1 << 20 // a value is at most 1 MiB
	MaxTxnOps     = 128     // compares + success ops + failure ops
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
)

// Command is one decoded channel command: *Put, *Delete, *Txn or *HashCheck (or
// *Unknown, a skippable entry of a newer type, see codec.go).
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

func (*Put) isCommand()       {}
func (*Delete) isCommand()    {}
func (*Txn) isCommand()       {}
func (*HashCheck) isCommand() {}

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
