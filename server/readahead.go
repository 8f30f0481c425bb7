package server

import (
	"errors"
	"io"
	"sync"
)

// Read-ahead for downloads. A file download reads each block of a chunk,
// checks it against the chunk's id (SHA-256) and writes it to the client:
// done in turn by one goroutine, the hashing and the socket writes added up
// (a 1 GiB download through one node: half the CPU in SHA-256, a third in
// write system calls, ~800 MiB/s). readAhead moves the reading and
// checking one or two blocks ahead into a goroutine of its own, so that it
// runs beside the writes on another core. Small reads (a Range of a few
// bytes, the first MiB of anything) are served directly and start no
// goroutine.
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
	if r.blocks == nil {
		if r.off >= r.size {
			return 0, io.EOF
		}
		if r.direct < aheadAfter {
			n, err := r.src.ReadAt(p[:min(int64(len(p)), r.size-r.off)], r.off)
			r.off += int64(n)
			r.direct += int64(n)
			if n > 0 && errors.Is(err, io.EOF) {
				err = nil // the next Read says EOF
			}
			return n, err
		}
		r.start()
	}
	for len(r.cur) == 0 {
		if r.err != nil {
			return 0, r.err
		}
		r.release()
		b, ok := <-r.blocks
		if !ok {
			r.err = io.EOF
			continue
		}
		r.cur, r.curp, r.err = (*b.bp)[:b.n], b.bp, b.err
	}
	n := copy(p, r.cur)
	r.cur = r.cur[n:]
	r.off += int64(n)
	return n, nil
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
