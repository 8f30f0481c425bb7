package transport

import (
	"encoding/binary"
	"fmt"
	"io"
	"sync"
)

// Framing on a yamux stream.
//
// The first byte written on a new stream says what it carries:
//
//	kindRPC       request/response frames, one outstanding request at a time
//	              (or many, in order, on a pipeline stream)
//	kindSnapshot  one InstallSnapshot: request frame, go-ahead response,
//	              exactly Size bytes of snapshot data, final response
//	kindApp       an opaque byte stream handed to Node.AppListener
//	kindCall      an opaque byte stream handed to Node.CallListener (the
//	              application's own compact node-to-node calls)
//
// Request frame:  gid u64 BE | rpc type u8 | body length u32 BE | body (codec.go)
// Response frame: status u8 (0 ok, 1 error) | length u32 BE | body or error text
const (
	kindRPC      byte = 1
	kindSnapshot byte = 2
	kindApp      byte = 3
	kindCall     byte = 4

	statusOK  byte = 0
	statusErr byte = 1

	reqHeaderSize  = 8 + 1 + 4
	respHeaderSize = 1 + 4

	// maxFrameSize bounds one frame body. 64 entries of 1 MiB values are
	// 64 MiB; the bound only stops a corrupt length from reading forever.
	maxFrameSize = 512 << 20

	// writeChunk bounds one yamux data frame. All streams to a peer share one
	// TCP connection; a heartbeat frame waits behind at most one chunk per
	// concurrently writing stream, so chunks are kept small.
	writeChunk = 64 << 10

	// eagerAlloc is how much of a frame body is allocated before its bytes
	// arrive; larger bodies grow as they are read, so a corrupt length
	// costs memory only for data that really came.
	eagerAlloc = 1 << 20

	// maxPooledBuf: encode buffers larger than this are left to the GC
	// rather than kept in the pool.
	maxPooledBuf = 1 << 20

	// shrinkAfter: after reading a frame body larger than this, the stream
	// gives yamux's receive buffer back, so an idle pooled stream does not
	// hold the memory of the largest frame it ever carried. Smaller frames
	// keep it: reallocating it costs three allocations per frame.
	shrinkAfter = 32 << 10
)

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

func getBuf() *[]byte { return bufPool.Get().(*[]byte) }

func putBuf(b *[]byte, grown []byte) {
	if cap(grown) > maxPooledBuf {
		return
	}
	*b = grown[:0]
	bufPool.Put(b)
}

// appendRequestHeader starts a request frame; finishRequest patches the body
// length once the body is appended.
func appendRequestHeader(b []byte, gid uint64, typ uint8) []byte {
	b = binary.BigEndian.AppendUint64(b, gid)
	b = append(b, typ)
	return append(b, 0, 0, 0, 0)
}

// finishRequest patches the length of the frame whose header starts at off.
func finishRequest(b []byte, off int) error {
	n := len(b) - off - reqHeaderSize
	if n > maxFrameSize {
		return fmt.Errorf("request of %d bytes exceeds the %d byte frame limit", n, maxFrameSize)
	}
	binary.BigEndian.PutUint32(b[off+9:], uint32(n))
	return nil
}

func appendResponseHeader(b []byte, status byte) []byte {
	return append(b, status, 0, 0, 0, 0)
}

func finishResponse(b []byte, off int) {
	binary.BigEndian.PutUint32(b[off+1:], uint32(len(b)-off-respHeaderSize))
}

// writeChunked writes b in pieces of at most writeChunk bytes (see writeChunk).
func writeChunked(w io.Writer, b []byte) error {
	for len(b) > 0 {
		n := min(len(b), writeChunk)
		if _, err := w.Write(b[:n]); err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}

// readBody reads an n-byte frame body. Bodies up to eagerAlloc are read into
// one allocation; larger ones grow with the data actually received.
func readBody(r io.Reader, n uint32) ([]byte, error) {
	if n > maxFrameSize {
		return nil, fmt.Errorf("%w: frame of %d bytes exceeds the %d byte limit", ErrMalformed, n, maxFrameSize)
	}
	if n <= eagerAlloc {
		b := make([]byte, n)
		if _, err := io.ReadFull(r, b); err != nil {
			return nil, err
		}
		return b, nil
	}
	b := make([]byte, 0, eagerAlloc)
	for len(b) < int(n) {
		if len(b) == cap(b) {
			nb := make([]byte, len(b), min(2*cap(b), int(n)))
			copy(nb, b)
			b = nb
		}
		end := min(cap(b), int(n))
		m, err := io.ReadFull(r, b[len(b):end])
		b = b[:len(b)+m]
		if err != nil {
			return nil, err
		}
	}
	return b, nil
}

// readRequest reads one request frame. scratch (at least reqHeaderSize
// bytes) holds the header, so reading does not allocate one.
func readRequest(r io.Reader, scratch []byte) (gid uint64, typ uint8, body []byte, err error) {
	h := scratch[:reqHeaderSize]
	if _, err = io.ReadFull(r, h); err != nil {
		return 0, 0, nil, err
	}
	gid = binary.BigEndian.Uint64(h[:8])
	typ = h[8]
	body, err = readBody(r, binary.BigEndian.Uint32(h[9:]))
	return gid, typ, body, err
}

// readResponse reads one response frame into a new body; scratch (at least
// respHeaderSize bytes) holds the header. A remote error is returned as
// *RemoteError; err is then the only result.
func readResponse(r io.Reader, scratch []byte) ([]byte, error) {
	h := scratch[:respHeaderSize]
	if _, err := io.ReadFull(r, h); err != nil {
		return nil, err
	}
	body, err := readBody(r, binary.BigEndian.Uint32(h[1:]))
	if err != nil {
		return nil, err
	}
	switch h[0] {
	case statusOK:
		return body, nil
	case statusErr:
		return nil, &RemoteError{Msg: string(body)}
	default:
		return nil, fmt.Errorf("%w: response status %d", ErrMalformed, h[0])
	}
}

// RemoteError is an error the peer's transport or Raft group answered with,
// for example "transport: unknown group 7". The stream it came on is healthy.
type RemoteError struct{ Msg string }

func (e *RemoteError) Error() string { return e.Msg }
