package cluster

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/semaphore"

	"github.com/shardnet/shardnet/chunk"
	"github.com/shardnet/shardnet/fsm"
	"github.com/shardnet/shardnet/shard"
)

// Files in channels (docs/architecture.md "An upload: the chunks", fsm/DESIGN.md
// "Files"). Bulk data never enters a Raft log: the node an upload arrives
// at cuts the body into chunks, streams each one to every replica of the
// channel over the cluster connection (rcPutChunk calls, several chunks in
// flight), and once a majority of the replicas hold every chunk durably
// (chunk.Store.PutExpect syncs before it answers), proposes the manifest
// through the channel's leader. A crash before the manifest commits leaves
// only unreferenced chunks. Downloads read local chunks with verified reads
// and fetch a missing or corrupt one from a replica that holds it
// (rcGetChunk), checking it against its id.

// DefaultChunkSize is a file's chunk size unless its channel sets another
// (issue "Files in channels"; ChunkSizeOf).
const DefaultChunkSize = fsm.DefaultChunkSize

// ChunkSizeOf is the chunk size new files of channel ch are cut into: its
// setting (fsm.ChannelRecord.ChunkSize), else DefaultChunkSize. A file
// keeps the chunk size it was uploaded with (its manifest records it).
func ChunkSizeOf(ch fsm.ChannelRecord) int64 {
	if ch.ChunkSize > 0 {
		return int64(ch.ChunkSize)
	}
	return DefaultChunkSize
}

// uploadPipeline is how many chunks of one upload are in flight at once:
// each holds a chunk-sized buffer, so an upload takes at most this many
// chunks of memory, whatever the file's size.
const uploadPipeline = 4

// uploadMemoryBytes bounds the chunk buffers of all the uploads a node
// receives at once, together: without it each upload holds up to
// uploadPipeline chunks, so 16 concurrent uploads took 256 MiB of buffers
// and the node's heap grew by 600 MiB (docs/benchmarks.md "1 GiB files at
// 16 clients"). 32 chunks of the default 4 MiB; a chunk larger than the
// budget (none: chunks are at most 64 MiB) would take it whole.
const uploadMemoryBytes = 128 << 20

// uploadMemory is a node's budget of upload buffer bytes (the zero value
// is ready to use): an upload takes a chunk's worth before it reads the
// chunk from its client and gives it back once the chunk is replicated,
// so uploads beyond the budget wait (their clients see slower progress,
// not errors) while the disk, their real limit, stays as busy.
type uploadMemory struct {
	once  sync.Once
	sem   *semaphore.Weighted
	gauge prometheus.Gauge // nil: none (set by New)
}

func (m *uploadMemory) weight(n int64) int64 { return min(n, uploadMemoryBytes) }

// acquire takes n bytes of the budget, waiting until they are free or ctx
// ends.
func (m *uploadMemory) acquire(ctx context.Context, n int64) error {
	m.once.Do(func() { m.sem = semaphore.NewWeighted(uploadMemoryBytes) })
	if err := m.sem.Acquire(ctx, m.weight(n)); err != nil {
		return err
	}
	if m.gauge != nil {
		m.gauge.Add(float64(m.weight(n)))
	}
	return nil
}

// release gives back n bytes taken by acquire.
func (m *uploadMemory) release(n int64) {
	if m.gauge != nil {
		m.gauge.Sub(float64(m.weight(n)))
	}
	m.sem.Release(m.weight(n))
}

// chunkCallTimeout bounds one chunk's transfer to or from one replica.
const chunkCallTimeout = 2 * time.Minute

// Errors of file transfers.
var (
	// ErrNotEnoughHolders: fewer than a majority of the channel's
	// replicas stored every chunk; no manifest was proposed.
	ErrNotEnoughHolders = errors.New("cluster: too few replicas stored the file's chunks")
	// ErrUploadMismatch: the body did not match what its request
	// declared (length or checksum); no manifest was proposed.
	ErrUploadMismatch = errors.New("cluster: upload does not match its declared length or checksum")
	// ErrChunkUnavailable: no replica could serve a chunk a file needs.
	ErrChunkUnavailable = errors.New("cluster: no replica could serve a chunk of the file")
)

// PutFileOptions are an upload's declared properties and conditions.
type PutFileOptions struct {
	// Size is the body's declared length; -1 when unknown.
	Size        int64
	ContentType string
	// SHA256, when set, is the digest the body must have.
	SHA256 *[32]byte
	// Check, when set, runs once the whole body is read and before the
	// manifest is proposed (the server checks a Content-MD5 there).
	Check func() error
	// Cond and Match are the upload's condition (fsm.CondAbsent for
	// If-None-Match: *, fsm.CondMatch with the sha256 for If-Match).
	Cond  byte
	Match [32]byte
}

// FilePut is an upload's outcome.
type FilePut struct {
	Path   string
	Size   int64
	SHA256 [32]byte
	Chunks int
	Index  uint64
}

// fileTarget is one replica of a channel an upload sends chunks to.
type fileTarget struct {
	nodeID, serverID, addr string
	self                   bool
	failed                 atomic.Bool
	err                    atomic.Pointer[error]
}

// fileTargets returns the channel's record and its replicas.
func (n *Node) fileTargets(ctx context.Context, channel string) (fsm.ChannelRecord, []*fileTarget, error) {
	if err := n.metaSound(); err != nil {
		return fsm.ChannelRecord{}, nil, err
	}
	ch, ok := n.meta.fsm.Channel(channel)
	if !ok {
		if err := n.metaSync(ctx); err != nil {
			return ch, nil, fmt.Errorf("%w (channel %q is not known here yet)", err, channel)
		}
		if ch, ok = n.meta.fsm.Channel(channel); !ok {
			return ch, nil, fmt.Errorf("%w: %q", ErrChannelNotFound, channel)
		}
	}
	var ts []*fileTarget
	for _, r := range ch.Placement {
		t := &fileTarget{nodeID: r.NodeID, serverID: r.ServerID, self: r.NodeID == n.cfg.Name}
		if nd, ok := n.meta.fsm.Node(r.NodeID); ok {
			t.addr = nd.ClusterAddr
		}
		ts = append(ts, t)
	}
	return ch, ts, nil
}

// chunkPools hold chunk buffers, one pool per chunk size (a few sizes
// are in use at once: the channels' settings).
var chunkPools sync.Map // int → *sync.Pool of *[]byte

// chunkBuf returns a buffer of size bytes (a chunk's), from its pool.
func chunkBuf(size int) *[]byte {
	p, _ := chunkPools.LoadOrStore(size, &sync.Pool{})
	if bp, ok := p.(*sync.Pool).Get().(*[]byte); ok {
		return bp
	}
	b := make([]byte, size)
	return &b
}

// freeChunkBuf gives a buffer of chunkBuf back to its pool.
func freeChunkBuf(bp *[]byte) {
	if p, ok := chunkPools.Load(len(*bp)); ok {
		p.(*sync.Pool).Put(bp)
	}
}

// upload is one file being uploaded: the chunks sent so far, the
// replicas that hold all of them, the running sha256. PutFile runs one
// from start to end; a resumable upload (uploads.go) keeps one between
// its requests.
type upload struct {
	channel, path string
	ch            fsm.ChannelRecord
	chunkSize     int64 // the channel's when the upload began
	targets       []*fileTarget
	sum           hash.Hash
	size          int64

	// ids and releases are appended to by sendChunks and filled in by
	// its chunk goroutines (each computes its chunk's id), under mu;
	// read without it once sendChunks returned.
	mu       sync.Mutex
	ids      [][32]byte
	releases []func() // pins held until the upload ends
}

func (n *Node) newUpload(ctx context.Context, channel, path string) (*upload, error) {
	if err := fsm.ValidatePath(path); err != nil {
		return nil, err
	}
	if err := fsm.CheckVersion(4, n.meta.fsm.ClusterVersion()); err != nil {
		return nil, fmt.Errorf("cluster: files: %w", err)
	}
	ch, targets, err := n.fileTargets(ctx, channel)
	if err != nil {
		return nil, err
	}
	return &upload{channel: channel, path: path, ch: ch, chunkSize: ChunkSizeOf(ch), targets: targets, sum: sha256.New()}, nil
}

// release drops the upload's pins.
func (u *upload) release() {
	for _, r := range u.releases {
		r()
	}
	u.releases = nil
}

// PutFile uploads body as path of channel: the whole upload path above.
// The body is read one chunk at a time; nothing is proposed unless the
// body is read whole, matches opts, and a majority of the replicas hold
// every chunk.
func (n *Node) PutFile(ctx context.Context, channel, path string, body io.Reader, opts PutFileOptions) (FilePut, error) {
	u, err := n.newUpload(ctx, channel, path)
	if err != nil {
		return FilePut{}, err
	}
	defer u.release()
	if _, err := n.sendChunks(ctx, u, body, true, -1); err != nil {
		return FilePut{}, err
	}
	return n.commitUpload(ctx, u, opts)
}

// sendChunks reads body a chunk at a time and replicates each chunk,
// several in flight. With final, a short chunk (or none, for an empty
// file) ends the file; without, a short tail is dropped and reported
// (not sent: the client sends it again from the upload's offset), unless
// it completes a file of length bytes (length -1: unknown). It returns the
// tail's length.
func (n *Node) sendChunks(ctx context.Context, u *upload, body io.Reader, final bool, length int64) (int, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	slots := make(chan struct{}, uploadPipeline)
	failedCount := func() int {
		k := 0
		for _, t := range u.targets {
			if t.failed.Load() {
				k++
			}
		}
		return k
	}
	for {
		if failedCount() > len(u.targets)-(len(u.targets)/2+1) {
			break // no majority can hold every chunk any more
		}
		slots <- struct{}{}
		if err := n.uploadMem.acquire(ctx, u.chunkSize); err != nil {
			<-slots
			wg.Wait()
			return 0, fmt.Errorf("cluster: upload: waiting for buffer memory: %w", err)
		}
		bp := chunkBuf(int(u.chunkSize))
		// The budget is given back when the chunk is replicated (a
		// majority held it and the stragglers had their grace); the
		// buffer itself when every send of it has ended. A replica that
		// hangs (cut off: up to chunkCallTimeout) keeps only a buffer,
		// not the budget every other upload waits on; it is no holder
		// after that, so no later chunk is sent to it.
		free := func() {
			freeChunkBuf(bp)
			n.uploadMem.release(u.chunkSize)
		}
		buf := *bp
		k, rerr := readChunk(body, buf)
		if rerr != nil {
			free()
			<-slots
			wg.Wait()
			return 0, fmt.Errorf("%w: reading the body after %d bytes: %v", ErrUploadMismatch, u.size+int64(k), rerr)
		}
		short := k < len(buf)
		ends := final || (length >= 0 && u.size+int64(k) == length)
		if short && !ends || k == 0 && len(u.ids) > 0 {
			free()
			<-slots
			wg.Wait()
			return k, nil
		}
		if len(u.ids) == fsm.MaxFileChunks {
			free()
			<-slots
			wg.Wait()
			return 0, fmt.Errorf("%w: a file is at most %d chunks of %d bytes", ErrUploadMismatch, fsm.MaxFileChunks, u.chunkSize)
		}
		data := buf[:k]
		u.sum.Write(data)
		u.size += int64(k)
		u.mu.Lock()
		i := len(u.ids)
		u.ids = append(u.ids, chunk.ID{})
		u.mu.Unlock()
		wg.Add(1)
		// The chunk's id (its Merkle tree) is computed here, beside
		// the reading and the file's sha256 of the next chunks, and
		// its hasher lets this node store the chunk without hashing
		// it again (chunk.Store.PutHashed).
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			h := chunk.NewHasher()
			h.KeepLeaves()
			h.Write(data)
			id := h.Sum()
			u.mu.Lock()
			u.ids[i] = id
			// Held against collection from before any replica has it
			// until the manifest is applied (chunk/DESIGN.md "Pins
			// and garbage collection").
			u.releases = append(u.releases, n.chunks.Pin(id))
			u.mu.Unlock()
			n.replicateChunk(ctx, u.ch.GroupID, h, data, u.targets, func() { freeChunkBuf(bp) })
			n.uploadMem.release(u.chunkSize)
		}()
		if short {
			break
		}
	}
	wg.Wait()
	return 0, u.holdersErr()
}

// holders are the replicas that hold every chunk sent so far.
func (u *upload) holders() []string {
	var hs []string
	for _, t := range u.targets {
		if !t.failed.Load() {
			hs = append(hs, t.serverID)
		}
	}
	return hs
}

// holdersErr says why the upload cannot commit when fewer than a majority
// of the replicas hold every chunk.
func (u *upload) holdersErr() error {
	hs := u.holders()
	if len(hs) > len(u.targets)/2 {
		return nil
	}
	var firstErr error
	for _, t := range u.targets {
		if e := t.err.Load(); e != nil {
			firstErr = *e
			break
		}
	}
	if errors.Is(firstErr, shard.ErrDiskFull) {
		// The replicas refused for want of disk: 507, as a write.
		return fmt.Errorf("%d of %d replicas hold every chunk: %w", len(hs), len(u.targets), firstErr)
	}
	return fmt.Errorf("%w: %d of %d replicas hold every chunk: %v", ErrNotEnoughHolders, len(hs), len(u.targets), firstErr)
}

// commitUpload checks the whole file against opts and proposes its
// manifest.
func (n *Node) commitUpload(ctx context.Context, u *upload, opts PutFileOptions) (FilePut, error) {
	if err := u.holdersErr(); err != nil {
		return FilePut{}, err
	}
	var digest [32]byte
	u.sum.Sum(digest[:0])
	if opts.Size >= 0 && u.size != opts.Size {
		return FilePut{}, fmt.Errorf("%w: the body has %d bytes, Content-Length says %d", ErrUploadMismatch, u.size, opts.Size)
	}
	if opts.SHA256 != nil && *opts.SHA256 != digest {
		return FilePut{}, fmt.Errorf("%w: the body's sha256 is %x, the request says %x", ErrUploadMismatch, digest, *opts.SHA256)
	}
	if opts.Check != nil {
		if err := opts.Check(); err != nil {
			return FilePut{}, err
		}
	}
	m := fsm.Manifest{
		Path: u.path, Size: uint64(u.size), ContentType: opts.ContentType, SHA256: digest,
		ChunkSize: uint64(u.chunkSize), Chunks: u.ids, Holders: u.holders(),
	}
	cmd, err := fsm.Encode(&fsm.PutFile{Manifest: m, Cond: opts.Cond, Match: opts.Match, Quota: u.ch.QuotaBytes})
	if err != nil {
		return FilePut{}, err
	}
	res, err := n.Propose(ctx, u.channel, cmd)
	if err != nil {
		return FilePut{}, err
	}
	if res.Err != nil {
		if errors.Is(res.Err, fsm.ErrFileQuota) {
			return FilePut{}, fmt.Errorf("%w: channel %q: a file of %d bytes would pass its quota of %d bytes (%d used before)",
				ErrQuotaExceeded, u.channel, u.size, u.ch.QuotaBytes, n.channelBytes(u.ch))
		}
		return FilePut{}, res.Err
	}
	return FilePut{Path: u.path, Size: u.size, SHA256: digest, Chunks: len(u.ids), Index: res.Index}, nil
}

// readChunk fills buf from r; a short count means r ended (io.EOF). Any
// other error, io.ErrUnexpectedEOF included (a body cut short), is the
// upload's failure: io.ReadFull would turn a clean end into that error
// and an aborted body into a short last chunk.
func readChunk(r io.Reader, buf []byte) (int, error) {
	k := 0
	for k < len(buf) {
		n, err := r.Read(buf[k:])
		k += n
		if errors.Is(err, io.EOF) {
			return k, nil
		}
		if err != nil {
			return k, err
		}
	}
	return k, nil
}

// channelBytes is the channel's bytes as the local replica knows them (0
// when none is here): for error messages only.
func (n *Node) channelBytes(ch fsm.ChannelRecord) uint64 {
	if rep, ok := n.shards.Replica(ch.GroupID); ok {
		return rep.FSM().Stats().Bytes
	}
	return 0
}

// straggleGrace is how long, once a majority of the replicas hold a
// chunk, an upload waits for the others before it goes on without them: a
// replica that does not answer (a frozen node, a dead link the transport
// has not noticed) must not hold an upload for chunkCallTimeout per chunk.
const straggleGrace = 10 * time.Second

// replicateChunk stores data (the chunk h hashed) on every target at once and
// returns once every target answered, or a majority holds the chunk and
// straggleGrace passed; a target that fails any chunk, or is that late,
// is no holder of the file (and gets no more of its chunks). free runs
// once the last send is over (then data may be reused).
func (n *Node) replicateChunk(ctx context.Context, gid uint64, h *chunk.Hasher, data []byte, targets []*fileTarget, free func()) {
	id := h.Sum()
	type answer struct {
		t  *fileTarget
		ok bool
	}
	answers := make(chan answer, len(targets))
	var sending atomic.Int32
	sending.Add(1) // this function's own hold, dropped below
	done := func() {
		if sending.Add(-1) == 0 {
			free()
		}
	}
	launched := 0
	for _, t := range targets {
		if t.failed.Load() {
			continue
		}
		launched++
		sending.Add(1)
		go func() {
			defer done()
			var err error
			if t.self {
				err = chunkErr(n.chunks.PutHashed(h, data))
			} else {
				err = n.route.putChunk(ctx, t.addr, gid, id, data)
			}
			if err != nil {
				n.failTarget(t, fmt.Errorf("chunk %s to %s: %w", id, t.nodeID, err))
			}
			answers <- answer{t, err == nil}
		}()
	}
	defer done()
	need := len(targets)/2 + 1
	answered := map[*fileTarget]bool{}
	held := 0
	var grace <-chan time.Time
	for len(answered) < launched {
		select {
		case a := <-answers:
			answered[a.t] = true
			if a.ok {
				held++
			}
			if held >= need && grace == nil {
				grace = time.After(straggleGrace)
			}
		case <-grace:
			for _, t := range targets {
				if !t.failed.Load() && !answered[t] {
					n.failTarget(t, fmt.Errorf("chunk %s to %s: no answer %s after a majority held it", id, t.nodeID, straggleGrace))
				}
			}
			return
		}
	}
}

// failTarget makes t no holder of the upload's file.
func (n *Node) failTarget(t *fileTarget, err error) {
	t.err.CompareAndSwap(nil, &err)
	if !t.failed.Swap(true) {
		n.log.Warn("a replica did not store an upload's chunk; it is no holder of the file", "node", t.nodeID, "error", err)
	}
}

// putChunk (rcPutChunk): head gid u64 | chunk id (32 bytes); body the
// chunk's bytes; empty answer once the peer stored it durably.
func (r *router) putChunk(ctx context.Context, addr string, gid uint64, id chunk.ID, data []byte) error {
	if addr == "" {
		return fmt.Errorf("%w: no address", ErrUnreachable)
	}
	ctx, cancel := context.WithTimeout(ctx, chunkCallTimeout)
	defer cancel()
	ans, err := r.call(ctx, addr, rcPutChunk, append(u64(gid), id[:]...), bytes.NewReader(data))
	r.count("put_chunk", err)
	if err != nil {
		return err
	}
	if ans.body != nil {
		_ = ans.body.Close()
	}
	return nil
}

func (r *router) servePutChunk(_ context.Context, head []byte, body io.Reader) ([]byte, func(io.Writer) error, error) {
	if len(head) != 8+32 || body == nil {
		return nil, nil, fmt.Errorf("%w: malformed put chunk call", ErrInvalidRequest)
	}
	gid := binary.BigEndian.Uint64(head)
	if _, ok := r.n.shards.Replica(gid); !ok {
		// Only a replica of the file's channel keeps its chunks.
		_, _ = io.Copy(io.Discard, body)
		return nil, nil, fmt.Errorf("%w: group %d", shard.ErrNotHosted, gid)
	}
	var id chunk.ID
	copy(id[:], head[8:])
	// Pinned from before the Put (which may find the chunk present and
	// old) until the upload commits or stops sending (collector.go).
	release := r.n.chunks.Pin(id)
	if err := r.n.chunks.PutExpect(id, body); err != nil {
		release()
		_, _ = io.Copy(io.Discard, body)
		return nil, nil, chunkErr(err)
	}
	if r.n.cfg.ChunkGCInterval >= 0 {
		r.n.leases.hold(gid, id, release, time.Now())
	} else {
		release() // no collector: nothing to hold it against
	}
	return nil, nil, nil
}

// chunkErr maps a chunk store refusal to what a caller can act on.
func chunkErr(err error) error {
	switch {
	case errors.Is(err, chunk.ErrDiskFull):
		return fmt.Errorf("%w: %v", shard.ErrDiskFull, err)
	case errors.Is(err, chunk.ErrMismatch), errors.Is(err, chunk.ErrTooLarge):
		return fmt.Errorf("%w: %v", ErrInvalidRequest, err)
	}
	return err
}

// getChunk (rcGetChunk): head chunk id (32 bytes); answer body the chunk's
// bytes, read verified on the peer. The caller checks them against the id
// again: a chunk is trusted for its id, never for its sender.
func (r *router) getChunk(ctx context.Context, addr string, id chunk.ID, buf []byte) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, chunkCallTimeout)
	defer cancel()
	ans, err := r.call(ctx, addr, rcGetChunk, id[:], nil)
	r.count("get_chunk", err)
	if err != nil {
		return nil, err
	}
	if ans.body == nil {
		return nil, fmt.Errorf("cluster: get chunk from %s: no body", addr)
	}
	defer ans.body.Close()
	b := bytes.NewBuffer(buf[:0])
	if _, err := io.Copy(b, io.LimitReader(ans.body, int64(cap(buf))+1)); err != nil {
		return nil, err
	}
	data := b.Bytes()
	if chunk.Sum(data) != id {
		return nil, fmt.Errorf("%w: chunk %s from %s", chunk.ErrMismatch, id, addr)
	}
	return data, nil
}

func (r *router) serveGetChunk(_ context.Context, head []byte, _ io.Reader) ([]byte, func(io.Writer) error, error) {
	if len(head) != 32 {
		return nil, nil, fmt.Errorf("%w: malformed get chunk call", ErrInvalidRequest)
	}
	var id chunk.ID
	copy(id[:], head)
	rd, err := r.n.chunks.Get(id)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrChunkUnavailable, err)
	}
	v, err := rd.Verified()
	if err != nil {
		rd.Close()
		return nil, nil, fmt.Errorf("%w: %v", ErrChunkUnavailable, err)
	}
	return nil, func(w io.Writer) error {
		defer rd.Close()
		_, err := io.Copy(w, io.NewSectionReader(v, 0, v.Size()))
		return err
	}, nil
}

// StatFile returns path's manifest once a read at level is allowed, from
// the local replica or one the router finds, and the index it was read at.
func (n *Node) StatFile(ctx context.Context, channel, path string, level shard.ReadLevel) (m fsm.Manifest, applied uint64, err error) {
	err = n.route.do(ctx, "stat_file", func(ctx context.Context) (err error) {
		m, applied, err = n.statFileHere(ctx, channel, path, level)
		return err
	}, func(ctx context.Context, re *shard.RedirectError) (err error) {
		m, applied, err = n.route.statFile(ctx, re, channel, path, level)
		return err
	})
	return m, applied, err
}

func (n *Node) statFileHere(ctx context.Context, channel, path string, level shard.ReadLevel) (fsm.Manifest, uint64, error) {
	rep, err := n.readable(ctx, channel, level)
	if err != nil {
		return fsm.Manifest{}, 0, err
	}
	applied := rep.FSM().Applied()
	m, found, err := rep.FSM().File(path)
	if err == nil && !found {
		err = fmt.Errorf("%w: %q", fsm.ErrFileNotFound, path)
	}
	return m, applied, err
}

// statFile (rcStatFile): head level u8 | channel | path; answer applied
// uvarint | fsm.AppendManifest.
func (r *router) statFile(ctx context.Context, re *shard.RedirectError, channel, path string, level shard.ReadLevel) (fsm.Manifest, uint64, error) {
	head := appendBytes(appendBytes([]byte{byte(level)}, []byte(channel)), []byte(path))
	ans, err := r.simple(ctx, "stat_file", re.Addr, rcStatFile, head)
	if err != nil {
		return fsm.Manifest{}, 0, readFailed(err, re)
	}
	d := decoder{b: ans}
	applied := d.uvarint()
	if d.err != nil {
		return fsm.Manifest{}, 0, fmt.Errorf("cluster: stat file from %s: %w", re.NodeID, d.err)
	}
	m, rest, err := fsm.DecodeManifest(d.b)
	if err != nil || len(rest) != 0 {
		return fsm.Manifest{}, 0, fmt.Errorf("cluster: stat file from %s: bad answer: %v", re.NodeID, err)
	}
	return m, applied, nil
}

func (r *router) serveStatFile(ctx context.Context, head []byte, _ io.Reader) ([]byte, func(io.Writer) error, error) {
	d := decoder{b: head}
	level := shard.ReadLevel(d.byte())
	channel, path := string(d.bytes()), string(d.bytes())
	if d.err != nil || len(d.b) != 0 {
		return nil, nil, fmt.Errorf("%w: malformed stat file call", ErrInvalidRequest)
	}
	m, applied, err := r.n.StatFile(ctx, channel, path, level)
	if err != nil {
		return nil, nil, err
	}
	return fsm.AppendManifest(binary.AppendUvarint(nil, applied), &m), nil, nil
}

// ListFiles reads a page of manifests once a read at level is allowed.
func (n *Node) ListFiles(ctx context.Context, channel, prefix, after string, limit int, level shard.ReadLevel) (ms []fsm.Manifest, more bool, err error) {
	err = n.route.do(ctx, "list_files", func(ctx context.Context) error {
		rep, err := n.readable(ctx, channel, level)
		if err != nil {
			return err
		}
		ms, more, err = rep.FSM().Files(prefix, after, limit)
		return err
	}, func(ctx context.Context, re *shard.RedirectError) (err error) {
		ms, more, err = n.route.listFiles(ctx, re, channel, prefix, after, limit, level)
		return err
	})
	return ms, more, err
}

// listFiles (rcListFiles): head level u8 | channel | prefix | after |
// limit uvarint; answer more u8 | count uvarint | that many
// fsm.AppendManifest.
func (r *router) listFiles(ctx context.Context, re *shard.RedirectError, channel, prefix, after string, limit int, level shard.ReadLevel) ([]fsm.Manifest, bool, error) {
	head := appendBytes(appendBytes(appendBytes([]byte{byte(level)}, []byte(channel)), []byte(prefix)), []byte(after))
	head = binary.AppendUvarint(head, uint64(max(limit, 0)))
	ans, err := r.simple(ctx, "list_files", re.Addr, rcListFiles, head)
	if err != nil {
		return nil, false, readFailed(err, re)
	}
	d := decoder{b: ans}
	more := d.byte() == 1
	count := d.uvarint()
	if d.err != nil || count > uint64(len(d.b)) {
		return nil, false, fmt.Errorf("cluster: list files from %s: bad answer", re.NodeID)
	}
	ms := make([]fsm.Manifest, 0, count)
	rest := d.b
	for i := uint64(0); i < count; i++ {
		var m fsm.Manifest
		if m, rest, err = fsm.DecodeManifest(rest); err != nil {
			return nil, false, fmt.Errorf("cluster: list files from %s: %w", re.NodeID, err)
		}
		ms = append(ms, m)
	}
	return ms, more, nil
}

func (r *router) serveListFiles(ctx context.Context, head []byte, _ io.Reader) ([]byte, func(io.Writer) error, error) {
	d := decoder{b: head}
	level := shard.ReadLevel(d.byte())
	channel, prefix, after := string(d.bytes()), string(d.bytes()), string(d.bytes())
	limit := d.uvarint()
	if d.err != nil || len(d.b) != 0 || limit > 10000 {
		return nil, nil, fmt.Errorf("%w: malformed list files call", ErrInvalidRequest)
	}
	ms, more, err := r.n.ListFiles(ctx, channel, prefix, after, int(limit), level)
	if err != nil {
		return nil, nil, err
	}
	b := binary.AppendUvarint([]byte{boolByte(more)}, uint64(len(ms)))
	for i := range ms {
		b = fsm.AppendManifest(b, &ms[i])
	}
	return b, nil, nil
}

// DeleteFile removes path's manifest (its chunks stay until garbage
// collection finds them unreferenced).
func (n *Node) DeleteFile(ctx context.Context, channel, path string, cond byte, match [32]byte) (uint64, error) {
	if err := fsm.CheckVersion(4, n.meta.fsm.ClusterVersion()); err != nil {
		return 0, fmt.Errorf("cluster: files: %w", err)
	}
	cmd, err := fsm.Encode(&fsm.DeleteFile{Path: path, Cond: cond, Match: match})
	if err != nil {
		return 0, err
	}
	res, err := n.Propose(ctx, channel, cmd)
	if err != nil {
		return 0, err
	}
	return res.Index, res.Err
}

// FileReader reads a file's bytes: an io.ReadSeeker (and io.ReaderAt) over
// its chunks, for http.ServeContent. Each chunk is read from the local
// store with a verified read; a chunk missing or corrupt here is fetched
// from the channel's other replicas, checked against its id and, on a
// replica, stored back. It keeps one chunk's buffer at a time. Not safe
// for concurrent use.
type FileReader struct {
	n       *Node
	ctx     context.Context
	gid     uint64
	m       fsm.Manifest
	peers   []string // cluster addresses of the other replicas, holders first
	replica bool     // this node hosts a replica: repaired chunks are stored
	off     int64

	cur   int    // index of the chunk held, -1 none
	unpin func() // the pin on the chunk held (a running download's)
	local *chunk.Reader
	ver   *chunk.Verified
	buf   []byte
	bufp  *[]byte
}

// OpenFile returns a reader over m's bytes, a file of channel.
func (n *Node) OpenFile(ctx context.Context, channel string, m fsm.Manifest) (*FileReader, error) {
	_, targets, err := n.fileTargets(ctx, channel)
	if err != nil {
		return nil, err
	}
	ch, _ := n.meta.fsm.Channel(channel)
	fr := &FileReader{n: n, ctx: ctx, gid: ch.GroupID, m: m, cur: -1}
	holder := map[string]bool{}
	for _, h := range m.Holders {
		holder[h] = true
	}
	var rest []string
	for _, t := range targets {
		switch {
		case t.self:
			fr.replica = true
		case t.addr == "":
		case holder[t.serverID]:
			fr.peers = append(fr.peers, t.addr)
		default:
			rest = append(rest, t.addr)
		}
	}
	fr.peers = append(fr.peers, rest...)
	return fr, nil
}

// Size is the file's length.
func (f *FileReader) Size() int64 { return int64(f.m.Size) }

// Close releases the chunk held.
func (f *FileReader) Close() error {
	f.drop()
	return nil
}

func (f *FileReader) drop() {
	if f.unpin != nil {
		f.unpin()
		f.unpin = nil
	}
	if f.local != nil {
		_ = f.local.Close()
		f.local, f.ver = nil, nil
	}
	if f.bufp != nil {
		freeChunkBuf(f.bufp)
		f.bufp, f.buf = nil, nil
	}
	f.cur = -1
}

// Read reads from the current offset.
func (f *FileReader) Read(p []byte) (int, error) {
	n, err := f.ReadAt(p, f.off)
	f.off += int64(n)
	return n, err
}

// Seek sets the offset for the next Read.
func (f *FileReader) Seek(offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += f.off
	case io.SeekEnd:
		offset += int64(f.m.Size)
	default:
		return 0, errors.New("cluster: file seek: bad whence")
	}
	if offset < 0 {
		return 0, errors.New("cluster: file seek: negative offset")
	}
	f.off = offset
	return offset, nil
}

// ReadAt reads len(p) bytes at off, at most to the end of one chunk
// (short reads are allowed by io.Reader; io.ReaderAt callers loop via
// io.ReadFull or io.SectionReader, which ReadAt honours by filling p
// across chunks).
func (f *FileReader) ReadAt(p []byte, off int64) (int, error) {
	size := int64(f.m.Size)
	total := 0
	for len(p) > 0 {
		if off >= size {
			return total, io.EOF
		}
		cs := int64(f.m.ChunkSize)
		i := int(off / cs)
		within := off - int64(i)*cs
		want := min(int64(len(p)), cs-within, size-off)
		n, err := f.readChunk(i, p[:want], within)
		total += n
		off += int64(n)
		p = p[n:]
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

// readChunk reads p from chunk i at within: locally, else (or when the
// local copy is corrupt) from a peer.
func (f *FileReader) readChunk(i int, p []byte, within int64) (int, error) {
	id := chunk.ID(f.m.Chunks[i])
	if f.cur != i {
		f.drop()
		f.unpin = f.n.chunks.Pin(id)
		if rd, err := f.n.chunks.Get(id); err == nil {
			if v, err := rd.Verified(); err == nil {
				f.local, f.ver = rd, v
			} else {
				_ = rd.Close()
				f.repairLocal(id, err)
			}
		}
		f.cur = i
	}
	if f.ver != nil {
		n, err := f.ver.ReadAt(p, within)
		if n == len(p) {
			return n, nil
		}
		if !errors.Is(err, chunk.ErrCorrupt) && !errors.Is(err, io.EOF) {
			return n, err
		}
		// Corrupt past what was delivered: go on from a good copy.
		_ = f.local.Close()
		f.local, f.ver = nil, nil
		f.repairLocal(id, err)
		m, err := f.readChunk(i, p[n:], within+int64(n))
		return n + m, err
	}
	if f.buf == nil {
		if err := f.fetch(id); err != nil {
			return 0, err
		}
	}
	if within >= int64(len(f.buf)) {
		return 0, io.ErrUnexpectedEOF
	}
	return copy(p, f.buf[within:]), nil
}

// repairLocal drops a local chunk found corrupt (Verify removes it), so
// that the good copy fetched next is stored in its place.
func (f *FileReader) repairLocal(id chunk.ID, cause error) {
	if errors.Is(cause, chunk.ErrCorrupt) {
		_ = f.n.chunks.Verify(id)
	}
}

// fetch reads chunk id from the first peer that serves it whole and right,
// and, on a replica, stores it locally.
func (f *FileReader) fetch(id chunk.ID) error {
	bp := chunkBuf(int(f.m.ChunkSize))
	var errs []error
	for _, addr := range f.peers {
		data, err := f.n.route.getChunk(f.ctx, addr, id, (*bp)[:0:f.m.ChunkSize])
		if err != nil {
			errs = append(errs, err)
			continue
		}
		f.bufp, f.buf = bp, data
		if f.replica && f.n.chunks.PutExpect(id, bytes.NewReader(data)) == nil {
			f.n.log.Info("restored a missing or corrupt chunk from a peer", "chunk", id.String(), "peer", addr)
		}
		return nil
	}
	freeChunkBuf(bp)
	return fmt.Errorf("%w: chunk %s: %v", ErrChunkUnavailable, id, errors.Join(errs...))
}

// recordConfiguration makes sure, before the leader proposes a PutFile,
// that the channel's state records the group's configuration, which the
// manifest's holders are checked against (fsm/DESIGN.md "Files"). A
// channel whose configuration entries were all applied by a release
// without files has none: the leader appends the configuration in force
// again (AddVoter of itself, which changes nothing but writes a
// configuration entry), and the PutFile, proposed after it, applies after
// it on every replica.
func (n *Node) recordConfiguration(rep *shard.Replica, cmd []byte) {
	if !fsm.IsPutFile(cmd) {
		return
	}
	if _, ok, err := rep.FSM().Configuration(); err != nil || ok {
		return
	}
	r := rep.Raft()
	f := r.GetConfiguration()
	if f.Error() != nil {
		return
	}
	for _, s := range f.Configuration().Servers {
		if s.ID == n.serverID && s.Suffrage == raft.Voter {
			if err := r.AddVoter(s.ID, s.Address, 0, internalCallLimit).Error(); err != nil {
				n.log.Warn("cannot record the channel's configuration for files", "channel", rep.Channel, "error", err)
				return
			}
			n.log.Info("recorded the channel's configuration for files (a configuration entry)", "channel", rep.Channel)
			return
		}
	}
}
