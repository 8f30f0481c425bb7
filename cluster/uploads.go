package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"
)

// Resumable uploads (docs/api.md "Resumable uploads", tus-style): an
// upload is created with its path and length, then its bytes are sent in
// one or more requests, each starting at the upload's offset, the bytes
// held durably so far. Only whole chunks count: a request that ends
// mid-chunk (a connection lost) leaves the offset at the last chunk every
// holder stored, and the client sends again from there. The upload's state
// (chunk ids, holders, the running sha256) lives in the memory of the node
// it was created on, for uploadIdle after its last request: a client
// resumes there, and after a restart of that node starts again (the
// chunks already stored are not sent twice to a store, which keeps one
// copy of equal chunks, but are sent over the network again).

// Limits of resumable uploads per node.
const (
	maxUploads = 256
	uploadIdle = time.Hour
)

var (
	// ErrUploadNotFound: no upload with that id on this node (it expired,
	// completed, was aborted, or the node restarted).
	ErrUploadNotFound = errors.New("cluster: no such upload on this node")
	// ErrUploadOffset: a request's offset is not the upload's.
	ErrUploadOffset = errors.New("cluster: upload offset mismatch")
	// ErrTooManyUploads: the node holds maxUploads open uploads.
	ErrTooManyUploads = errors.New("cluster: too many open uploads on this node")
)

// UploadState describes a resumable upload.
type UploadState struct {
	ID, Channel, Path string
	Offset, Length    int64
}

// resumable is one open upload.
type resumable struct {
	mu     sync.Mutex // one request at a time
	id     string
	u      *upload
	length int64
	opts   PutFileOptions
	last   time.Time
}

// uploadTable holds a node's open uploads.
type uploadTable struct {
	mu sync.Mutex
	m  map[string]*resumable
}

func (t *uploadTable) get(channel, id string) (*resumable, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	r, ok := t.m[id]
	if !ok || r.u.channel != channel {
		return nil, fmt.Errorf("%w: %q", ErrUploadNotFound, id)
	}
	return r, nil
}

func (t *uploadTable) remove(id string) {
	t.mu.Lock()
	r := t.m[id]
	delete(t.m, id)
	t.mu.Unlock()
	if r != nil {
		r.u.release()
	}
}

// expire drops uploads idle for longer than uploadIdle (under t.mu).
func (t *uploadTable) expireLocked(now time.Time) {
	for id, r := range t.m {
		if r.mu.TryLock() {
			if now.Sub(r.last) > uploadIdle {
				delete(t.m, id)
				r.u.release()
			}
			r.mu.Unlock()
		}
	}
}

// CreateUpload opens a resumable upload of length bytes as path of
// channel; opts' Size is ignored (length is the size), its checks run when
// the last byte is in.
func (n *Node) CreateUpload(ctx context.Context, channel, path string, length int64, opts PutFileOptions) (UploadState, error) {
	if length < 0 {
		return UploadState{}, fmt.Errorf("%w: a resumable upload needs its length", ErrInvalidRequest)
	}
	if opts.Check != nil {
		return UploadState{}, fmt.Errorf("%w: no body checks on a resumable upload but its sha256", ErrInvalidRequest)
	}
	u, err := n.newUpload(ctx, channel, path)
	if err != nil {
		return UploadState{}, err
	}
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return UploadState{}, err
	}
	opts.Size = length
	r := &resumable{id: hex.EncodeToString(b[:]), u: u, length: length, opts: opts, last: time.Now()}
	t := &n.uploads
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.m == nil {
		t.m = map[string]*resumable{}
	}
	t.expireLocked(time.Now())
	if len(t.m) >= maxUploads {
		return UploadState{}, fmt.Errorf("%w (%d)", ErrTooManyUploads, maxUploads)
	}
	t.m[r.id] = r
	return UploadState{ID: r.id, Channel: channel, Path: path, Length: length}, nil
}

// Upload describes an open upload.
func (n *Node) Upload(channel, id string) (UploadState, error) {
	r, err := n.uploads.get(channel, id)
	if err != nil {
		return UploadState{}, err
	}
	if !r.mu.TryLock() {
		return UploadState{}, fmt.Errorf("%w: a request of upload %s is running", ErrUploadOffset, id)
	}
	defer r.mu.Unlock()
	return UploadState{ID: id, Channel: channel, Path: r.u.path, Offset: r.u.size, Length: r.length}, nil
}

// AppendUpload sends body, the upload's bytes from offset on. It returns
// the new offset, and the committed file once the last byte is in. A
// request cut short still moves the offset to the last whole chunk stored
// (and returns its error).
func (n *Node) AppendUpload(ctx context.Context, channel, id string, offset int64, body io.Reader) (UploadState, *FilePut, error) {
	r, err := n.uploads.get(channel, id)
	if err != nil {
		return UploadState{}, nil, err
	}
	if !r.mu.TryLock() {
		return UploadState{}, nil, fmt.Errorf("%w: another request of upload %s is running", ErrUploadOffset, id)
	}
	defer r.mu.Unlock()
	r.last = time.Now()
	st := UploadState{ID: id, Channel: channel, Path: r.u.path, Length: r.length}
	if offset != r.u.size {
		st.Offset = r.u.size
		return st, nil, fmt.Errorf("%w: the upload is at %d, the request starts at %d", ErrUploadOffset, r.u.size, offset)
	}
	left := r.length - r.u.size
	lr := &io.LimitedReader{R: body, N: left + 1}
	// The chunks read whole are stored even if the client leaves
	// mid-request (its request's context ends): that is what it resumes
	// from. Each chunk call has its own deadline.
	_, err = n.sendChunks(context.WithoutCancel(ctx), r.u, lr, false, r.length)
	st.Offset = r.u.size
	if err == nil && lr.N == 0 {
		err = fmt.Errorf("%w: more bytes than the upload's length %d", ErrUploadMismatch, r.length)
	}
	if err != nil {
		if r.u.holdersErr() != nil {
			n.uploads.remove(id) // no majority can hold it any more
		}
		return st, nil, err
	}
	if r.u.size < r.length {
		return st, nil, nil
	}
	res, err := n.commitUpload(ctx, r.u, r.opts)
	if err == nil || !errors.Is(err, ErrUnreachable) {
		n.uploads.remove(id)
	}
	if err != nil {
		return st, nil, err
	}
	return st, &res, nil
}

// AbortUpload drops an open upload (its chunks stay unreferenced).
func (n *Node) AbortUpload(channel, id string) error {
	if _, err := n.uploads.get(channel, id); err != nil {
		return err
	}
	n.uploads.remove(id)
	return nil
}
