package logstore

import (
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// SlowFS is a fault-injection file system for tests: the OS file system
// (vfs.Default) whose file and directory syncs each wait an extra delay
// first, as on a slow or overloaded disk. Pass it as Options.FS. The delay
// can change at any time, also while the store is open; zero (the default)
// adds nothing.
//
// Only syncs are slowed, not reads or writes: a Raft log append costs one
// WAL fsync, and that is where a slow disk hurts consensus.
type SlowFS struct {
	vfs.FS
	delay atomic.Int64 // nanoseconds
}

// NewSlowFS returns a SlowFS over vfs.Default with no delay.
func NewSlowFS() *SlowFS { return &SlowFS{FS: vfs.Default} }

// SetSyncDelay sets the delay added to every sync from now on; 0 removes it.
func (fs *SlowFS) SetSyncDelay(d time.Duration) { fs.delay.Store(int64(max(d, 0))) }

// SyncDelay is the delay currently added to every sync.
func (fs *SlowFS) SyncDelay() time.Duration { return time.Duration(fs.delay.Load()) }

func (fs *SlowFS) wait() {
	if d := fs.SyncDelay(); d > 0 {
		time.Sleep(d)
	}
}

// wrap returns f with slow syncs; errors pass through.
func (fs *SlowFS) wrap(f vfs.File, err error) (vfs.File, error) {
	if err != nil {
		return f, err
	}
	return &slowFile{File: f, fs: fs}, nil
}

// Create, OpenReadWrite and ReuseForWrite open every file pebble writes
// (the WAL through Create and ReuseForWrite, tables and manifests through
// Create); OpenDir the directories it syncs after creating or renaming
// files. Open (read-only) is left alone: nothing syncs those.

// Create implements vfs.FS.
func (fs *SlowFS) Create(name string, category vfs.DiskWriteCategory) (vfs.File, error) {
	return fs.wrap(fs.FS.Create(name, category))
}

// OpenReadWrite implements vfs.FS.
func (fs *SlowFS) OpenReadWrite(name string, category vfs.DiskWriteCategory, opts ...vfs.OpenOption) (vfs.File, error) {
	return fs.wrap(fs.FS.OpenReadWrite(name, category, opts...))
}

// ReuseForWrite implements vfs.FS.
func (fs *SlowFS) ReuseForWrite(oldname, newname string, category vfs.DiskWriteCategory) (vfs.File, error) {
	return fs.wrap(fs.FS.ReuseForWrite(oldname, newname, category))
}

// OpenDir implements vfs.FS.
func (fs *SlowFS) OpenDir(name string) (vfs.File, error) {
	return fs.wrap(fs.FS.OpenDir(name))
}

// Unwrap implements vfs.FS: SlowFS wraps another file system.
func (fs *SlowFS) Unwrap() vfs.FS { return fs.FS }

// slowFile delays the syncs of one file by its file system's current delay.
type slowFile struct {
	vfs.File
	fs *SlowFS
}

func (f *slowFile) Sync() error {
	f.fs.wait()
	return f.File.Sync()
}

func (f *slowFile) SyncData() error {
	f.fs.wait()
	return f.File.SyncData()
}

func (f *slowFile) SyncTo(length int64) (bool, error) {
	f.fs.wait()
	return f.File.SyncTo(length)
}
