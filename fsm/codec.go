package fsm

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// This file owns every encoding of a command that enters a Raft log.
//
// WARNING: encoded entries live forever. They are stored in the Raft logs and
// replayed by every replica, including replicas that run a newer binary years
// from now. Never change the meaning of an existing type byte or of a field
// of its body; add a new type byte instead, and keep decoding the old one.
//
// An entry is one type byte followed by a body:
//
//	+------+----------------------------------+
//	| type | body (layout depends on type)    |
//	+------+----------------------------------+
//
//	type byte:  bit 7 (0x80)  skippable: an older node that does not know the
//	                          type applies the entry as a no-op (Consul/Nomad
//	                          "ignore unknown type" flag). Without the bit an
//	                          unknown type is a decode error, and a committed
//	                          entry that fails to decode halts the node. Only
//	                          a command that changes no state may have the
//	                          bit; every new type also gets a version
//	                          (version.go) and is not proposed before the
//	                          cluster version allows it.
//	            bits 0-6      the command type:
//	                          0x01..0x3F channel commands (this file),
//	                          0x40..0x7F reserved for the meta group commands,
//	                          0x00 is never valid.
//
// Integers are unsigned varints (encoding/binary.PutUvarint) in their
// shortest form; Decode refuses a longer form so that every command has
// exactly one encoding (Encode(Decode(b)) == b). "bytes" is a uvarint length
// followed by that many bytes.
//
//	Put    (0x01): flags byte (bit 0: has CAS; other bits 0)
//	               [cas uvarint, when has CAS]
//	               key bytes, value bytes
//	Delete (0x02): flags byte (bit 0: has CAS; other bits 0)
//	               [cas uvarint, when has CAS]
//	               key bytes
//	Txn    (0x03): compares: uvarint n, then n of
//	                   target byte (1 value, 2 modify index, 3 create index)
//	                   result byte (1 =, 2 !=, 3 >, 4 <)
//	                   key bytes
//	                   value bytes (target value) | index uvarint (index targets)
//	               success ops: uvarint n, then n of
//	                   op byte (1 put, 2 delete, 3 get), key bytes,
//	                   [value bytes, put only]
//	               failure ops: same layout as success ops
//	Idempotent (0x05): scope bytes, key bytes,
//	               hash (IdemHashBytes raw bytes), window uvarint,
//	               then the wrapped write as a whole entry: its type byte
//	               (0x01, 0x02 or 0x03, never 0x05) and its body.
//	               Version 3: never proposed before every node applies it.
//	PutFile (0x06): cond byte (0 none, 1 absent, 2 match)
//	               [sha256 to match (32 bytes), when cond is 2]
//	               quota uvarint, path bytes,
//	               then the manifest as stored (files.go), with create and
//	               modify index 0. Version 4.
//	DeleteFile (0x07): cond byte (0 none, 2 match)
//	               [sha256 to match (32 bytes), when cond is 2], path bytes.
//	               Version 4.
//	HashCheck (0x84, skippable): empty body. Every replica hashes its state
//	               as of this entry's index (hashcheck.go); the state does
//	               not change. Skippable, so a node of an older version
//	               applies it as a no-op during a rolling upgrade.
//
// Nothing may follow the body.

// Type bytes of the channel commands. Once released, a value is never reused.
const (
	typePut    byte = 0x01
	typeDelete byte = 0x02
	typeTxn    byte = 0x03
	// typeIdempotent wraps a write with an idempotency key (version 3).
	typeIdempotent byte = 0x05
	// typeHashCheck has the skippable bit: older nodes ignore it.
	typeHashCheck byte = 0x04 | TypeSkippable

	// TypeSkippable marks an entry that a node which does not know its type
	// may apply as a no-op.
	TypeSkippable byte = 0x80

	// FirstMetaType and LastMetaType bound the type bytes reserved for the
	// meta group's commands; channel commands use 0x01..0x3F.
	FirstMetaType byte = 0x40
	LastMetaType  byte = 0x7F
)

const flagHasCAS byte = 0x01

// MaxTxnBytes bounds the keys and values of one Txn together, so that a single
// log entry stays a reasonable size for replication (128 ops of 1 MiB would
// be a 128 MiB entry).
const MaxTxnBytes = 4 << 20

// ErrInvalidCommand is returned by Encode for a command that breaks a rule
// other than the key and size limits (nil command, unknown op or compare
// kind, a field set that the command's kind does not use).
var ErrInvalidCommand = errors.New("fsm: invalid command")

// Unknown is what Decode returns for an entry whose type this node does not
// know but whose writer marked it skippable (TypeSkippable). Apply treats it
// as a no-op with a nil result.
type Unknown struct {
	Type byte
}

func (*Unknown) isCommand() {}

// Encode returns the log entry bytes of a channel command. It checks the
// same rules Decode checks, so that nothing enters the log that a replica
// would refuse on replay.
func Encode(c Command) ([]byte, error) {
	if err := validate(c); err != nil {
		return nil, err
	}
	if p, ok := c.(*Idempotent); ok {
		b := make([]byte, 0, 64)
		b = append(b, typeIdempotent)
		b = appendBytes(b, p.Scope)
		b = appendBytes(b, p.Key)
		b = append(b, p.Hash[:]...)
		b = binary.AppendUvarint(b, p.Window)
		inner, err := encodeWrite(p.Cmd)
		if err != nil {
			return nil, err
		}
		return append(b, inner...), nil
	}
	return encodeWrite(c)
}

// encodeWrite encodes a validated command other than Idempotent.
func encodeWrite(c Command) ([]byte, error) {
	switch c := c.(type) {
	case *Put:
		b := make([]byte, 0, 1+1+binary.MaxVarintLen64*3+len(c.Key)+len(c.Value))
		b = append(b, typePut, casFlags(c.HasCAS))
		if c.HasCAS {
			b = binary.AppendUvarint(b, c.CAS)
		}
		b = appendBytes(b, c.Key)
		b = appendBytes(b, c.Value)
		return b, nil
	case *Delete:
		b := make([]byte, 0, 1+1+binary.MaxVarintLen64*2+len(c.Key))
		b = append(b, typeDelete, casFlags(c.HasCAS))
		if c.HasCAS {
			b = binary.AppendUvarint(b, c.CAS)
		}
		b = appendBytes(b, c.Key)
		return b, nil
	case *Txn:
		b := make([]byte, 0, 64)
		b = append(b, typeTxn)
		b = binary.AppendUvarint(b, uint64(len(c.Compares)))
		for _, cmp := range c.Compares {
			b = append(b, byte(cmp.Target), byte(cmp.Result))
			b = appendBytes(b, cmp.Key)
			if cmp.Target == TargetValue {
				b = appendBytes(b, cmp.Value)
			} else {
				b = binary.AppendUvarint(b, cmp.Index)
			}
		}
		b = appendOps(b, c.Success)
		b = appendOps(b, c.Failure)
		return b, nil
	case *HashCheck:
		return []byte{typeHashCheck}, nil
	case *PutFile, *DeleteFile:
		return encodeFileCommand(c), nil
	}
	// validate refused every other type already.
	return nil, fmt.Errorf("%w: unexpected command type %T", ErrInvalidCommand, c)
}

func casFlags(has bool) byte {
	if has {
		return flagHasCAS
	}
	return 0
}

func appendBytes(b, p []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(p)))
	return append(b, p...)
}

func appendOps(b []byte, ops []Op) []byte {
	b = binary.AppendUvarint(b, uint64(len(ops)))
	for _, op := range ops {
		b = append(b, byte(op.Type))
		b = appendBytes(b, op.Key)
		if op.Type == OpPut {
			b = appendBytes(b, op.Value)
		}
	}
	return b
}

// validate applies the rules shared by Encode and Decode.
func validate(c Command) error {
	switch c := c.(type) {
	case *Put:
		if c == nil {
			return fmt.Errorf("%w: nil put", ErrInvalidCommand)
		}
		if err := ValidateKey(c.Key); err != nil {
			return fmt.Errorf("put: %w", err)
		}
		if len(c.Value) > MaxValueBytes {
			return fmt.Errorf("put: %w", ErrValueLarge)
		}
		if !c.HasCAS && c.CAS != 0 {
			return fmt.Errorf("%w: put has a cas index but HasCAS is false", ErrInvalidCommand)
		}
	case *Delete:
		if c == nil {
			return fmt.Errorf("%w: nil delete", ErrInvalidCommand)
		}
		if err := ValidateKey(c.Key); err != nil {
			return fmt.Errorf("delete: %w", err)
		}
		if !c.HasCAS && c.CAS != 0 {
			return fmt.Errorf("%w: delete has a cas index but HasCAS is false", ErrInvalidCommand)
		}
	case *Txn:
		if c == nil {
			return fmt.Errorf("%w: nil txn", ErrInvalidCommand)
		}
		if n := len(c.Compares) + len(c.Success) + len(c.Failure); n > MaxTxnOps {
			return fmt.Errorf("txn of %d ops: %w", n, ErrTxnTooLarge)
		}
		total := 0
		for i, cmp := range c.Compares {
			if err := ValidateKey(cmp.Key); err != nil {
				return fmt.Errorf("txn compare %d: %w", i, err)
			}
			switch cmp.Target {
			case TargetValue:
				if len(cmp.Value) > MaxValueBytes {
					return fmt.Errorf("txn compare %d: %w", i, ErrValueLarge)
				}
				if cmp.Index != 0 {
					return fmt.Errorf("%w: txn compare %d: value compare with an index", ErrInvalidCommand, i)
				}
			case TargetModifyIndex, TargetCreateIndex:
				if len(cmp.Value) != 0 {
					return fmt.Errorf("%w: txn compare %d: index compare with a value", ErrInvalidCommand, i)
				}
			default:
				return fmt.Errorf("%w: txn compare %d: unknown target %d", ErrInvalidCommand, i, cmp.Target)
			}
			switch cmp.Result {
			case Equal, NotEqual, Greater, Less:
			default:
				return fmt.Errorf("%w: txn compare %d: unknown result %d", ErrInvalidCommand, i, cmp.Result)
			}
			total += len(cmp.Key) + len(cmp.Value)
		}
		for _, ops := range [2]struct {
			name string
			ops  []Op
		}{{"success", c.Success}, {"failure", c.Failure}} {
			for i, op := range ops.ops {
				if err := ValidateKey(op.Key); err != nil {
					return fmt.Errorf("txn %s op %d: %w", ops.name, i, err)
				}
				switch op.Type {
				case OpPut:
					if len(op.Value) > MaxValueBytes {
						return fmt.Errorf("txn %s op %d: %w", ops.name, i, ErrValueLarge)
					}
				case OpDelete, OpGet:
					if len(op.Value) != 0 {
						return fmt.Errorf("%w: txn %s op %d: value on a non-put op", ErrInvalidCommand, ops.name, i)
					}
				default:
					return fmt.Errorf("%w: txn %s op %d: unknown op type %d", ErrInvalidCommand, ops.name, i, op.Type)
				}
				total += len(op.Key) + len(op.Value)
			}
		}
		if total > MaxTxnBytes {
			return fmt.Errorf("txn of %d bytes: %w", total, ErrTxnTooLarge)
		}
	case *HashCheck:
		if c == nil {
			return fmt.Errorf("%w: nil hash check", ErrInvalidCommand)
		}
	case *PutFile, *DeleteFile:
		return validateFileCommand(c)
	case *Idempotent:
		if c == nil {
			return fmt.Errorf("%w: nil idempotent write", ErrInvalidCommand)
		}
		if len(c.Scope) > MaxIdemScopeBytes {
			return fmt.Errorf("%w: idempotency scope of %d bytes, over %d", ErrInvalidCommand, len(c.Scope), MaxIdemScopeBytes)
		}
		if err := ValidateIdemKey(c.Key); err != nil {
			return fmt.Errorf("%w: %w", ErrInvalidCommand, err)
		}
		if c.Window == 0 || c.Window > MaxIdemWindow {
			return fmt.Errorf("%w: idempotency window %d outside 1..%d", ErrInvalidCommand, c.Window, uint64(MaxIdemWindow))
		}
		switch c.Cmd.(type) {
		case *Put, *Delete, *Txn:
		default:
			return fmt.Errorf("%w: an idempotency key wraps a put, delete or txn, not %T", ErrInvalidCommand, c.Cmd)
		}
		return validate(c.Cmd)
	case nil:
		return fmt.Errorf("%w: nil command", ErrInvalidCommand)
	default:
		return fmt.Errorf("%w: cannot encode %T", ErrInvalidCommand, c)
	}
	return nil
}

// Decode parses a log entry produced by Encode. It validates everything
// Encode validates and returns errors wrapping ErrDecode (and, where one
// applies, the limit's own error such as ErrInvalidKey); it never panics.
// The returned command does not alias b.
//
// An unknown type with TypeSkippable set decodes to *Unknown.
func Decode(b []byte) (Command, error) {
	if len(b) == 0 {
		return nil, fmt.Errorf("%w: empty entry", ErrDecode)
	}
	// One copy up front, so that the command may outlive b (raft may reuse
	// its buffers) while keys and values stay sub-slices of one allocation.
	b = append([]byte(nil), b...)
	d := decoder{buf: b[1:]}
	var c Command
	switch t := b[0]; t {
	case typeIdempotent:
		p := &Idempotent{}
		p.Scope = d.bytes(MaxIdemScopeBytes)
		p.Key = d.bytes(MaxIdemKeyBytes)
		copy(p.Hash[:], d.fixed(IdemHashBytes))
		p.Window = d.uvarint()
		inner := d.u8()
		if p.Cmd = d.write(inner); p.Cmd == nil {
			d.fail(fmt.Errorf("the wrapped type 0x%02x is not a put, delete or txn", inner))
		}
		c = p
	case typeHashCheck:
		c = &HashCheck{}
	case typePutFile, typeDeleteFile:
		c = d.fileCommand(t)
	default:
		if t&TypeSkippable != 0 {
			return &Unknown{Type: t}, nil
		}
		if c = d.write(t); c == nil && d.err == nil {
			return nil, fmt.Errorf("%w: unknown command type 0x%02x", ErrDecode, t)
		}
	}
	if d.err != nil {
		return nil, fmt.Errorf("%w: type 0x%02x: %w", ErrDecode, b[0], d.err)
	}
	if len(d.buf) != 0 {
		return nil, fmt.Errorf("%w: type 0x%02x: %d trailing bytes", ErrDecode, b[0], len(d.buf))
	}
	if err := validate(c); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrDecode, err)
	}
	return c, nil
}

// write decodes the body of a put, delete or txn of type t; for another
// type it returns nil.
func (d *decoder) write(t byte) Command {
	switch t {
	case typePut:
		p := &Put{}
		p.HasCAS, p.CAS = d.cas()
		p.Key = d.bytes(MaxKeyBytes)
		p.Value = d.bytes(MaxValueBytes)
		return p
	case typeDelete:
		p := &Delete{}
		p.HasCAS, p.CAS = d.cas()
		p.Key = d.bytes(MaxKeyBytes)
		return p
	case typeTxn:
		if t := d.txn(); t != nil { // no typed nil
			return t
		}
	}
	return nil
}

var (
	errTruncated    = errors.New("truncated")
	errVarint       = errors.New("malformed varint")
	errNonCanonical = errors.New("varint not in its shortest form")
	errLength       = errors.New("length beyond limit")
	errFlags        = errors.New("unknown flag bits")
)

// decoder reads a body; the first error sticks and later reads return zero
// values, so the decode functions read straight through.
type decoder struct {
	buf []byte
	err error
}

func (d *decoder) fail(err error) {
	if d.err == nil {
		d.err = err
	}
	d.buf = nil
}

func (d *decoder) u8() byte {
	if d.err != nil {
		return 0
	}
	if len(d.buf) < 1 {
		d.fail(errTruncated)
		return 0
	}
	v := d.buf[0]
	d.buf = d.buf[1:]
	return v
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.buf)
	switch {
	case n == 0:
		d.fail(errTruncated)
		return 0
	case n < 0:
		d.fail(errVarint)
		return 0
	case n != uvarintLen(v):
		d.fail(errNonCanonical)
		return 0
	}
	d.buf = d.buf[n:]
	return v
}

func uvarintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}

// fixed reads n bytes (nil after an error).
func (d *decoder) fixed(n int) []byte {
	if d.err != nil {
		return nil
	}
	if len(d.buf) < n {
		d.fail(errTruncated)
		return nil
	}
	v := d.buf[:n:n]
	d.buf = d.buf[n:]
	return v
}

// bytes reads a length-prefixed byte string of at most limit bytes. An empty
// string decodes as nil.
func (d *decoder) bytes(limit int) []byte {
	n := d.uvarint()
	if d.err != nil {
		return nil
	}
	if n > uint64(limit) {
		d.fail(fmt.Errorf("%w: %d > %d", errLength, n, limit))
		return nil
	}
	if uint64(len(d.buf)) < n {
		d.fail(errTruncated)
		return nil
	}
	if n == 0 {
		return nil
	}
	// Full slice expression: appending to a decoded key must not overwrite
	// the bytes that follow it.
	v := d.buf[:n:n]
	d.buf = d.buf[n:]
	return v
}

// count reads a count of items that must not exceed limit (itself bounded by
// MaxTxnOps), so a forged count cannot make Decode allocate much.
func (d *decoder) count(limit int) int {
	n := d.uvarint()
	if d.err != nil {
		return 0
	}
	if n > uint64(limit) {
		d.fail(fmt.Errorf("%w: %d items > %d: %w", errLength, n, limit, ErrTxnTooLarge))
		return 0
	}
	return int(n)
}

func (d *decoder) cas() (bool, uint64) {
	f := d.u8()
	if f&^flagHasCAS != 0 {
		d.fail(errFlags)
		return false, 0
	}
	if f&flagHasCAS == 0 {
		return false, 0
	}
	return true, d.uvarint()
}

func (d *decoder) txn() *Txn {
	t := &Txn{}
	left := MaxTxnOps
	n := d.count(left)
	if n > 0 {
		t.Compares = make([]Compare, n)
	}
	for i := range t.Compares {
		c := &t.Compares[i]
		c.Target = CompareTarget(d.u8())
		c.Result = CompareResult(d.u8())
		c.Key = d.bytes(MaxKeyBytes)
		switch c.Target {
		case TargetValue:
			c.Value = d.bytes(MaxValueBytes)
		case TargetModifyIndex, TargetCreateIndex:
			c.Index = d.uvarint()
		default:
			d.fail(fmt.Errorf("unknown compare target %d", c.Target))
		}
		if d.err != nil {
			return nil
		}
	}
	left -= n
	t.Success = d.ops(&left)
	t.Failure = d.ops(&left)
	if d.err != nil {
		return nil
	}
	return t
}

func (d *decoder) ops(left *int) []Op {
	n := d.count(*left)
	*left -= n
	if n == 0 {
		return nil
	}
	ops := make([]Op, n)
	for i := range ops {
		op := &ops[i]
		op.Type = OpType(d.u8())
		op.Key = d.bytes(MaxKeyBytes)
		switch op.Type {
		case OpPut:
			op.Value = d.bytes(MaxValueBytes)
		case OpDelete, OpGet:
		default:
			d.fail(fmt.Errorf("unknown op type %d", op.Type))
		}
		if d.err != nil {
			return nil
		}
	}
	return ops
}

// MayGrow reports whether an encoded channel command can add bytes to the
// channel's state (everything but a plain delete); the leader checks a
// channel's quota only for those, so a channel over its quota can still be
// cleaned up.
func MayGrow(entry []byte) bool {
	if len(entry) > 1 && entry[0] == typeIdempotent {
		// Its record is not counted in the channel's bytes: what counts
		// is the wrapped write.
		d := decoder{buf: entry[1:]}
		d.bytes(MaxIdemScopeBytes)
		d.bytes(MaxIdemKeyBytes)
		d.fixed(IdemHashBytes)
		d.uvarint()
		return d.u8() != typeDelete || d.err != nil
	}
	return len(entry) == 0 || (entry[0] != typeDelete && entry[0] != typeDeleteFile)
}
