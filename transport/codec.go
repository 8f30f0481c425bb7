//lint:file-ignore SA1019 raft still fills and reads its deprecated address fields (Leader, Candidate); the codec carries them so nothing is lost on the wire.

package transport

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/raft"
)

// Wire encoding of the Raft RPCs. Hand-written, no reflection: a heartbeat
// encodes in ~40 bytes and decodes with two allocations, and a 64-entry
// AppendEntries decodes with three (the request, one []raft.Log, one
// []*raft.Log); entry payloads alias the frame buffer instead of being copied.
//
// Notation: uv = unsigned varint (binary.AppendUvarint), sv = signed zig-zag
// varint (binary.AppendVarint), u8 = one byte, bytes = uv length + raw bytes.
// Every message body starts with the codec version byte; a decoder rejects any
// other version, unknown flag bits and trailing bytes, so a garbled body fails
// loudly instead of decoding into something plausible.
//
//	header    = ProtocolVersion sv | ID bytes | Addr bytes          (raft.RPCHeader)
//
//	AppendEntriesRequest     = ver u8 | header | Term uv | Leader bytes |
//	                           PrevLogEntry uv | PrevLogTerm uv | LeaderCommitIndex uv |
//	                           nEntries uv | entry*nEntries
//	  entry                  = Index uv | Term uv | Type u8 | Data bytes | Extensions bytes |
//	                           AppendedAt time
//	  time                   = 0 (zero time) | 1 | Unix seconds sv | nanoseconds uv (< 1e9)
//	AppendEntriesResponse    = ver u8 | header | Term uv | LastLog uv |
//	                           flags u8 (bit0 Success, bit1 NoRetryBackoff)
//	RequestVoteRequest       = ver u8 | header | Term uv | Candidate bytes |
//	                           LastLogIndex uv | LastLogTerm uv | flags u8 (bit0 LeadershipTransfer)
//	RequestVoteResponse      = ver u8 | header | Term uv | Peers bytes | flags u8 (bit0 Granted)
//	RequestPreVoteRequest    = ver u8 | header | Term uv | LastLogIndex uv | LastLogTerm uv
//	RequestPreVoteResponse   = ver u8 | header | Term uv | flags u8 (bit0 Granted)
//	InstallSnapshotRequest   = ver u8 | header | SnapshotVersion sv | Term uv | Leader bytes |
//	                           LastLogIndex uv | LastLogTerm uv | Peers bytes |
//	                           Configuration bytes | ConfigurationIndex uv | Size sv
//	InstallSnapshotResponse  = ver u8 | header | Term uv | flags u8 (bit0 Success)
//	TimeoutNowRequest        = ver u8 | header
//	TimeoutNowResponse       = ver u8 | header
//
// The version byte is bumped on any layout change; both ends of a connection
// also agree on the protocol version in the handshake (handshake.go), so a
// mixed-version cluster fails at connect time rather than mid-stream.
// Empty byte fields decode as nil.

// codecVersion is the first byte of every message body.
const codecVersion byte = 1

// RPC type codes, carried in the request frame header (frame.go).
const (
	typeAppendEntries   uint8 = 1
	typeRequestVote     uint8 = 2
	typeInstallSnapshot uint8 = 3
	typeTimeoutNow      uint8 = 4
	typeRequestPreVote  uint8 = 5
	typeHeartbeats      uint8 = 6 // a batch of heartbeats for many groups (heartbeat.go)
)

// minEntrySize is the smallest possible encoded log entry; it bounds the
// entry count a body of a given length can claim, so a garbage count cannot
// make the decoder allocate more than the frame holds.
const minEntrySize = 6

// ErrMalformed is returned (wrapped) for a message that does not decode.
var ErrMalformed = errors.New("transport: malformed message")

// ---- encoding ----

func appendBytes(b, p []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(p)))
	return append(b, p...)
}

func appendHeader(b []byte, h *raft.RPCHeader) []byte {
	b = append(b, codecVersion)
	b = binary.AppendVarint(b, int64(h.ProtocolVersion))
	b = appendBytes(b, h.ID)
	return appendBytes(b, h.Addr)
}

func appendTime(b []byte, t time.Time) []byte {
	if t.IsZero() {
		return append(b, 0)
	}
	b = append(b, 1)
	b = binary.AppendVarint(b, t.Unix())
	return binary.AppendUvarint(b, uint64(t.Nanosecond()))
}

func flag(v bool, bit byte) byte {
	if v {
		return bit
	}
	return 0
}

func appendAppendEntriesRequest(b []byte, r *raft.AppendEntriesRequest) []byte {
	b = appendHeader(b, &r.RPCHeader)
	b = binary.AppendUvarint(b, r.Term)
	b = appendBytes(b, r.Leader)
	b = binary.AppendUvarint(b, r.PrevLogEntry)
	b = binary.AppendUvarint(b, r.PrevLogTerm)
	b = binary.AppendUvarint(b, r.LeaderCommitIndex)
	b = binary.AppendUvarint(b, uint64(len(r.Entries)))
	for _, e := range r.Entries {
		b = binary.AppendUvarint(b, e.Index)
		b = binary.AppendUvarint(b, e.Term)
		b = append(b, byte(e.Type))
		b = appendBytes(b, e.Data)
		b = appendBytes(b, e.Extensions)
		b = appendTime(b, e.AppendedAt)
	}
	return b
}

func appendAppendEntriesResponse(b []byte, r *raft.AppendEntriesResponse) []byte {
	b = appendHeader(b, &r.RPCHeader)
	b = binary.AppendUvarint(b, r.Term)
	b = binary.AppendUvarint(b, r.LastLog)
	return append(b, flag(r.Success, 1)|flag(r.NoRetryBackoff, 2))
}

func appendRequestVoteRequest(b []byte, r *raft.RequestVoteRequest) []byte {
	b = appendHeader(b, &r.RPCHeader)
	b = binary.AppendUvarint(b, r.Term)
	b = appendBytes(b, r.Candidate)
	b = binary.AppendUvarint(b, r.LastLogIndex)
	b = binary.AppendUvarint(b, r.LastLogTerm)
	return append(b, flag(r.LeadershipTransfer, 1))
}

func appendRequestVoteResponse(b []byte, r *raft.RequestVoteResponse) []byte {
	b = appendHeader(b, &r.RPCHeader)
	b = binary.AppendUvarint(b, r.Term)
	b = appendBytes(b, r.Peers)
	return append(b, flag(r.Granted, 1))
}

func appendRequestPreVoteRequest(b []byte, r *raft.RequestPreVoteRequest) []byte {
	b = appendHeader(b, &r.RPCHeader)
	b = binary.AppendUvarint(b, r.Term)
	b = binary.AppendUvarint(b, r.LastLogIndex)
	return binary.AppendUvarint(b, r.LastLogTerm)
}

func appendRequestPreVoteResponse(b []byte, r *raft.RequestPreVoteResponse) []byte {
	b = appendHeader(b, &r.RPCHeader)
	b = binary.AppendUvarint(b, r.Term)
	return append(b, flag(r.Granted, 1))
}

func appendInstallSnapshotRequest(b []byte, r *raft.InstallSnapshotRequest) []byte {
	b = appendHeader(b, &r.RPCHeader)
	b = binary.AppendVarint(b, int64(r.SnapshotVersion))
	b = binary.AppendUvarint(b, r.Term)
	b = appendBytes(b, r.Leader)
	b = binary.AppendUvarint(b, r.LastLogIndex)
	b = binary.AppendUvarint(b, r.LastLogTerm)
	b = appendBytes(b, r.Peers)
	b = appendBytes(b, r.Configuration)
	b = binary.AppendUvarint(b, r.ConfigurationIndex)
	return binary.AppendVarint(b, r.Size)
}

func appendInstallSnapshotResponse(b []byte, r *raft.InstallSnapshotResponse) []byte {
	b = appendHeader(b, &r.RPCHeader)
	b = binary.AppendUvarint(b, r.Term)
	return append(b, flag(r.Success, 1))
}

func appendTimeoutNowRequest(b []byte, r *raft.TimeoutNowRequest) []byte {
	return appendHeader(b, &r.RPCHeader)
}

func appendTimeoutNowResponse(b []byte, r *raft.TimeoutNowResponse) []byte {
	return appendHeader(b, &r.RPCHeader)
}

// appendEntriesSizeHint is a close upper bound of the encoded size, so the
// encode buffer is allocated once instead of doubling through a large batch.
func appendEntriesSizeHint(r *raft.AppendEntriesRequest) int {
	n := 64 + len(r.ID) + len(r.Addr) + len(r.Leader)
	for _, e := range r.Entries {
		n += 48 + len(e.Data) + len(e.Extensions)
	}
	return n
}

// ---- decoding ----

// decoder reads fields from a body; the first failure sticks, so callers
// read every field and check err once in finish.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s", ErrMalformed, what)
	}
	d.b = nil
}

func (d *decoder) uvarint(what string) uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail(what)
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint(what string) int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail(what)
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) byte(what string) byte {
	if d.err != nil {
		return 0
	}
	if len(d.b) == 0 {
		d.fail(what)
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

// bytes returns a slice aliasing the body, capped so an append by the
// consumer can never write into the next field.
func (d *decoder) bytes(what string) []byte {
	n := d.uvarint(what)
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.b)) {
		d.fail(what + " length")
		return nil
	}
	if n == 0 {
		return nil
	}
	p := d.b[:n:n]
	d.b = d.b[n:]
	return p
}

func (d *decoder) flags(what string, allowed byte) byte {
	f := d.byte(what)
	if f&^allowed != 0 {
		d.fail(what + " has unknown bits")
	}
	return f
}

func (d *decoder) time(what string) time.Time {
	switch d.byte(what) {
	case 0:
		return time.Time{}
	case 1:
		sec := d.varint(what)
		nsec := d.uvarint(what)
		if nsec >= 1e9 {
			d.fail(what + " nanoseconds")
			return time.Time{}
		}
		if d.err != nil {
			return time.Time{}
		}
		return time.Unix(sec, int64(nsec))
	default:
		d.fail(what)
		return time.Time{}
	}
}

func (d *decoder) header() raft.RPCHeader {
	if v := d.byte("version"); d.err == nil && v != codecVersion {
		d.fail(fmt.Sprintf("codec version %d, want %d", v, codecVersion))
	}
	var h raft.RPCHeader
	h.ProtocolVersion = raft.ProtocolVersion(d.varint("protocol version"))
	h.ID = d.bytes("header id")
	h.Addr = d.bytes("header addr")
	return h
}

func (d *decoder) finish() error {
	if d.err == nil && len(d.b) != 0 {
		d.fail(fmt.Sprintf("%d trailing bytes", len(d.b)))
	}
	return d.err
}

func decodeAppendEntriesRequest(b []byte) (*raft.AppendEntriesRequest, error) {
	d := decoder{b: b}
	r := &raft.AppendEntriesRequest{RPCHeader: d.header()}
	r.Term = d.uvarint("term")
	r.Leader = d.bytes("leader")
	r.PrevLogEntry = d.uvarint("prev log entry")
	r.PrevLogTerm = d.uvarint("prev log term")
	r.LeaderCommitIndex = d.uvarint("leader commit index")
	n := d.uvarint("entry count")
	if d.err == nil && n > uint64(len(d.b)/minEntrySize) {
		d.fail("entry count")
	}
	if d.err == nil && n > 0 {
		logs := make([]raft.Log, n)
		r.Entries = make([]*raft.Log, n)
		for i := range logs {
			e := &logs[i]
			e.Index = d.uvarint("entry index")
			e.Term = d.uvarint("entry term")
			e.Type = raft.LogType(d.byte("entry type"))
			e.Data = d.bytes("entry data")
			e.Extensions = d.bytes("entry extensions")
			e.AppendedAt = d.time("entry appended at")
			r.Entries[i] = e
		}
	}
	if err := d.finish(); err != nil {
		return nil, fmt.Errorf("append entries request: %w", err)
	}
	return r, nil
}

func decodeAppendEntriesResponse(b []byte, r *raft.AppendEntriesResponse) error {
	d := decoder{b: b}
	v := raft.AppendEntriesResponse{RPCHeader: d.header()}
	v.Term = d.uvarint("term")
	v.LastLog = d.uvarint("last log")
	f := d.flags("flags", 3)
	v.Success, v.NoRetryBackoff = f&1 != 0, f&2 != 0
	if err := d.finish(); err != nil {
		return fmt.Errorf("append entries response: %w", err)
	}
	*r = v
	return nil
}

func decodeRequestVoteRequest(b []byte) (*raft.RequestVoteRequest, error) {
	d := decoder{b: b}
	r := &raft.RequestVoteRequest{RPCHeader: d.header()}
	r.Term = d.uvarint("term")
	r.Candidate = d.bytes("candidate")
	r.LastLogIndex = d.uvarint("last log index")
	r.LastLogTerm = d.uvarint("last log term")
	r.LeadershipTransfer = d.flags("flags", 1)&1 != 0
	if err := d.finish(); err != nil {
		return nil, fmt.Errorf("request vote request: %w", err)
	}
	return r, nil
}

func decodeRequestVoteResponse(b []byte, r *raft.RequestVoteResponse) error {
	d := decoder{b: b}
	v := raft.RequestVoteResponse{RPCHeader: d.header()}
	v.Term = d.uvarint("term")
	v.Peers = d.bytes("peers")
	v.Granted = d.flags("flags", 1)&1 != 0
	if err := d.finish(); err != nil {
		return fmt.Errorf("request vote response: %w", err)
	}
	*r = v
	return nil
}

func decodeRequestPreVoteRequest(b []byte) (*raft.RequestPreVoteRequest, error) {
	d := decoder{b: b}
	r := &raft.RequestPreVoteRequest{RPCHeader: d.header()}
	r.Term = d.uvarint("term")
	r.LastLogIndex = d.uvarint("last log index")
	r.LastLogTerm = d.uvarint("last log term")
	if err := d.finish(); err != nil {
		return nil, fmt.Errorf("request pre-vote request: %w", err)
	}
	return r, nil
}

func decodeRequestPreVoteResponse(b []byte, r *raft.RequestPreVoteResponse) error {
	d := decoder{b: b}
	v := raft.RequestPreVoteResponse{RPCHeader: d.header()}
	v.Term = d.uvarint("term")
	v.Granted = d.flags("flags", 1)&1 != 0
	if err := d.finish(); err != nil {
		return fmt.Errorf("request pre-vote response: %w", err)
	}
	*r = v
	return nil
}

func decodeInstallSnapshotRequest(b []byte) (*raft.InstallSnapshotRequest, error) {
	d := decoder{b: b}
	r := &raft.InstallSnapshotRequest{RPCHeader: d.header()}
	r.SnapshotVersion = raft.SnapshotVersion(d.varint("snapshot version"))
	r.Term = d.uvarint("term")
	r.Leader = d.bytes("leader")
	r.LastLogIndex = d.uvarint("last log index")
	r.LastLogTerm = d.uvarint("last log term")
	r.Peers = d.bytes("peers")
	r.Configuration = d.bytes("configuration")
	r.ConfigurationIndex = d.uvarint("configuration index")
	r.Size = d.varint("size")
	if d.err == nil && r.Size < 0 {
		d.fail("negative size")
	}
	if err := d.finish(); err != nil {
		return nil, fmt.Errorf("install snapshot request: %w", err)
	}
	return r, nil
}

func decodeInstallSnapshotResponse(b []byte, r *raft.InstallSnapshotResponse) error {
	d := decoder{b: b}
	v := raft.InstallSnapshotResponse{RPCHeader: d.header()}
	v.Term = d.uvarint("term")
	v.Success = d.flags("flags", 1)&1 != 0
	if err := d.finish(); err != nil {
		return fmt.Errorf("install snapshot response: %w", err)
	}
	*r = v
	return nil
}

func decodeTimeoutNowRequest(b []byte) (*raft.TimeoutNowRequest, error) {
	d := decoder{b: b}
	r := &raft.TimeoutNowRequest{RPCHeader: d.header()}
	if err := d.finish(); err != nil {
		return nil, fmt.Errorf("timeout now request: %w", err)
	}
	return r, nil
}

func decodeTimeoutNowResponse(b []byte, r *raft.TimeoutNowResponse) error {
	d := decoder{b: b}
	v := raft.TimeoutNowResponse{RPCHeader: d.header()}
	if err := d.finish(); err != nil {
		return fmt.Errorf("timeout now response: %w", err)
	}
	*r = v
	return nil
}

// decodeRequest decodes the body of a request frame of the given type into
// the command raft expects in raft.RPC.Command.
func decodeRequest(typ uint8, body []byte) (any, error) {
	switch typ {
	case typeAppendEntries:
		return decodeAppendEntriesRequest(body)
	case typeRequestVote:
		return decodeRequestVoteRequest(body)
	case typeRequestPreVote:
		return decodeRequestPreVoteRequest(body)
	case typeInstallSnapshot:
		return decodeInstallSnapshotRequest(body)
	case typeTimeoutNow:
		return decodeTimeoutNowRequest(body)
	case typeHeartbeats:
		return decodeHeartbeatsRequest(body)
	default:
		return nil, fmt.Errorf("%w: unknown rpc type %d", ErrMalformed, typ)
	}
}

// appendResponse encodes the response raft produced for a request of type
// typ. A response of the wrong type is an error, not a garbled body.
func appendResponse(b []byte, typ uint8, resp any) ([]byte, error) {
	switch r := resp.(type) {
	case *raft.AppendEntriesResponse:
		if typ == typeAppendEntries {
			return appendAppendEntriesResponse(b, r), nil
		}
	case *raft.RequestVoteResponse:
		if typ == typeRequestVote {
			return appendRequestVoteResponse(b, r), nil
		}
	case *raft.RequestPreVoteResponse:
		if typ == typeRequestPreVote {
			return appendRequestPreVoteResponse(b, r), nil
		}
	case *raft.InstallSnapshotResponse:
		if typ == typeInstallSnapshot {
			return appendInstallSnapshotResponse(b, r), nil
		}
	case *raft.TimeoutNowResponse:
		if typ == typeTimeoutNow {
			return appendTimeoutNowResponse(b, r), nil
		}
	case heartbeatsResponse:
		if typ == typeHeartbeats {
			return append(b, r...), nil
		}
	}
	return b, fmt.Errorf("transport: response %T does not answer rpc type %d", resp, typ)
}

// isHeartbeat is NetworkTransport's fast-path condition
// (net_transport.go:handleCommand), matching what replication.go:heartbeat
// sends: a term and a leader address and nothing else.
func isHeartbeat(r *raft.AppendEntriesRequest) bool {
	leader := r.Addr
	if len(leader) == 0 {
		leader = r.Leader
	}
	return r.Term != 0 && len(leader) != 0 &&
		r.PrevLogEntry == 0 && r.PrevLogTerm == 0 &&
		len(r.Entries) == 0 && r.LeaderCommitIndex == 0
}
