package logstore

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// sameLog compares the fields the store must preserve. AppendedAt is
// compared as an instant (the decoded time has no monotonic reading and a
// local location).
func sameLog(a, b *raft.Log) bool {
	return a.Index == b.Index && a.Term == b.Term && a.Type == b.Type &&
		bytes.Equal(a.Data, b.Data) && bytes.Equal(a.Extensions, b.Extensions) &&
		a.AppendedAt.Equal(b.AppendedAt)
}

func codecCases() []raft.Log {
	return []raft.Log{
		{},
		{Index: 1, Term: 1, Type: raft.LogCommand, Data: []byte("x")},
		{Index: 1 << 40, Term: 7, Type: raft.LogConfiguration, Data: bytes.Repeat([]byte{0xab}, 300), Extensions: []byte("ext")},
		{Index: ^uint64(0), Term: ^uint64(0), Type: raft.LogType(255), AppendedAt: time.Unix(1_700_000_000, 123456789)},
		{Index: 5, Term: 2, Type: raft.LogNoop, AppendedAt: time.Unix(-5, 0)}, // before 1970: negative varint
		{Index: 9, Term: 3, Type: raft.LogBarrier, Extensions: []byte{0}},
	}
}

func TestCodecRoundTrip(t *testing.T) {
	for _, in := range codecCases() {
		enc := appendLog(nil, &in)
		if got, want := len(enc), encodedLogSize(&in); got != want {
			t.Errorf("index %d: encoded %d bytes, encodedLogSize says %d", in.Index, got, want)
		}
		var out raft.Log
		if err := decodeLog(enc, &out); err != nil {
			t.Fatalf("index %d: decode: %v", in.Index, err)
		}
		if !sameLog(&in, &out) {
			t.Errorf("round trip changed the entry:\n in  %+v\n out %+v", in, out)
		}
		// The decoded entry must not alias the input buffer.
		if len(out.Data) > 0 {
			for i := range enc {
				enc[i] = 0
			}
			if !bytes.Equal(out.Data, in.Data) {
				t.Errorf("index %d: decoded Data aliases the encoded buffer", in.Index)
			}
		}
	}
}

func TestCodecCompact(t *testing.T) {
	l := raft.Log{Index: 1000, Term: 3, Type: raft.LogCommand, Data: make([]byte, 16)}
	// 3 header bytes + 2 (index) + 1 (term) + 1+16 (data) + 1 (extensions).
	if got := len(appendLog(nil, &l)); got != 24 {
		t.Errorf("encoded size = %d, want 24", got)
	}
}

func TestDecodeLogRejects(t *testing.T) {
	valid := appendLog(nil, &raft.Log{Index: 3, Term: 1, Data: []byte("abc")})
	tests := []struct {
		name string
		in   []byte
	}{
		{"empty", nil},
		{"short header", []byte{logCodecV1, 0}},
		{"unknown version", append([]byte{2}, valid[1:]...)},
		{"version zero", append([]byte{0}, valid[1:]...)},
		{"unknown flag", append([]byte{logCodecV1, 0, 0x80}, valid[3:]...)},
		{"truncated index", []byte{logCodecV1, 0, 0, 0x80}},
		{"missing term", []byte{logCodecV1, 0, 0, 3}},
		{"missing appendedAt", []byte{logCodecV1, 0, flagAppendedAt, 3, 1}},
		{"data longer than value", []byte{logCodecV1, 0, 0, 3, 1, 10, 'a'}},
		{"huge data length", []byte{logCodecV1, 0, 0, 3, 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}},
		{"uvarint overflow", []byte{logCodecV1, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}},
		{"missing extensions length", valid[:len(valid)-1]},
		{"trailing byte", append(append([]byte(nil), valid...), 0)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out raft.Log
			err := decodeLog(tt.in, &out)
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("decodeLog(%x) = %v, want ErrCorrupt", tt.in, err)
			}
		})
	}
}

// FuzzDecodeLog checks that no input makes the decoder panic, and that
// whatever it accepts re-encodes to an entry that decodes the same.
func FuzzDecodeLog(f *testing.F) {
	for _, l := range codecCases() {
		f.Add(appendLog(nil, &l))
	}
	f.Add([]byte{})
	f.Add([]byte{logCodecV1, 0, 0})
	f.Add([]byte{logCodecV1, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	f.Add([]byte{logCodecV1, 0, flagAppendedAt, 1, 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		var l raft.Log
		if err := decodeLog(b, &l); err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v does not wrap ErrCorrupt", err)
			}
			return
		}
		enc := appendLog(nil, &l)
		if len(enc) != encodedLogSize(&l) {
			t.Fatalf("encodedLogSize %d != encoded %d", encodedLogSize(&l), len(enc))
		}
		var again raft.Log
		if err := decodeLog(enc, &again); err != nil {
			t.Fatalf("re-encoded entry does not decode: %v", err)
		}
		if !sameLog(&l, &again) {
			t.Fatalf("re-encoding changed the entry:\n %+v\n %+v", l, again)
		}
	})
}
