//lint:file-ignore SA1019 raft still fills and reads its deprecated address fields (Leader, Candidate); the codec carries them so nothing is lost on the wire.

package transport

import (
	"bytes"
	"encoding/binary"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

func sampleHeader() raft.RPCHeader {
	return raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("node-1/7"), Addr: []byte("127.0.0.1:7001")}
}

// sampleMessages returns one message of every kind with every field set,
// keyed by the codec's decode selector (see decodeAny).
func sampleMessages() []any {
	h := sampleHeader()
	at := time.Unix(1764000000, 123456789)
	return []any{
		&raft.AppendEntriesRequest{
			RPCHeader: h, Term: 7, Leader: []byte("127.0.0.1:7001"),
			PrevLogEntry: 100, PrevLogTerm: 6, LeaderCommitIndex: 99,
			Entries: []*raft.Log{
				{Index: 101, Term: 7, Type: raft.LogCommand, Data: []byte("put k v"), Extensions: []byte("ext"), AppendedAt: at},
				{Index: 102, Term: 7, Type: raft.LogConfiguration, Data: bytes.Repeat([]byte{0xAB}, 300)},
				{Index: 1 << 62, Term: 1 << 40, Type: raft.LogNoop, AppendedAt: time.Unix(-62135596800, 0)},
			},
		},
		&raft.AppendEntriesRequest{RPCHeader: h, Term: 3, Leader: []byte("a")}, // heartbeat
		&raft.AppendEntriesResponse{RPCHeader: h, Term: 7, LastLog: 102, Success: true, NoRetryBackoff: true},
		&raft.AppendEntriesResponse{RPCHeader: h, Term: 8, LastLog: 1},
		&raft.RequestVoteRequest{RPCHeader: h, Term: 9, Candidate: []byte("c"), LastLogIndex: 55, LastLogTerm: 8, LeadershipTransfer: true},
		&raft.RequestVoteResponse{RPCHeader: h, Term: 9, Peers: []byte("legacy"), Granted: true},
		&raft.RequestPreVoteRequest{RPCHeader: h, Term: 10, LastLogIndex: 56, LastLogTerm: 9},
		&raft.RequestPreVoteResponse{RPCHeader: h, Term: 10, Granted: true},
		&raft.InstallSnapshotRequest{
			RPCHeader: h, SnapshotVersion: raft.SnapshotVersionMax, Term: 11, Leader: []byte("l"),
			LastLogIndex: 1000, LastLogTerm: 11, Peers: []byte("p"), Configuration: []byte("cfg"),
			ConfigurationIndex: 900, Size: 1 << 33,
		},
		&raft.InstallSnapshotResponse{RPCHeader: h, Term: 11, Success: true},
		&raft.TimeoutNowRequest{RPCHeader: h},
		&raft.TimeoutNowResponse{RPCHeader: raft.RPCHeader{ProtocolVersion: -1}},
	}
}

// Selectors for decodeAny: requests use their rpc type, responses 16+type.
const respSel = 16

func encodeAny(m any) (sel byte, body []byte) {
	switch v := m.(type) {
	case *raft.AppendEntriesRequest:
		return typeAppendEntries, appendAppendEntriesRequest(nil, v)
	case *raft.RequestVoteRequest:
		return typeRequestVote, appendRequestVoteRequest(nil, v)
	case *raft.RequestPreVoteRequest:
		return typeRequestPreVote, appendRequestPreVoteRequest(nil, v)
	case *raft.InstallSnapshotRequest:
		return typeInstallSnapshot, appendInstallSnapshotRequest(nil, v)
	case *raft.TimeoutNowRequest:
		return typeTimeoutNow, appendTimeoutNowRequest(nil, v)
	}
	for _, typ := range []uint8{typeAppendEntries, typeRequestVote, typeRequestPreVote, typeInstallSnapshot, typeTimeoutNow} {
		if b, err := appendResponse(nil, typ, m); err == nil {
			return respSel + typ, b
		}
	}
	panic("unknown message")
}

func decodeAny(sel byte, body []byte) (any, error) {
	if sel < respSel {
		return decodeRequest(sel, body)
	}
	switch sel - respSel {
	case typeAppendEntries:
		var r raft.AppendEntriesResponse
		return &r, decodeAppendEntriesResponse(body, &r)
	case typeRequestVote:
		var r raft.RequestVoteResponse
		return &r, decodeRequestVoteResponse(body, &r)
	case typeRequestPreVote:
		var r raft.RequestPreVoteResponse
		return &r, decodeRequestPreVoteResponse(body, &r)
	case typeInstallSnapshot:
		var r raft.InstallSnapshotResponse
		return &r, decodeInstallSnapshotResponse(body, &r)
	case typeTimeoutNow:
		var r raft.TimeoutNowResponse
		return &r, decodeTimeoutNowResponse(body, &r)
	}
	return nil, ErrMalformed
}

// sameMessage compares messages field by field; times compare with Equal
// (the decoder returns them in the local zone).
func sameMessage(a, b any) bool {
	ae, ok1 := a.(*raft.AppendEntriesRequest)
	be, ok2 := b.(*raft.AppendEntriesRequest)
	if ok1 && ok2 {
		if len(ae.Entries) != len(be.Entries) {
			return false
		}
		for i := range ae.Entries {
			x, y := *ae.Entries[i], *be.Entries[i]
			if !x.AppendedAt.Equal(y.AppendedAt) {
				return false
			}
			x.AppendedAt, y.AppendedAt = time.Time{}, time.Time{}
			if !reflect.DeepEqual(x, y) {
				return false
			}
		}
		x, y := *ae, *be
		x.Entries, y.Entries = nil, nil
		return reflect.DeepEqual(x, y)
	}
	return reflect.DeepEqual(a, b)
}

func TestCodecRoundTrip(t *testing.T) {
	for _, m := range sampleMessages() {
		sel, body := encodeAny(m)
		got, err := decodeAny(sel, body)
		if err != nil {
			t.Fatalf("%T: decode: %v", m, err)
		}
		if !sameMessage(m, got) {
			t.Errorf("%T round trip:\n got %+v\nwant %+v", m, got, m)
		}
	}
}

// Every strict prefix of a valid body, and the body with a trailing byte,
// must fail to decode with ErrMalformed (and never panic).
func TestCodecRejectsTruncatedAndTrailing(t *testing.T) {
	for _, m := range sampleMessages() {
		sel, body := encodeAny(m)
		for i := 0; i < len(body); i++ {
			if _, err := decodeAny(sel, body[:i]); !errors.Is(err, ErrMalformed) {
				t.Fatalf("%T: prefix of %d/%d bytes: err = %v, want ErrMalformed", m, i, len(body), err)
			}
		}
		if _, err := decodeAny(sel, append(body, 0)); !errors.Is(err, ErrMalformed) {
			t.Fatalf("%T: trailing byte: err = %v, want ErrMalformed", m, err)
		}
	}
}

func TestCodecRejectsGarbage(t *testing.T) {
	hb := appendAppendEntriesRequest(nil, &raft.AppendEntriesRequest{Term: 1})
	tests := []struct {
		name string
		sel  byte
		body []byte
	}{
		{"empty", typeAppendEntries, nil},
		{"wrong version", typeTimeoutNow, []byte{codecVersion + 1, 0, 0, 0}},
		{"unknown rpc type", 99, appendTimeoutNowRequest(nil, &raft.TimeoutNowRequest{})},
		{"huge entry count", typeAppendEntries, append(hb[:len(hb)-1:len(hb)-1], 0xff, 0xff, 0xff, 0xff, 0x0f)},
		{"id longer than body", typeTimeoutNow, []byte{codecVersion, 0, 0x7f}},
		{"overlong varint", typeTimeoutNow, []byte{codecVersion, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0, 0}},
		{"unknown flag bits", respSel + typeInstallSnapshot, append(appendHeader(nil, &raft.RPCHeader{}), 1, 0x80)},
		{"negative snapshot size", typeInstallSnapshot, appendInstallSnapshotRequest(nil, &raft.InstallSnapshotRequest{Size: -1})},
		{"bad time flag", typeAppendEntries, append(hb[:len(hb)-1:len(hb)-1], 1, 1, 1, 0, 0, 0, 7)},
		{"bad nanoseconds", typeAppendEntries, binary.AppendUvarint(append(hb[:len(hb)-1:len(hb)-1], 1, 1, 1, 0, 0, 0, 1, 0), 1e9)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := decodeAny(tt.sel, tt.body); !errors.Is(err, ErrMalformed) {
				t.Fatalf("err = %v, want ErrMalformed", err)
			}
		})
	}
}

// A decoded entry's Data aliases the frame but cannot grow into the next
// field.
func TestCodecDataIsCapped(t *testing.T) {
	req := &raft.AppendEntriesRequest{Entries: []*raft.Log{{Data: []byte("aa")}, {Data: []byte("bb")}}}
	body := appendAppendEntriesRequest(nil, req)
	got, err := decodeAppendEntriesRequest(body)
	if err != nil {
		t.Fatal(err)
	}
	_ = append(got.Entries[0].Data, 'X')
	if string(got.Entries[1].Data) != "bb" {
		t.Fatalf("append to one entry's data changed the next: %q", got.Entries[1].Data)
	}
}

func TestIsHeartbeat(t *testing.T) {
	tests := []struct {
		name string
		req  raft.AppendEntriesRequest
		want bool
	}{
		{"heartbeat", raft.AppendEntriesRequest{RPCHeader: raft.RPCHeader{Addr: []byte("a")}, Term: 1}, true},
		{"legacy leader field", raft.AppendEntriesRequest{Leader: []byte("a"), Term: 1}, true},
		{"no term", raft.AppendEntriesRequest{RPCHeader: raft.RPCHeader{Addr: []byte("a")}}, false},
		{"no leader", raft.AppendEntriesRequest{Term: 1}, false},
		{"prev entry", raft.AppendEntriesRequest{Leader: []byte("a"), Term: 1, PrevLogEntry: 1}, false},
		{"prev term", raft.AppendEntriesRequest{Leader: []byte("a"), Term: 1, PrevLogTerm: 1}, false},
		{"commit index", raft.AppendEntriesRequest{Leader: []byte("a"), Term: 1, LeaderCommitIndex: 1}, false},
		{"entries", raft.AppendEntriesRequest{Leader: []byte("a"), Term: 1, Entries: []*raft.Log{{}}}, false},
	}
	for _, tt := range tests {
		if got := isHeartbeat(&tt.req); got != tt.want {
			t.Errorf("%s: isHeartbeat = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func BenchmarkCodecAppendEntries(b *testing.B) {
	req := benchAppendRequest(64, 256)
	buf := appendAppendEntriesRequest(nil, req)
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		buf = appendAppendEntriesRequest(buf[:0], req)
		if _, err := decodeAppendEntriesRequest(buf); err != nil {
			b.Fatal(err)
		}
	}
}

// FuzzDecode feeds arbitrary bodies to every decoder: none may panic, and a
// body that decodes must survive encode → decode unchanged.
func FuzzDecode(f *testing.F) {
	for _, m := range sampleMessages() {
		sel, body := encodeAny(m)
		f.Add(append([]byte{sel}, body...))
	}
	f.Add([]byte{typeAppendEntries, codecVersion, 0, 0, 0, 1, 0, 0, 0, 0, 0x7f})
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 {
			return
		}
		sel, body := data[0]%(2*respSel), data[1:]
		m, err := decodeAny(sel, body)
		if err != nil {
			return
		}
		sel2, body2 := encodeAny(m)
		if sel2 != sel {
			t.Fatalf("selector %d re-encoded as %d", sel, sel2)
		}
		m2, err := decodeAny(sel2, body2)
		if err != nil {
			t.Fatalf("re-encoded %T does not decode: %v", m, err)
		}
		if !sameMessage(m, m2) {
			t.Fatalf("%T changed in a round trip:\n%+v\n%+v", m, m, m2)
		}
	})
}
