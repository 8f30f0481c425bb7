package cluster

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/shardnet/shardnet/chunk"
)

// Resumable uploads (docs/api.md "Resumable uploads", tus-style): an
// upload is created with its path and length, then its bytes are sent in
// one or more requests, each starting at the upload's offset, the bytes
// held durably so far. Only whole chunks count: a request that ends
// mid-chunk (a connection lost) leaves the offset at the last chunk a
// majority of the replicas stored, and the client sends again from there.
// The upload lives on the node it was created on, for uploadIdle (or the
// chunk collector's grace period, if shorter) after its last request.
//
// Its state (chunk ids, holders, the running sha256) is in memory and in a
// record on disk (uploadstore.go), written with fsync before a request's
// answer tells the client its offset: a node that restarts, even after
// kill -9, loads the records of the uploads still within their idle time,
// pins their chunks in its store again before its collector runs, and the
// clients go on from the offsets they were told. The replicas are found
// again at the first request after the restart: those the record names
// as holders of every chunk still are; any other (a replica added
// meanwhile) is not, and a file whose holders are no longer a majority
// cannot be resumed.

// Limits of resumable uploads per node.
const (
	maxUploads = 256
	uploadIdle = time.Hour
)

var (
	// ErrUploadNotFound: no upload with that id on this node (it expired,
	// completed or was aborted).
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
	gid    uint64 // the channel's group when the upload was created
	// loaded holds the holders its record named, for an upload loaded
	// after a restart whose replicas are not known again yet (resume);
	// ready is set once they are (or for an upload created here).
	loaded []string
	ready  bool
}

// uploadTable holds a node's open uploads.
type uploadTable struct {
	mu sync.Mutex
	m  map[string]*resumable
	// idle is how long an upload lives after its last request:
	// uploadIdle, or the chunk collector's grace period if shorter, past
	// which the replicas no longer hold the chunks it sent them
	// (collector.go: chunkLeases).
	idle  time.Duration
	store uploadStore
	log   hclog.Logger
}

func (t *uploadTable) idleLimit() time.Duration {
	if t.idle > 0 && t.idle < uploadIdle {
		return t.idle
	}
	return uploadIdle
}

func (t *uploadTable) get(channel, id string) (*resumable, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.expireLocked(time.Now())
	r, ok := t.m[id]
	if !ok || r.u.channel != channel {
		return nil, fmt.Errorf("%w: %q", ErrUploadNotFound, id)
	}
	return r, nil
}

// remove ends upload id: its record and its pins go.
func (t *uploadTable) remove(id string) {
	t.mu.Lock()
	r := t.m[id]
	delete(t.m, id)
	t.mu.Unlock()
	if r != nil {
		t.drop(r)
	}
}

// drop deletes r's record, then releases its pins: a record that outlived
// its pins would protect nothing after a restart.
func (t *uploadTable) drop(r *resumable) {
	if err := t.store.remove(r.id); err != nil {
		t.log.Warn("cannot remove the record of an upload", "upload", r.id, "error", err)
	}
	r.u.release()
}

// expire drops the uploads idle for longer than idleLimit.
func (t *uploadTable) expire(now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.expireLocked(now)
}

// expireLocked drops uploads idle for longer than idleLimit (under t.mu).
func (t *uploadTable) expireLocked(now time.Time) {
	for id, r := range t.m {
		if r.mu.TryLock() {
			if now.Sub(r.last) > t.idleLimit() {
				delete(t.m, id)
				t.drop(r)
				t.log.Debug("resumable upload expired", "upload", id, "channel", r.u.channel, "path", r.u.path)
			}
			r.mu.Unlock()
		}
	}
}

// record is r's state as its record keeps it; under r.mu.
func (r *resumable) record(now time.Time) (*uploadRecord, error) {
	sum, err := r.u.sum.(encoding.BinaryMarshaler).MarshalBinary()
	if err != nil {
		return nil, fmt.Errorf("cluster: upload %s: %w", r.id, err)
	}
	holders := r.loaded
	if r.ready {
		holders = r.u.holders()
	}
	return &uploadRecord{
		ID: r.id, Channel: r.u.channel, Path: r.u.path, GroupID: r.gid,
		Length: r.length, ChunkSize: r.u.chunkSize, ContentType: r.opts.ContentType,
		SHA256: r.opts.SHA256, Cond: r.opts.Cond, Match: r.opts.Match,
		Size: r.u.size, Sum: sum, IDs: r.u.ids, Holders: holders, Last: now,
	}, nil
}

// save writes r's record durably; under r.mu.
func (t *uploadTable) save(r *resumable) error {
	rec, err := r.record(time.Now())
	if err != nil {
		return err
	}
	return t.store.save(rec)
}

// loadUploads restores the uploads whose records a previous run of the
// node left, before the collector's first round: their chunks are pinned
// again here, and those idle for longer than idleLimit are dropped (the
// replicas let their chunks go).
func (n *Node) loadUploads() error {
	t := &n.uploads
	recs, dropped, err := t.store.load()
	if err != nil {
		return err
	}
	for _, d := range dropped {
		n.log.Warn("removed an upload record that cannot be read", "record", d)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.m == nil {
		t.m = map[string]*resumable{}
	}
	now := time.Now()
	for _, rec := range recs {
		sum := sha256.New()
		err := sum.(encoding.BinaryUnmarshaler).UnmarshalBinary(rec.Sum)
		switch {
		case err != nil:
			n.log.Warn("removed an upload record that cannot be read", "upload", rec.ID, "error", err)
		case now.Sub(rec.Last) > t.idleLimit():
			n.log.Info("resumable upload expired while the node was down", "upload", rec.ID, "channel", rec.Channel, "path", rec.Path)
		case len(t.m) >= maxUploads:
			n.log.Warn("resumable upload dropped: too many open uploads", "upload", rec.ID)
		default:
			u := &upload{channel: rec.Channel, path: rec.Path, chunkSize: rec.ChunkSize, sum: sum, ids: rec.IDs, size: rec.Size}
			for _, id := range rec.IDs {
				u.releases = append(u.releases, n.chunks.Pin(chunk.ID(id)))
			}
			t.m[rec.ID] = &resumable{
				id: rec.ID, u: u, length: rec.Length, last: rec.Last, gid: rec.GroupID, loaded: rec.Holders,
				opts: PutFileOptions{Size: rec.Length, ContentType: rec.ContentType, SHA256: rec.SHA256, Cond: rec.Cond, Match: rec.Match},
			}
			continue
		}
		if err := t.store.remove(rec.ID); err != nil {
			return err
		}
	}
	if len(t.m) > 0 {
		n.log.Info("resumable uploads restored", "uploads", len(t.m))
	}
	return nil
}

// resume finds the replicas of an upload loaded after a restart: those its
// record names as holders hold its chunks; under r.mu.
func (n *Node) resume(ctx context.Context, r *resumable) error {
	ch, targets, err := n.fileTargets(ctx, r.u.channel)
	if errors.Is(err, ErrChannelNotFound) || err == nil && ch.GroupID != r.gid {
		return fmt.Errorf("%w: %q: its channel %q was deleted", ErrUploadNotFound, r.id, r.u.channel)
	}
	if err != nil {
		return err
	}
	held := map[string]bool{}
	for _, h := range r.loaded {
		held[h] = true
	}
	for _, t := range targets {
		if !held[t.serverID] {
			e := fmt.Errorf("replica %s on %s did not hold every chunk of the upload before the node restarted", t.serverID, t.nodeID)
			t.err.Store(&e)
			t.failed.Store(true)
		}
	}
	r.u.ch, r.u.targets = ch, targets
	r.loaded, r.ready = nil, true
	return nil
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
	r := &resumable{id: hex.EncodeToString(b[:]), u: u, length: length, opts: opts, last: time.Now(), gid: u.ch.GroupID, ready: true}
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
	// Recorded before its id is told: a client that got one can resume
	// it after a restart.
	if err := t.save(r); err != nil {
		return UploadState{}, err
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
// (and returns its error). The offset returned is on disk (uploadstore.go).
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
	// Idle from the end of the request: the replicas' leases on its
	// chunks run from the last chunk they received.
	defer func() { r.last = time.Now() }()
	st := UploadState{ID: id, Channel: channel, Path: r.u.path, Length: r.length, Offset: r.u.size}
	if offset != r.u.size {
		return st, nil, fmt.Errorf("%w: the upload is at %d, the request starts at %d", ErrUploadOffset, r.u.size, offset)
	}
	if !r.ready {
		if err := n.resume(ctx, r); err != nil {
			if errors.Is(err, ErrUploadNotFound) {
				n.uploads.remove(id)
			}
			return st, nil, err
		}
	}
	// The record's holders as they were on disk: a check or a request
	// that fails a holder rewrites it.
	recorded := len(r.u.holders())
	// A client that leaves does not make the replicas fail the check.
	n.checkHolders(context.WithoutCancel(ctx), r.u) // uploadholders.go
	if err := r.u.holdersErr(); err != nil {
		n.uploads.remove(id) // no majority holds its chunks any more
		return st, nil, err
	}
	before := r.u.size
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
	if err != nil && r.u.holdersErr() != nil {
		n.uploads.remove(id) // no majority can hold it any more
		return st, nil, err
	}
	if r.u.size != before || len(r.u.holders()) != recorded {
		// The new offset is told only once it is on disk.
		if serr := n.uploads.save(r); serr != nil {
			n.uploads.remove(id)
			return st, nil, errors.Join(err, serr)
		}
	}
	if err != nil {
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
