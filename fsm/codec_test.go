package fsm

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"
)

// codecCommands are valid commands of every kind; they are the round-trip
// cases and the fuzz seeds.
func codecCommands() []Command {
	return []Command{
		&Put{Key: []byte("a"), Value: []byte("1")},
		&Put{Key: []byte("a/b/c"), Value: nil},
		&Put{Key: []byte("k"), Value: []byte("v"), HasCAS: true, CAS: 0},
		&Put{Key: []byte("k"), Value: []byte("v"), HasCAS: true, CAS: 1<<64 - 1},
		&Put{Key: bytes.Repeat([]byte("k"), MaxKeyBytes), Value: bytes.Repeat([]byte{0xff}, 300)},
		&Put{Key: []byte("ünïcødé"), Value: []byte{0, 1, 2}},
		&Delete{Key: []byte("a")},
		&Delete{Key: []byte("a"), HasCAS: true, CAS: 42},
		&Txn{},
		&Txn{
			Compares: []Compare{
				{Key: []byte("a"), Target: TargetValue, Result: Equal, Value: []byte("1")},
				{Key: []byte("b"), Target: TargetModifyIndex, Result: Less, Index: 300},
				{Key: []byte("c"), Target: TargetCreateIndex, Result: Greater, Index: 0},
				{Key: []byte("d"), Target: TargetValue, Result: NotEqual},
			},
			Success: []Op{
				{Type: OpPut, Key: []byte("a"), Value: []byte("2")},
				{Type: OpGet, Key: []byte("a")},
				{Type: OpDelete, Key: []byte("b")},
			},
			Failure: []Op{{Type: OpGet, Key: []byte("a")}},
		},
		&HashCheck{},
	}
}

func TestCodecRoundTrip(t *testing.T) {
	for _, c := range codecCommands() {
		b, err := Encode(c)
		if err != nil {
			t.Fatalf("Encode(%+v): %v", c, err)
		}
		got, err := Decode(b)
		if err != nil {
			t.Fatalf("Decode(Encode(%+v)): %v", c, err)
		}
		if !reflect.DeepEqual(got, c) {
			t.Fatalf("round trip:\n got %+v\nwant %+v", got, c)
		}
		// Decode copies: changing the input must not change the command.
		for i := range b {
			b[i] ^= 0xff
		}
		if !reflect.DeepEqual(got, c) {
			t.Fatalf("decoded command aliases its input")
		}
	}
}

// TestCodecGolden pins the byte layout: these bytes may sit in a log for
// years, so a change here is a compatibility break, not a refactor.
func TestCodecGolden(t *testing.T) {
	tests := []struct {
		cmd  Command
		want []byte
	}{
		{&Put{Key: []byte("k"), Value: []byte("v")}, []byte{0x01, 0x00, 1, 'k', 1, 'v'}},
		{&Put{Key: []byte("k"), Value: []byte("v"), HasCAS: true, CAS: 300}, []byte{0x01, 0x01, 0xac, 0x02, 1, 'k', 1, 'v'}},
		{&Delete{Key: []byte("k")}, []byte{0x02, 0x00, 1, 'k'}},
		{&Delete{Key: []byte("k"), HasCAS: true, CAS: 0}, []byte{0x02, 0x01, 0x00, 1, 'k'}},
		{&Txn{}, []byte{0x03, 0, 0, 0}},
		{&Txn{
			Compares: []Compare{{Key: []byte("a"), Target: TargetModifyIndex, Result: Equal, Index: 5}},
			Success:  []Op{{Type: OpPut, Key: []byte("a"), Value: []byte("x")}},
			Failure:  []Op{{Type: OpGet, Key: []byte("a")}},
		}, []byte{0x03, 1, 2, 1, 1, 'a', 5, 1, 1, 1, 'a', 1, 'x', 1, 3, 1, 'a'}},
		{&HashCheck{}, []byte{0x84}},
	}
	for _, tt := range tests {
		got, err := Encode(tt.cmd)
		if err != nil {
			t.Fatalf("Encode(%+v): %v", tt.cmd, err)
		}
		if !bytes.Equal(got, tt.want) {
			t.Errorf("Encode(%+v) = %x, want %x", tt.cmd, got, tt.want)
		}
	}
}

func TestEncodeRejects(t *testing.T) {
	big := make([]byte, MaxValueBytes+1)
	ops := func(n int) []Op {
		o := make([]Op, n)
		for i := range o {
			o[i] = Op{Type: OpGet, Key: []byte("k")}
		}
		return o
	}
	tests := []struct {
		name string
		cmd  Command
		want error
	}{
		{"nil", nil, ErrInvalidCommand},
		{"nil put", (*Put)(nil), ErrInvalidCommand},
		{"unknown", &Unknown{Type: 0x90}, ErrInvalidCommand},
		{"empty key", &Put{Value: []byte("v")}, ErrInvalidKey},
		{"nul in key", &Put{Key: []byte("a\x00b")}, ErrInvalidKey},
		{"invalid utf8", &Delete{Key: []byte{0xff, 0xfe}}, ErrInvalidKey},
		{"key too large", &Put{Key: bytes.Repeat([]byte("k"), MaxKeyBytes+1)}, ErrKeyTooLarge},
		{"value too large", &Put{Key: []byte("k"), Value: big}, ErrValueLarge},
		{"cas without HasCAS", &Put{Key: []byte("k"), CAS: 3}, ErrInvalidCommand},
		{"delete cas without HasCAS", &Delete{Key: []byte("k"), CAS: 3}, ErrInvalidCommand},
		{"txn too many ops", &Txn{Success: ops(MaxTxnOps), Failure: ops(1)}, ErrTxnTooLarge},
		{"txn too many bytes", &Txn{Success: []Op{
			{Type: OpPut, Key: []byte("a"), Value: big[:MaxValueBytes]},
			{Type: OpPut, Key: []byte("b"), Value: big[:MaxValueBytes]},
			{Type: OpPut, Key: []byte("c"), Value: big[:MaxValueBytes]},
			{Type: OpPut, Key: []byte("d"), Value: big[:MaxValueBytes]},
		}}, ErrTxnTooLarge},
		{"txn unknown op", &Txn{Success: []Op{{Type: 9, Key: []byte("k")}}}, ErrInvalidCommand},
		{"txn get with value", &Txn{Success: []Op{{Type: OpGet, Key: []byte("k"), Value: []byte("v")}}}, ErrInvalidCommand},
		{"txn op bad key", &Txn{Failure: []Op{{Type: OpDelete}}}, ErrInvalidKey},
		{"txn unknown target", &Txn{Compares: []Compare{{Key: []byte("k"), Target: 7, Result: Equal}}}, ErrInvalidCommand},
		{"txn unknown result", &Txn{Compares: []Compare{{Key: []byte("k"), Target: TargetValue, Result: 0}}}, ErrInvalidCommand},
		{"txn index compare with value", &Txn{Compares: []Compare{{Key: []byte("k"), Target: TargetModifyIndex, Result: Equal, Value: []byte("x")}}}, ErrInvalidCommand},
		{"txn value compare with index", &Txn{Compares: []Compare{{Key: []byte("k"), Target: TargetValue, Result: Equal, Index: 1}}}, ErrInvalidCommand},
		{"txn compare value too large", &Txn{Compares: []Compare{{Key: []byte("k"), Target: TargetValue, Result: Equal, Value: big}}}, ErrValueLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Encode(tt.cmd)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Encode: err = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestDecodeRejects(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		also error // a second error the result must wrap, besides ErrDecode
	}{
		{"empty", nil, nil},
		{"type zero", []byte{0x00}, nil},
		{"unknown type without skip bit", []byte{0x3f, 1, 2}, nil},
		{"meta type on a channel", []byte{0x40}, nil},
		{"put truncated", []byte{0x01}, nil},
		{"put truncated key", []byte{0x01, 0x00, 5, 'a'}, nil},
		{"put missing value", []byte{0x01, 0x00, 1, 'a'}, nil},
		{"put unknown flags", []byte{0x01, 0x02, 1, 'a', 0}, nil},
		{"put trailing bytes", []byte{0x01, 0x00, 1, 'a', 0, 9}, nil},
		{"put empty key", []byte{0x01, 0x00, 0, 0}, ErrInvalidKey},
		{"put nul key", []byte{0x01, 0x00, 1, 0, 0}, ErrInvalidKey},
		{"put non-canonical varint", []byte{0x01, 0x00, 0x81, 0x00, 'a', 0}, nil},
		{"put overlong varint", []byte{0x01, 0x01, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 1, 'a', 0}, nil},
		{"put key length beyond limit", []byte{0x01, 0x00, 0x81, 0x08}, nil},
		{"put value length beyond limit", []byte{0x01, 0x00, 1, 'a', 0x81, 0x80, 0x40}, nil},
		{"delete truncated cas", []byte{0x02, 0x01}, nil},
		{"txn truncated", []byte{0x03}, nil},
		{"txn too many compares", []byte{0x03, 0x81, 0x01}, ErrTxnTooLarge},
		{"txn unknown target", []byte{0x03, 1, 9, 1, 1, 'a', 0, 0, 0}, nil},
		{"txn unknown result", []byte{0x03, 1, 2, 9, 1, 'a', 0, 0, 0}, ErrInvalidCommand},
		{"txn unknown op", []byte{0x03, 0, 1, 7, 1, 'a', 0}, nil},
		{"txn ops over the limit in total", append([]byte{0x03, 0, 100}, append(bytes.Repeat([]byte{3, 1, 'a'}, 100), 29)...), ErrTxnTooLarge},
		{"txn trailing bytes", []byte{0x03, 0, 0, 0, 0}, nil},
		{"hash check trailing bytes", []byte{0x84, 0}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Decode(tt.in)
			if !errors.Is(err, ErrDecode) {
				t.Fatalf("Decode(%x) = %+v, %v; want an ErrDecode", tt.in, c, err)
			}
			if tt.also != nil && !errors.Is(err, tt.also) {
				t.Fatalf("Decode(%x): err = %v, want it to wrap %v too", tt.in, err, tt.also)
			}
			if c != nil {
				t.Fatalf("Decode returned a command with an error: %+v", c)
			}
		})
	}
}

func TestDecodeSkippable(t *testing.T) {
	for _, in := range [][]byte{{0x80}, {0xbf, 1, 2, 3}, {0xc0, 0xff}, {0xff}} {
		c, err := Decode(in)
		if err != nil {
			t.Fatalf("Decode(%x): %v", in, err)
		}
		u, ok := c.(*Unknown)
		if !ok || u.Type != in[0] {
			t.Fatalf("Decode(%x) = %#v, want *Unknown{0x%02x}", in, c, in[0])
		}
	}
}

func TestDecodeMaxTxn(t *testing.T) {
	ops := make([]Op, MaxTxnOps)
	for i := range ops {
		ops[i] = Op{Type: OpGet, Key: []byte("k")}
	}
	b, err := Encode(&Txn{Success: ops})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Decode(b); err != nil {
		t.Fatalf("a txn of exactly MaxTxnOps ops: %v", err)
	}
}

func FuzzDecode(f *testing.F) {
	for _, c := range codecCommands() {
		b, err := Encode(c)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	for _, c := range []Command{
		&Idempotent{Scope: []byte("s"), Key: []byte("k"), Window: 9, Cmd: put("a", "b")},
		&Idempotent{Key: []byte("k"), Window: 1, Cmd: delCAS("a", 3)},
		&Idempotent{Key: []byte("k"), Window: MaxIdemWindow, Cmd: &Txn{Success: []Op{{Type: OpGet, Key: []byte("a")}}}},
	} {
		b, err := Encode(c)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{})
	f.Add([]byte{0x80, 1})
	f.Add([]byte{0x03, 0x81, 0x01})
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Decode(b)
		if err != nil {
			if !errors.Is(err, ErrDecode) {
				t.Fatalf("error not wrapping ErrDecode: %v", err)
			}
			if !strings.HasPrefix(err.Error(), "fsm: ") {
				t.Fatalf("error without package prefix: %v", err)
			}
			return
		}
		if _, ok := c.(*Unknown); ok {
			return
		}
		// Every command has exactly one encoding.
		again, err := Encode(c)
		if err != nil {
			t.Fatalf("Encode of a decoded command %+v: %v", c, err)
		}
		if !bytes.Equal(again, b) {
			t.Fatalf("Encode(Decode(%x)) = %x", b, again)
		}
	})
}
