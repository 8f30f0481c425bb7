package fsm

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Results and entries as they travel between nodes (a proposal or a read
// served for another node, cluster/route.go), beside the command codec
// whose decoder they share. Unlike log entries they never persist, but a
// node of the previous version reads them during a rolling upgrade, so the
// result layout only grows at its end.
//
//	result: index uvarint | err code u8 | succeeded u8 | op count uvarint |
//	        per op: type u8 | found u8 | key | entry
//	entry:  key | value | create index uvarint | modify index uvarint
//
// where key and value are a uvarint length and the bytes. An empty value
// decodes as nil, as a local read returns it (Channel.Get leaves an empty
// value nil), so that the JSON of a value read on another node is the same.

// resultErrs are the business outcomes a Result carries, by code. Code 4
// is an error the sender could not name, as every release has sent it (the
// first releases sent len(resultErrs) = 4): new outcomes take codes above.
var resultErrs = []error{nil, ErrCASMismatch, ErrKeyNotFound, ErrClosed, errUnknownResult, ErrIdempotencyKeyReused,
	ErrFileNotFound, ErrPrecondition, ErrHoldersMinority, ErrFileQuota}

// codeUnknownResult is the code of an error the sender cannot name.
const codeUnknownResult = 4

// errUnknownResult is a result error code this node does not know.
var errUnknownResult = errors.New("fsm: unknown result error")

// EncodeResult appends r to b.
func EncodeResult(b []byte, r *Result) []byte {
	b = binary.AppendUvarint(b, r.Index)
	b = append(b, resultErrCode(r.Err), boolByte(r.Succeeded))
	b = binary.AppendUvarint(b, uint64(len(r.Ops)))
	for _, op := range r.Ops {
		b = append(b, byte(op.Type), boolByte(op.Found))
		b = appendBytes(b, op.Key)
		b = AppendEntry(b, op.Entry)
	}
	return b
}

// DecodeResult reads a result that EncodeResult wrote, and nothing after it.
func DecodeResult(b []byte) (*Result, error) {
	d := &decoder{buf: b}
	r := &Result{Index: d.uvarint()}
	r.Err = resultErr(d.u8())
	r.Succeeded = d.u8() == 1
	n := d.count(MaxTxnOps)
	for i := 0; i < n && d.err == nil; i++ {
		op := OpResult{Type: OpType(d.u8()), Found: d.u8() == 1}
		op.Key = d.bytes(MaxKeyBytes)
		op.Entry = d.entry()
		r.Ops = append(r.Ops, op)
	}
	if err := d.done(); err != nil {
		return nil, fmt.Errorf("fsm: decode result: %w", err)
	}
	return r, nil
}

// AppendEntry appends e to b.
func AppendEntry(b []byte, e Entry) []byte {
	b = appendBytes(b, e.Key)
	b = appendBytes(b, e.Value)
	b = binary.AppendUvarint(b, e.CreateIndex)
	return binary.AppendUvarint(b, e.ModifyIndex)
}

// EncodeEntries appends a count and es to b (a page of a listing).
func EncodeEntries(b []byte, es []Entry) []byte {
	b = binary.AppendUvarint(b, uint64(len(es)))
	for _, e := range es {
		b = AppendEntry(b, e)
	}
	return b
}

// DecodeEntries reads what EncodeEntries wrote, at most limit entries, and
// returns the bytes after them.
func DecodeEntries(b []byte, limit int) ([]Entry, []byte, error) {
	d := &decoder{buf: b}
	n := d.count(limit)
	var es []Entry
	for i := 0; i < n && d.err == nil; i++ {
		es = append(es, d.entry())
	}
	if d.err != nil {
		return nil, nil, fmt.Errorf("fsm: decode entries: %w", d.err)
	}
	return es, d.buf, nil
}

// DecodeEntry reads one entry that AppendEntry wrote and returns the bytes
// after it.
func DecodeEntry(b []byte) (Entry, []byte, error) {
	d := &decoder{buf: b}
	e := d.entry()
	if d.err != nil {
		return Entry{}, nil, fmt.Errorf("fsm: decode entry: %w", d.err)
	}
	return e, d.buf, nil
}

func (d *decoder) entry() Entry {
	var e Entry
	e.Key = d.bytes(MaxKeyBytes)
	e.Value = d.bytes(MaxValueBytes)
	e.CreateIndex = d.uvarint()
	e.ModifyIndex = d.uvarint()
	return e
}

// done is the decoder's error, or one for bytes left over.
func (d *decoder) done() error {
	if d.err != nil {
		return d.err
	}
	if len(d.buf) != 0 {
		return fmt.Errorf("%d trailing bytes", len(d.buf))
	}
	return nil
}

func resultErrCode(err error) byte {
	for i, e := range resultErrs {
		if e != nil && errors.Is(err, e) {
			return byte(i)
		}
	}
	if err != nil {
		return codeUnknownResult // the caller reports it as such
	}
	return 0
}

func resultErr(code byte) error {
	if int(code) < len(resultErrs) {
		return resultErrs[code]
	}
	return errUnknownResult
}

func boolByte(v bool) byte {
	if v {
		return 1
	}
	return 0
}
