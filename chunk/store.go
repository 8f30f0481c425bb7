package chunk

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
)

// DefaultMaxChunkSize is the largest chunk a store accepts unless told
// otherwise: 4 MiB, the default chunk size of files (64 blocks).
const DefaultMaxChunkSize = 4 << 20

// DefaultMinFreeBytes is the free space below which Put refuses chunks,
// the same margin shard keeps for its Raft logs and state.
const DefaultMinFreeBytes = 256 << 20

// DefaultLeafCacheChunks is how many chunks' block sums a store keeps for
// verified reads unless told otherwise.
const DefaultLeafCacheChunks = 4096

// formatVersion is the on-disk layout this code reads and writes
// (chunk/DESIGN.md "On disk"). A store of another format is refused.
const formatVersion = 1

const (
	formatFile = "format.json"
	tmpDir     = "tmp"
)

// Options configure a Store. The zero value gives the defaults.
type Options struct {
	// MaxChunkSize is the largest chunk Put accepts (default 4 MiB).
	MaxChunkSize int64
	// MinFreeBytes is the free space on the store's file system below
	// which Put refuses with ErrDiskFull (default 256 MiB).
	MinFreeBytes uint64
	// LeafCacheChunks is how many chunks' block sums (leaf hashes and
	// CRC-32Cs) verified reads keep in memory (2.3 KiB for a 4 MiB
	// chunk; default 4096, 9 MiB; negative: none, every verified read
	// hashes its chunk whole against its id first).
	LeafCacheChunks int
	// Logger, narrowed to "chunk" by Open (default: discard).
	Logger hclog.Logger
	// Registerer for the store's metrics (nil: not registered).
	Registerer prometheus.Registerer

	// freeBytes replaces statfs (tests: a disk that is nearly full).
	freeBytes func(dir string) (uint64, error)
}

// Store is one node's chunk store: a directory of chunk files named by id,
// shared by all the node's channels. Its methods are safe for concurrent use.
type Store struct {
	dir  string
	opts Options
	log  hclog.Logger
	m    *metrics

	leaves *leafCache // verified block sums by id (leafcache.go)

	bytes  atomic.Int64 // bytes of stored chunks
	count  atomic.Int64 // stored chunks
	closed atomic.Bool

	// stripes serialize the commit of a Put (exists check, rename, dir
	// sync, accounting), Delete and the pin table of the ids whose first
	// byte picks the stripe: a Pin taken before Has cannot race a Delete.
	stripes [256]stripe
	pinSeq  atomic.Uint64 // the pin release clock (pin.go)
	markMu  sync.RWMutex  // Mark exclusive, Collect shared
	floor   uint64        // releases at or below are forgotten (pin.go)
	lastMk  uint64
}

type stripe struct {
	mu       sync.Mutex
	pins     map[ID]int    // holders of each pinned id
	released map[ID]uint64 // pin clock when each id was last released or put
}

type format struct {
	Format    int `json:"format"`
	BlockSize int `json:"block_size"`
}

// Open opens the store in dir, creating it if needed. It removes temp files
// left by Puts that a crash interrupted and counts the chunks held.
func Open(dir string, opts Options) (*Store, error) {
	if opts.MaxChunkSize <= 0 {
		opts.MaxChunkSize = DefaultMaxChunkSize
	}
	if opts.MinFreeBytes == 0 {
		opts.MinFreeBytes = DefaultMinFreeBytes
	}
	if opts.LeafCacheChunks == 0 {
		opts.LeafCacheChunks = DefaultLeafCacheChunks
	}
	if opts.Logger == nil {
		opts.Logger = hclog.NewNullLogger()
	}
	if opts.freeBytes == nil {
		opts.freeBytes = freeBytes
	}
	m, err := newMetrics(opts.Registerer)
	if err != nil {
		return nil, err
	}
	s := &Store{dir: dir, opts: opts, log: opts.Logger.Named("chunk"), m: m, leaves: newLeafCache(opts.LeafCacheChunks)}
	for i := range s.stripes {
		s.stripes[i].pins = map[ID]int{}
		s.stripes[i].released = map[ID]uint64{}
	}
	if err := s.init(); err != nil {
		return nil, err
	}
	if err := s.scan(); err != nil {
		return nil, err
	}
	s.m.storedBytes.Add(float64(s.bytes.Load()))
	s.m.chunks.Add(float64(s.count.Load()))
	return s, nil
}

// init creates the layout (or checks the one found) and empties tmp/.
func (s *Store) init() error {
	if err := os.MkdirAll(s.dir, 0o755); err != nil {
		return fmt.Errorf("chunk: create store: %w", err)
	}
	fp := filepath.Join(s.dir, formatFile)
	b, err := os.ReadFile(fp)
	switch {
	case err == nil:
		var f format
		if err := json.Unmarshal(b, &f); err != nil {
			return fmt.Errorf("chunk: %s: %w", fp, err)
		}
		if f.Format != formatVersion || f.BlockSize != BlockSize {
			return fmt.Errorf("chunk: %s: format %d with %d-byte blocks; this node reads format %d with %d-byte blocks", fp, f.Format, f.BlockSize, formatVersion, BlockSize)
		}
	case errors.Is(err, os.ErrNotExist):
		// A new store: the fan-out directories first, the format file
		// last, so a store with a format file is complete.
		if err := os.MkdirAll(filepath.Join(s.dir, tmpDir), 0o755); err != nil {
			return fmt.Errorf("chunk: create store: %w", err)
		}
		for i := 0; i < 256; i++ {
			if err := os.MkdirAll(filepath.Join(s.dir, fmt.Sprintf("%02x", i)), 0o755); err != nil {
				return fmt.Errorf("chunk: create store: %w", err)
			}
		}
		b, _ := json.Marshal(format{Format: formatVersion, BlockSize: BlockSize})
		if err := writeFileSynced(s.dir, formatFile, b); err != nil {
			return err
		}
	default:
		return fmt.Errorf("chunk: read %s: %w", fp, err)
	}
	tmp := filepath.Join(s.dir, tmpDir)
	ents, err := os.ReadDir(tmp)
	if err != nil {
		return fmt.Errorf("chunk: read %s: %w", tmp, err)
	}
	for _, e := range ents {
		if err := os.RemoveAll(filepath.Join(tmp, e.Name())); err != nil {
			return fmt.Errorf("chunk: remove leftover temp file: %w", err)
		}
	}
	if len(ents) > 0 {
		s.log.Info("removed temp files of interrupted puts", "files", len(ents))
	}
	return nil
}

// writeFileSynced writes dir/name by a synced temp file and a rename, then
// syncs dir.
func writeFileSynced(dir, name string, b []byte) error {
	f, err := os.CreateTemp(dir, name+".tmp*")
	if err != nil {
		return fmt.Errorf("chunk: write %s: %w", name, err)
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), filepath.Join(dir, name))
	}
	if err == nil {
		err = syncDir(dir)
	}
	if err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("chunk: write %s: %w", name, err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// scan counts the chunks and bytes held.
func (s *Store) scan() error {
	return s.Walk(func(_ ID, size int64) error {
		s.bytes.Add(size)
		s.count.Add(1)
		return nil
	})
}

// Close releases the store. Pins are in memory only and end with it.
func (s *Store) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	s.m.storedBytes.Sub(float64(s.bytes.Load()))
	s.m.chunks.Sub(float64(s.count.Load()))
	return nil
}

// Dir returns the store's directory.
func (s *Store) Dir() string { return s.dir }

// MaxChunkSize returns the largest chunk Put accepts.
func (s *Store) MaxChunkSize() int64 { return s.opts.MaxChunkSize }

func (s *Store) path(id ID) string {
	h := id.String()
	return filepath.Join(s.dir, h[:2], h)
}

func (s *Store) stripe(id ID) *stripe { return &s.stripes[id[0]] }

// Put stores the chunk read from r up to its end and returns its id. The
// chunk is durable when Put returns (file and directory synced); a chunk
// already held is not written again. r must end within MaxChunkSize bytes.
func (s *Store) Put(r io.Reader) (ID, error) {
	return s.put(r, nil)
}

// PutExpect stores the chunk read from r as Put does, but only if it hashes
// to want: otherwise it stores nothing and returns ErrMismatch. A node
// receiving a chunk from a peer, or an upload with a known id, uses it.
func (s *Store) PutExpect(want ID, r io.Reader) error {
	_, err := s.put(r, &want)
	return err
}

var copyBufs = sync.Pool{New: func() any { b := make([]byte, 256<<10); return &b }}

// PutHashed stores data, which h has hashed — exactly these bytes, from
// a Hasher made with KeepLeaves — under h's id, without hashing it again:
// the node an upload arrives at computes each chunk's id to name it and
// would otherwise hash every chunk it stores itself twice. Durability is
// Put's (file and directory synced before it returns). It refuses, storing
// nothing, an h that did not keep its leaves or whose length is not
// data's (ErrMismatch).
func (s *Store) PutHashed(h *Hasher, data []byte) error {
	if !h.keep || h.Len() != int64(len(data)) {
		return fmt.Errorf("chunk: put hashed: a hasher of %d bytes (leaves kept: %t) for %d bytes: %w", h.Len(), h.keep, len(data), ErrMismatch)
	}
	_, err := s.store(func(f *os.File) (ID, int64, blockSums, error) {
		if int64(len(data)) > s.opts.MaxChunkSize {
			return ID{}, 0, blockSums{}, fmt.Errorf("chunk: put: more than %d bytes: %w", s.opts.MaxChunkSize, ErrTooLarge)
		}
		if _, err := f.Write(data); err != nil {
			return ID{}, 0, blockSums{}, fmt.Errorf("chunk: put: write: %w", diskErr(err))
		}
		return h.Sum(), h.Len(), h.sums(), nil
	})
	return err
}

func (s *Store) put(r io.Reader, want *ID) (ID, error) {
	return s.store(func(f *os.File) (ID, int64, blockSums, error) {
		h := NewHasher()
		h.KeepLeaves()
		bp := copyBufs.Get().(*[]byte)
		defer copyBufs.Put(bp)
		buf := *bp
		lr := io.LimitReader(r, s.opts.MaxChunkSize+1)
		for {
			n, rerr := lr.Read(buf)
			if n > 0 {
				h.Write(buf[:n])
				if h.Len() > s.opts.MaxChunkSize {
					return ID{}, 0, blockSums{}, fmt.Errorf("chunk: put: more than %d bytes: %w", s.opts.MaxChunkSize, ErrTooLarge)
				}
				if _, werr := f.Write(buf[:n]); werr != nil {
					return ID{}, 0, blockSums{}, fmt.Errorf("chunk: put: write: %w", diskErr(werr))
				}
			}
			if rerr == io.EOF {
				break
			}
			if rerr != nil {
				return ID{}, 0, blockSums{}, fmt.Errorf("chunk: put: read: %w", rerr)
			}
		}
		id, size := h.Sum(), h.Len()
		if want != nil && id != *want {
			return id, size, blockSums{}, fmt.Errorf("chunk: put: %d bytes hash to %s, expected %s: %w", size, id, *want, ErrMismatch)
		}
		return id, size, h.sums(), nil
	})
}

// store is every put's frame: write fills a new temp file and names its
// content (id, length and block sums); then, unless a chunk of that id
// and length is held already, the file is synced, renamed to its id's name
// and its directory synced.
func (s *Store) store(write func(f *os.File) (ID, int64, blockSums, error)) (id ID, err error) {
	if s.closed.Load() {
		return id, ErrClosed
	}
	defer func() {
		if err != nil {
			s.m.putsRefused.WithLabelValues(refusal(err)).Inc()
		}
	}()
	free, err := s.opts.freeBytes(s.dir)
	if err != nil {
		return id, err
	}
	if free < s.opts.MinFreeBytes {
		return id, fmt.Errorf("chunk: put: %d bytes free, %d kept free: %w", free, s.opts.MinFreeBytes, ErrDiskFull)
	}
	f, err := os.CreateTemp(filepath.Join(s.dir, tmpDir), "put-*")
	if err != nil {
		return id, fmt.Errorf("chunk: put: %w", diskErr(err))
	}
	committed := false
	defer func() {
		if !committed {
			f.Close()
			os.Remove(f.Name())
		}
	}()

	id, size, sums, err := write(f)
	if err != nil {
		return id, err
	}
	// The sums are right for the id whether or not this Put stores the
	// file: the next verified read of it need not hash it whole.
	s.leaves.add(id, sums)

	st := s.stripe(id)
	st.mu.Lock()
	defer st.mu.Unlock()
	// Even a duplicate counts as a release for the garbage collector: an
	// uploader that found the chunk present relies on it as much as one
	// that wrote it (pin.go).
	st.released[id] = s.pinSeq.Add(1)
	final := s.path(id)
	old, err := os.Stat(final)
	if err == nil && old.Size() == size {
		// Deduplicated: the same id is the same bytes (a corrupt copy
		// of the same length is Verify's to find). The existing file
		// was synced by the Put that wrote it.
		s.m.puts.WithLabelValues("duplicate").Inc()
		s.m.putBytes.Add(float64(size))
		return id, nil
	}
	if err := f.Sync(); err != nil {
		return id, fmt.Errorf("chunk: put: sync: %w", diskErr(err))
	}
	if err := f.Close(); err != nil {
		return id, fmt.Errorf("chunk: put: close: %w", diskErr(err))
	}
	// rename replaces a file of the wrong length (a truncated copy)
	// atomically; readers holding it open keep their bytes.
	if err := os.Rename(f.Name(), final); err != nil {
		return id, fmt.Errorf("chunk: put: %w", diskErr(err))
	}
	committed = true
	if err := syncDir(filepath.Dir(final)); err != nil {
		// The chunk is in place but its name may not survive a crash:
		// take it back rather than acknowledge what is not durable.
		os.Remove(final)
		if old != nil {
			s.account(-size, -1)
		}
		return id, fmt.Errorf("chunk: put: sync dir: %w", diskErr(err))
	}
	if old != nil {
		// The file replaced was written as this id's size (the id binds
		// the length): it was counted as such, whatever was left of it.
		// Totals that corruption behind the store's back made wrong are
		// recounted by the next Open.
	} else {
		s.account(size, 1)
	}
	s.m.puts.WithLabelValues("stored").Inc()
	s.m.putBytes.Add(float64(size))
	return id, nil
}

func (s *Store) account(bytes, count int64) {
	s.bytes.Add(bytes)
	s.count.Add(count)
	s.m.storedBytes.Add(float64(bytes))
	s.m.chunks.Add(float64(count))
}

// diskErr marks a write that ran out of space as ErrDiskFull, keeping the
// cause.
func diskErr(err error) error {
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return fmt.Errorf("%w: %w", ErrDiskFull, err)
	}
	return err
}

func refusal(err error) string {
	switch {
	case errors.Is(err, ErrMismatch):
		return "mismatch"
	case errors.Is(err, ErrTooLarge):
		return "too_large"
	case errors.Is(err, ErrDiskFull):
		return "disk_full"
	}
	return "error"
}

// Has reports whether the store holds id (without reading it).
func (s *Store) Has(id ID) bool {
	_, err := os.Stat(s.path(id))
	return err == nil
}

// Info describes a stored chunk.
type Info struct {
	ID   ID
	Size int64
	// ModTime is when the chunk was written (a grace period before
	// collecting unreferenced chunks can be measured from it).
	ModTime time.Time
}

// Stat returns what the store knows of id, or ErrNotFound.
func (s *Store) Stat(id ID) (Info, error) {
	fi, err := os.Stat(s.path(id))
	if errors.Is(err, os.ErrNotExist) {
		return Info{}, fmt.Errorf("chunk %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return Info{}, fmt.Errorf("chunk: stat %s: %w", id, err)
	}
	return Info{ID: id, Size: fi.Size(), ModTime: fi.ModTime()}, nil
}

// Bytes returns the bytes of all stored chunks (each stored once): counted
// by Open, then kept by the store's own Puts and deletes (a file changed
// behind its back is recounted by the next Open).
func (s *Store) Bytes() int64 { return s.bytes.Load() }

// Count returns the number of stored chunks.
func (s *Store) Count() int64 { return s.count.Load() }

// Walk calls fn with every stored chunk's id and size, in id order, until fn
// returns an error (which Walk returns). Chunks put or deleted during the
// walk may or may not be seen. Anti-entropy and garbage collection use it.
func (s *Store) Walk(fn func(id ID, size int64) error) error {
	for i := 0; i < 256; i++ {
		sub := filepath.Join(s.dir, fmt.Sprintf("%02x", i))
		ents, err := os.ReadDir(sub)
		if err != nil {
			return fmt.Errorf("chunk: walk: %w", err)
		}
		for _, e := range ents {
			id, err := ParseID(e.Name())
			if err != nil || id[0] != byte(i) || !e.Type().IsRegular() {
				s.log.Warn("unexpected file in chunk store", "path", filepath.Join(sub, e.Name()))
				continue
			}
			fi, err := e.Info()
			if errors.Is(err, os.ErrNotExist) {
				continue // deleted since ReadDir
			}
			if err != nil {
				return fmt.Errorf("chunk: walk: %w", err)
			}
			if err := fn(id, fi.Size()); err != nil {
				return err
			}
		}
	}
	return nil
}

// Delete removes a chunk no pin holds; ErrPinned if one does, ErrNotFound if
// it is not held. The removal is not synced: a chunk that comes back after
// a crash is only collected again.
func (s *Store) Delete(id ID) error {
	st := s.stripe(id)
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.pins[id] > 0 {
		return fmt.Errorf("chunk: delete %s: %w", id, ErrPinned)
	}
	return s.removeLocked(id, nil)
}

// removeLocked removes id's file, if it is still same (when given); the
// caller holds the id's stripe.
func (s *Store) removeLocked(id ID, same os.FileInfo) error {
	p := s.path(id)
	fi, err := os.Stat(p)
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("chunk %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("chunk: delete %s: %w", id, err)
	}
	if same != nil && !os.SameFile(fi, same) {
		return nil // replaced meanwhile by a Put: the new file stays
	}
	if err := os.Remove(p); err != nil {
		return fmt.Errorf("chunk: delete %s: %w", id, err)
	}
	s.account(-fi.Size(), -1)
	s.m.deletes.Inc()
	return nil
}
