package shard

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"hash/crc64"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// The layout of raft.FileSnapshotStore, kept so that a node reads the
// snapshots an older binary wrote and the other way round:
// <replica dir>/snapshots/<term>-<index>-<unix ms>/{meta.json,state.bin},
// written as <name>.tmp first; meta.json holds the raft.SnapshotMeta and a
// CRC-64 (ECMA) of state.bin.
const (
	snapDirName   = "snapshots"
	snapMetaFile  = "meta.json"
	snapStateFile = "state.bin"
	snapTmpSuffix = ".tmp"
)

var snapCRCTable = crc64.MakeTable(crc64.ECMA)

// snapStore is a raft.SnapshotStore over a vfs.FS (the node's file system;
// a crashable in-memory one in the power-loss test). It differs from
// raft.FileSnapshotStore in its durability steps, which are those a power
// loss needs (shard/DESIGN.md "What is synced, and why"): state.bin and meta.json
// are fsynced, then the temporary directory that names them, then it is
// renamed into place and its parent is fsynced. FileSnapshotStore never
// fsyncs the temporary directory, so after a power loss the renamed
// directory may exist without its files' names.
type snapStore struct {
	fs     vfs.FS
	dir    string
	retain int
	log    hclog.Logger
}

// snapFileMeta is meta.json, as raft.FileSnapshotStore writes it.
type snapFileMeta struct {
	raft.SnapshotMeta
	CRC []byte
}

var _ raft.SnapshotStore = (*snapStore)(nil)

// NewSnapshotStore opens (creating it) the snapshot store under
// base/snapshots on fs, keeping the newest retain snapshots, with
// raft.FileSnapshotStore's layout and the durability steps of snapStore.
// The meta group uses it too.
func NewSnapshotStore(fs vfs.FS, base string, retain int, log hclog.Logger) (raft.SnapshotStore, error) {
	s, err := newSnapStore(fs, base, retain, log)
	if err != nil {
		return nil, err
	}
	return s, nil
}

// newSnapStore opens (creating it) the snapshot store of a replica dir and
// removes the temporary directories of snapshots a crash interrupted: only
// this store writes there.
func newSnapStore(fs vfs.FS, base string, retain int, log hclog.Logger) (*snapStore, error) {
	if retain < 1 {
		return nil, errors.New("snapshot store: retain at least one snapshot")
	}
	s := &snapStore{fs: fs, dir: filepath.Join(base, snapDirName), retain: retain, log: log}
	if err := mkdirAllSync(fs, s.dir); err != nil {
		return nil, fmt.Errorf("snapshot store: %w", err)
	}
	names, err := fs.List(s.dir)
	if err != nil {
		return nil, fmt.Errorf("snapshot store: %w", err)
	}
	for _, name := range names {
		if strings.HasSuffix(name, snapTmpSuffix) {
			log.Warn("removing an unfinished snapshot", "name", name)
			if err := fs.RemoveAll(filepath.Join(s.dir, name)); err != nil {
				return nil, fmt.Errorf("snapshot store: remove %s: %w", name, err)
			}
		}
	}
	return s, nil
}

// Create starts a snapshot in a temporary directory.
func (s *snapStore) Create(version raft.SnapshotVersion, index, term uint64, conf raft.Configuration,
	confIndex uint64, _ raft.Transport) (raft.SnapshotSink, error) {
	if version != 1 {
		return nil, fmt.Errorf("snapshot store: unsupported snapshot version %d", version)
	}
	name := fmt.Sprintf("%d-%d-%d", term, index, time.Now().UnixMilli())
	tmp := filepath.Join(s.dir, name+snapTmpSuffix)
	if err := s.fs.MkdirAll(tmp, 0o755); err != nil {
		return nil, fmt.Errorf("snapshot store: %w", err)
	}
	f, err := s.fs.Create(filepath.Join(tmp, snapStateFile), vfs.WriteCategoryUnspecified)
	if err != nil {
		_ = s.fs.RemoveAll(tmp)
		return nil, fmt.Errorf("snapshot store: %w", err)
	}
	k := &snapSink{s: s, tmp: tmp, f: f, hash: crc64.New(snapCRCTable), meta: snapFileMeta{
		SnapshotMeta: raft.SnapshotMeta{Version: version, ID: name, Index: index, Term: term,
			Configuration: conf, ConfigurationIndex: confIndex},
	}}
	k.buf = bufio.NewWriterSize(io.MultiWriter(k.hash, &copyWriter{f: f}), 64<<10)
	return k, nil
}

// List returns the newest snapshots, newest first, at most retain of them.
func (s *snapStore) List() ([]*raft.SnapshotMeta, error) {
	all, err := s.snapshots()
	if err != nil {
		return nil, err
	}
	out := make([]*raft.SnapshotMeta, 0, min(len(all), s.retain))
	for _, m := range all[:min(len(all), s.retain)] {
		out = append(out, &m.SnapshotMeta)
	}
	return out, nil
}

// snapshots reads every finished snapshot's meta, newest first; temporary
// directories and unreadable metas are skipped, as FileSnapshotStore does.
func (s *snapStore) snapshots() ([]*snapFileMeta, error) {
	names, err := s.fs.List(s.dir)
	if err != nil {
		return nil, fmt.Errorf("snapshot store: %w", err)
	}
	var out []*snapFileMeta
	for _, name := range names {
		if strings.HasSuffix(name, snapTmpSuffix) {
			continue
		}
		if st, err := s.fs.Stat(filepath.Join(s.dir, name)); err != nil || !st.IsDir() {
			continue
		}
		m, err := s.readMeta(name)
		if err != nil {
			s.log.Warn("unreadable snapshot meta", "name", name, "error", err)
			continue
		}
		if m.Version < raft.SnapshotVersionMin || m.Version > raft.SnapshotVersionMax {
			s.log.Warn("unsupported snapshot version", "name", name, "version", m.Version)
			continue
		}
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Term != b.Term {
			return a.Term > b.Term
		}
		if a.Index != b.Index {
			return a.Index > b.Index
		}
		return a.ID > b.ID
	})
	return out, nil
}

func (s *snapStore) readMeta(name string) (*snapFileMeta, error) {
	f, err := s.fs.Open(filepath.Join(s.dir, name, snapMetaFile))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var m snapFileMeta
	if err := json.NewDecoder(bufio.NewReader(f)).Decode(&m); err != nil {
		return nil, err
	}
	return &m, nil
}

// Open checks a snapshot's CRC and returns a reader of its state.
func (s *snapStore) Open(id string) (*raft.SnapshotMeta, io.ReadCloser, error) {
	if id == "" || strings.ContainsAny(id, `/\`) || id == "." || id == ".." {
		return nil, nil, fmt.Errorf("snapshot store: bad snapshot id %q", id)
	}
	m, err := s.readMeta(id)
	if err != nil {
		return nil, nil, fmt.Errorf("snapshot store: open %s: %w", id, err)
	}
	f, err := s.fs.Open(filepath.Join(s.dir, id, snapStateFile))
	if err != nil {
		return nil, nil, fmt.Errorf("snapshot store: open %s: %w", id, err)
	}
	h := crc64.New(snapCRCTable)
	n, err := io.Copy(h, bufio.NewReaderSize(f, 64<<10))
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("snapshot store: read %s: %w", id, err)
	}
	if !bytes.Equal(h.Sum(nil), m.CRC) || n != m.Size {
		f.Close()
		return nil, nil, fmt.Errorf("snapshot store: %s: CRC mismatch (%d bytes, meta says %d)", id, n, m.Size)
	}
	return &m.SnapshotMeta, &snapReader{Reader: bufio.NewReaderSize(io.NewSectionReader(f, 0, n), 64<<10), f: f}, nil
}

// snapReader reads a snapshot's state. raft closes it after the FSM's
// Restore, which closes it too; a vfs.File may not be closed twice.
type snapReader struct {
	io.Reader
	f    vfs.File
	once sync.Once
	err  error
}

func (r *snapReader) Close() error {
	r.once.Do(func() { r.err = r.f.Close() })
	return r.err
}

// reap removes the snapshots beyond the newest retain. A removal lost in a
// power loss leaves an older, complete snapshot, which List sorts after
// the newer ones.
func (s *snapStore) reap() error {
	all, err := s.snapshots()
	if err != nil {
		return err
	}
	for _, m := range all[min(len(all), s.retain):] {
		if err := s.fs.RemoveAll(filepath.Join(s.dir, m.ID)); err != nil {
			return fmt.Errorf("snapshot store: reap %s: %w", m.ID, err)
		}
	}
	return nil
}

// snapSink writes one snapshot.
type snapSink struct {
	s      *snapStore
	tmp    string
	f      vfs.File
	buf    *bufio.Writer
	hash   hash.Hash64
	meta   snapFileMeta
	closed bool
}

func (k *snapSink) ID() string { return k.meta.ID }

func (k *snapSink) Write(b []byte) (int, error) { return k.buf.Write(b) }

// Close persists the snapshot: raft compacts its log up to the snapshot's
// index once Close returns nil, so everything the snapshot is must be on
// disk by then.
func (k *snapSink) Close() error {
	if k.closed {
		return nil
	}
	k.closed = true
	if err := k.persist(); err != nil {
		k.s.log.Error("failed to persist snapshot", "id", k.meta.ID, "error", err)
		if rmErr := k.s.fs.RemoveAll(k.tmp); rmErr != nil {
			k.s.log.Error("failed to remove unfinished snapshot", "path", k.tmp, "error", rmErr)
		}
		return err
	}
	return k.s.reap()
}

func (k *snapSink) persist() error {
	if err := k.buf.Flush(); err != nil {
		k.f.Close()
		return err
	}
	st, err := k.f.Stat()
	if err != nil {
		k.f.Close()
		return err
	}
	if err := k.f.Sync(); err != nil {
		k.f.Close()
		return err
	}
	if err := k.f.Close(); err != nil {
		return err
	}
	k.meta.Size = st.Size()
	k.meta.CRC = k.hash.Sum(nil)
	b, err := json.Marshal(&k.meta)
	if err != nil {
		return err
	}
	if err := writeSynced(k.s.fs, filepath.Join(k.tmp, snapMetaFile), append(b, '\n')); err != nil {
		return err
	}
	// The names of state.bin and meta.json live in the directory.
	if err := syncDir(k.s.fs, k.tmp); err != nil {
		return err
	}
	if err := k.s.fs.Rename(k.tmp, strings.TrimSuffix(k.tmp, snapTmpSuffix)); err != nil {
		return err
	}
	return syncDir(k.s.fs, k.s.dir)
}

// Cancel drops the snapshot.
func (k *snapSink) Cancel() error {
	if k.closed {
		return nil
	}
	k.closed = true
	k.f.Close()
	return k.s.fs.RemoveAll(k.tmp)
}

// copyWriter hands the file its own copy of each buffer: a vfs.File may
// scribble over the buffer it was given (pebble's MemFS does under -race,
// to catch callers that reuse one), and bufio passes a large Write's
// buffer, the caller's, straight through.
type copyWriter struct {
	f       vfs.File
	scratch []byte
}

func (w *copyWriter) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		c := min(len(p), 64<<10)
		w.scratch = append(w.scratch[:0], p[:c]...)
		m, err := w.f.Write(w.scratch)
		n += m
		if err != nil {
			return n, err
		}
		p = p[c:]
	}
	return n, nil
}

// writeSynced creates path with b and fsyncs it (not its directory).
func writeSynced(fs vfs.FS, path string, b []byte) error {
	f, err := fs.Create(path, vfs.WriteCategoryUnspecified)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// syncDir fsyncs a directory: the names created, renamed or removed in it
// become durable.
func syncDir(fs vfs.FS, dir string) error {
	d, err := fs.OpenDir(dir)
	if err != nil {
		return err
	}
	if err := d.Sync(); err != nil {
		d.Close()
		return err
	}
	return d.Close()
}

// mkdirAllSync creates dir and its missing parents, fsyncing the parent of
// each directory it creates, so that the new directories survive a power
// loss. A directory that already exists is taken as durable: a node
// starts every replica at boot, and a directory fsync each would cost
// seconds at a thousand replicas on a slow disk.
func mkdirAllSync(fs vfs.FS, dir string) error {
	dir = filepath.Clean(dir)
	_, err := fs.Stat(dir)
	if err == nil || !errors.Is(err, os.ErrNotExist) {
		return err
	}
	parent := filepath.Dir(dir)
	if parent != dir {
		if err := mkdirAllSync(fs, parent); err != nil {
			return err
		}
	}
	if err := fs.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return syncDir(fs, parent)
}
