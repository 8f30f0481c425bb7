package server

import (
	"errors"
	"io"
	"net/http"
	"sync"
)

// Read-ahead for downloads. A file download reads each block of a chunk,
// checks it (chunk.Reader.Verified) and writes it to the client: done in
// turn by one goroutine, the checking and the socket writes added up.
// readAhead moves the reading and checking one or two blocks ahead into a
// goroutine of its own, so that it runs beside the writes on another core.
// Small reads (a Range of a few bytes, the first MiB of anything) are
// served directly and start no goroutine. And its blocks go to the socket
// whole, from the buffer they were read and checked in (writeTo, through
// bulkWriter): http.ServeContent's io.CopyN would otherwise copy them once
// more, into 32 KiB pieces, one write system call each.
const (
	aheadBlock = 1 << 20 // bytes read and checked at a time ahead
	aheadDepth = 2       // blocks ready ahead of the writer
	aheadAfter = 1 << 20 // bytes read directly after a seek before reading ahead
)

var aheadPool = sync.Pool{New: func() any { b := make([]byte, aheadBlock); return &b }}

// readAhead is an io.ReadSeeker over src (size bytes) for
// http.ServeContent. src is only ever used by one goroutine at a time:
// directly by Read until aheadAfter bytes were read since the last seek,
// then by the read-ahead goroutine alone until Seek or Close stops it.
type readAhead struct {
	src    io.ReaderAt
	size   int64
	off    int64 // the next byte Read returns
	direct int64 // bytes read directly since the last seek

	blocks chan filled // from the goroutine, in order; nil while none runs
	stop   chan struct{}
	done   chan struct{}
	cur    []byte  // the unread part of the block in hand
	curp   *[]byte // its buffer
	err    error   // what follows cur: the goroutine's error, or io.EOF
}

type filled struct {
	bp  *[]byte
	n   int
	err error
}

func newReadAhead(src io.ReaderAt, size int64) *readAhead {
	return &readAhead{src: src, size: size}
}

// Read implements io.Reader.
func (r *readAhead) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if len(r.cur) == 0 && r.blocks == nil && r.off < r.size && r.direct < aheadAfter {
		// Straight into p: no goroutine, no copy.
		n, err := r.src.ReadAt(p[:min(int64(len(p)), r.size-r.off)], r.off)
		r.off += int64(n)
		r.direct += int64(n)
		if n > 0 && errors.Is(err, io.EOF) {
			err = nil // the next Read says EOF
		}
		return n, err
	}
	if err := r.fill(int64(len(p))); err != nil {
		return 0, err
	}
	n := copy(p, r.cur)
	r.advance(n)
	return n, nil
}

// writeTo writes the next n bytes (fewer if the file ends first) to w, each
// block in one Write from the buffer it was checked in.
func (r *readAhead) writeTo(w io.Writer, n int64) (int64, error) {
	var written int64
	for written < n {
		if err := r.fill(n - written); err != nil {
			if err == io.EOF {
				break
			}
			return written, err
		}
		m, err := w.Write(r.cur[:min(int64(len(r.cur)), n-written)])
		r.advance(m)
		written += int64(m)
		if err != nil {
			return written, err
		}
	}
	return written, nil
}

// fill makes r.cur hold the next bytes, unless it does already: read
// directly (at most want bytes) until aheadAfter bytes were read since the
// last seek, then from the read-ahead goroutine's blocks. It returns what
// stops it: io.EOF at the end, or the source's error after the bytes
// before it.
func (r *readAhead) fill(want int64) error {
	if len(r.cur) > 0 {
		return nil
	}
	if r.blocks == nil {
		if r.off >= r.size {
			return io.EOF
		}
		if r.direct < aheadAfter {
			r.release()
			bp := aheadPool.Get().(*[]byte)
			k := min(int64(len(*bp)), want, r.size-r.off, aheadAfter-r.direct)
			n, err := r.src.ReadAt((*bp)[:k], r.off)
			r.direct += int64(n)
			r.cur, r.curp = (*bp)[:n], bp
			if n > 0 {
				return nil // an error comes again on the next read
			}
			if err == nil || errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF // the source is shorter than it said
			}
			return err
		}
		r.start()
	}
	for len(r.cur) == 0 {
		if r.err != nil {
			return r.err
		}
		r.release()
		b, ok := <-r.blocks
		if !ok {
			r.err = io.EOF
			continue
		}
		r.cur, r.curp, r.err = (*b.bp)[:b.n], b.bp, b.err
	}
	return nil
}

// advance consumes n bytes of r.cur.
func (r *readAhead) advance(n int) {
	r.cur = r.cur[n:]
	r.off += int64(n)
}

// start runs the read-ahead goroutine from r.off.
func (r *readAhead) start() {
	r.blocks = make(chan filled, aheadDepth)
	r.stop = make(chan struct{})
	r.done = make(chan struct{})
	go r.run(r.off, r.blocks, r.stop, r.done)
}

func (r *readAhead) run(off int64, blocks chan<- filled, stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	defer close(blocks)
	for off < r.size {
		bp := aheadPool.Get().(*[]byte)
		n, err := r.src.ReadAt((*bp)[:min(int64(aheadBlock), r.size-off)], off)
		off += int64(n)
		if errors.Is(err, io.EOF) && off >= r.size {
			err = nil // the channel's close says it
		}
		select {
		case blocks <- filled{bp: bp, n: n, err: err}:
		case <-stop:
			aheadPool.Put(bp)
			return
		}
		if err != nil {
			return
		}
	}
}

// halt stops the goroutine, if one runs, and gives back its buffers.
func (r *readAhead) halt() {
	r.release()
	r.cur, r.err = nil, nil
	if r.blocks == nil {
		return
	}
	close(r.stop)
	<-r.done
	for b := range r.blocks {
		aheadPool.Put(b.bp)
	}
	r.blocks = nil
}

func (r *readAhead) release() {
	if r.curp != nil {
		aheadPool.Put(r.curp)
		r.curp, r.cur = nil, nil
	}
}

// Seek implements io.Seeker.
func (r *readAhead) Seek(offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += r.off
	case io.SeekEnd:
		offset += r.size
	default:
		return 0, errors.New("server: seek: bad whence")
	}
	if offset < 0 {
		return 0, errors.New("server: seek: negative offset")
	}
	if offset != r.off || r.blocks == nil {
		r.halt()
		r.direct = 0
	}
	r.off = offset
	return offset, nil
}

// Close stops the read-ahead; src is the caller's to close after it.
func (r *readAhead) Close() error {
	r.halt()
	return nil
}

// bulkWriter is the http.ResponseWriter http.ServeContent writes a
// readAhead to. Its ReadFrom, which io.CopyN calls, hands the readAhead's
// blocks to the response whole (readAhead.writeTo), where net/http's own
// copy would go through a 32 KiB buffer; any other source (a multipart
// response's pipe) is copied as usual.
type bulkWriter struct {
	http.ResponseWriter
}

func (b bulkWriter) ReadFrom(src io.Reader) (int64, error) {
	if lr, ok := src.(*io.LimitedReader); ok {
		if ra, ok := lr.R.(*readAhead); ok {
			n, err := ra.writeTo(b.ResponseWriter, lr.N)
			lr.N -= n
			return n, err
		}
	}
	return io.Copy(struct{ io.Writer }{b.ResponseWriter}, src)
}
