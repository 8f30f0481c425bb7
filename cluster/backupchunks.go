package cluster

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/shardnet/shardnet/chunk"
	"github.com/shardnet/shardnet/fsm"
	"github.com/shardnet/shardnet/shard"
)

// The chunks of a channel's files in its backups (docs/operations.md
// "Backup and restore"; the format: fsm/backupchunks.go).
//
// Backup: the node that writes the backup file (the one the client
// reached) reads every chunk the snapshot's manifests reference from its
// own chunk store when it holds it whole and right, else from the
// channel's replicas (the download's get_chunk), and the file carries
// them after the snapshot. The snapshot is taken first; a chunk of a file
// deleted meanwhile stays because the backup holds collection on the
// channel's replicas from before its snapshot until it ends
// (backupholds.go). Should one be gone from every replica all the same (a
// replica the hold did not reach, a disk that lost it), the backup fails
// rather than write a file a restore could not serve.
//
// Restore: the entry node spools the chunk section to a file next to the
// uploaded snapshot while the upload arrives (each chunk checked against
// its id, the whole file against its SHA-256, before anything is
// created). Once the restored channel serves, it sends every chunk to
// every replica of the new channel (the upload's put_chunk, each replica's
// in a stream of its own), and answers only once a majority of them hold
// every chunk durably: a manifest must never point at data fewer than a
// majority hold. A replica that failed gets the chunks from anti-entropy.

// restoreHostWait bounds how long a restore waits for a replica of the new
// channel to start before it sends it chunks (put_chunk is refused by a
// node that hosts no replica of the group).
const restoreHostWait = time.Minute

// backupStream is a backup's snapshot stream that reads the chunks its
// manifests reference (fsm.ChunkSource), for fsm.WriteBackupChunks.
type backupStream struct {
	io.ReadCloser
	n       *Node
	ctx     context.Context
	channel string
	release func() // the backup's holds on collection (backupholds.go)
}

// Close ends the snapshot stream and the backup's holds.
func (b *backupStream) Close() error {
	err := b.ReadCloser.Close()
	b.release()
	return err
}

// BackupChunk returns chunk id: the local copy when it is whole and
// right, else one from a replica of the channel (stored back here when
// this node hosts one).
func (b *backupStream) BackupChunk(raw [32]byte, limit int64, buf []byte) ([]byte, error) {
	id := chunk.ID(raw)
	release := b.n.chunks.Pin(id)
	defer release()
	if int64(cap(buf)) < limit {
		buf = make([]byte, 0, limit)
	}
	data, err := b.n.localChunk(id, limit, buf)
	if err == nil {
		return data, nil
	}
	_, targets, terr := b.n.fileTargets(b.ctx, b.channel)
	if terr != nil {
		return nil, errors.Join(err, terr)
	}
	errs := []error{err}
	for _, t := range targets {
		if t.self || t.addr == "" {
			continue
		}
		data, err := b.n.route.getChunk(b.ctx, t.addr, id, buf[:0:limit])
		if err != nil {
			errs = append(errs, fmt.Errorf("from %s: %w", t.nodeID, err))
			continue
		}
		if b.n.hostsChannel(targets) {
			if err := b.n.chunks.PutExpect(id, bytes.NewReader(data)); err == nil {
				b.n.log.Info("restored a missing or corrupt chunk from a peer", "chunk", id.String(), "peer", t.nodeID)
			}
		}
		return data, nil
	}
	return nil, fmt.Errorf("%w: chunk %s: %v", ErrChunkUnavailable, id, errors.Join(errs...))
}

func (n *Node) hostsChannel(targets []*fileTarget) bool {
	for _, t := range targets {
		if t.self {
			return true
		}
	}
	return false
}

// localChunk reads chunk id whole from this node's store into buf and
// checks it against its id; a corrupt copy is dropped (Store.Verify), so
// that the good one fetched next takes its place.
func (n *Node) localChunk(id chunk.ID, limit int64, buf []byte) ([]byte, error) {
	rd, err := n.chunks.Get(id)
	if err != nil {
		return nil, err
	}
	defer rd.Close()
	if rd.Size() > limit {
		_ = n.chunks.Verify(id)
		return nil, fmt.Errorf("chunk %s: %d bytes here, over its chunk size %d: %w", id, rd.Size(), limit, chunk.ErrCorrupt)
	}
	data := buf[:rd.Size()]
	if _, err := io.ReadFull(io.NewSectionReader(rd, 0, rd.Size()), data); err != nil {
		return nil, fmt.Errorf("chunk %s: %w", id, err)
	}
	if chunk.Sum(data) != id {
		_ = n.chunks.Verify(id)
		return nil, fmt.Errorf("chunk %s: %w", id, chunk.ErrCorrupt)
	}
	return data, nil
}

// chunkSpool is the chunk section of a restore's upload, kept in a file of
// the restores dir as id (32 bytes), BE32 length, bytes records.
type chunkSpool struct {
	path          string
	f             *os.File
	w             *bufio.Writer
	count, nbytes int64
}

// spoolChunks makes br hand its chunks to a new spool file.
func (n *Node) spoolChunks(br *fsm.BackupReader) (*chunkSpool, error) {
	dir := filepath.Join(n.cfg.DataDir, restoresDir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("cluster: restore: %w", err)
	}
	sp := &chunkSpool{path: filepath.Join(dir, newUploadID()+".chunks")}
	f, err := os.Create(sp.path)
	if err != nil {
		return nil, fmt.Errorf("cluster: restore: %w", err)
	}
	sp.f, sp.w = f, bufio.NewWriterSize(f, 256<<10)
	br.OnChunk = func(id [32]byte, data []byte) error {
		rec := binary.BigEndian.AppendUint32(append(make([]byte, 0, 36), id[:]...), uint32(len(data)))
		if _, err := sp.w.Write(rec); err != nil {
			return fmt.Errorf("cluster: restore: spool chunks: %w", err)
		}
		if _, err := sp.w.Write(data); err != nil {
			return fmt.Errorf("cluster: restore: spool chunks: %w", err)
		}
		sp.count++
		sp.nbytes += int64(len(data))
		return nil
	}
	return sp, nil
}

// finish makes the spool durable once the upload was read whole.
func (sp *chunkSpool) finish() error {
	if err := sp.w.Flush(); err != nil {
		return fmt.Errorf("cluster: restore: spool chunks: %w", err)
	}
	if err := sp.f.Sync(); err != nil {
		return fmt.Errorf("cluster: restore: spool chunks: %w", err)
	}
	return nil
}

// remove deletes the spool file.
func (sp *chunkSpool) remove() {
	sp.f.Close()
	os.Remove(sp.path)
}

// placeRestoredChunks sends the spooled chunks to every replica of channel
// at once and returns once every replica answered for every chunk: nil
// when a majority holds all of them.
func (n *Node) placeRestoredChunks(ctx context.Context, channel string, sp *chunkSpool) error {
	if sp.count == 0 {
		return nil
	}
	ch, targets, err := n.fileTargets(ctx, channel)
	if err != nil {
		return err
	}
	start := time.Now()
	errs := make([]error, len(targets))
	var wg sync.WaitGroup
	for i, t := range targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = n.pushSpool(ctx, ch.GroupID, t, sp.path)
		}()
	}
	wg.Wait()
	held := 0
	for i, err := range errs {
		if err == nil {
			held++
			continue
		}
		n.log.Warn("a replica of a restored channel did not store its chunks; anti-entropy will", "channel", channel, "node", targets[i].nodeID, "error", err)
	}
	if need := len(targets)/2 + 1; held < need {
		return fmt.Errorf("%w: %d of %d replicas of %q stored the restored chunks: %v", ErrNotEnoughHolders, held, len(targets), channel, errors.Join(errs...))
	}
	n.log.Info("restored chunks placed", "channel", channel, "chunks", sp.count, "bytes", sp.nbytes,
		"replicas", held, "duration", time.Since(start))
	return nil
}

// pushSpool stores every chunk of the spool file on target t, in order,
// and stops at the first it cannot.
func (n *Node) pushSpool(ctx context.Context, gid uint64, t *fileTarget, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	r := bufio.NewReaderSize(f, 256<<10)
	var rec [36]byte
	var buf []byte
	hostWait := time.Now().Add(restoreHostWait)
	for {
		if _, err := io.ReadFull(r, rec[:]); err == io.EOF {
			return nil
		} else if err != nil {
			return fmt.Errorf("read the chunk spool: %w", err)
		}
		var id chunk.ID
		copy(id[:], rec[:32])
		size := int(binary.BigEndian.Uint32(rec[32:]))
		if cap(buf) < size {
			buf = make([]byte, size)
		}
		data := buf[:size]
		if _, err := io.ReadFull(r, data); err != nil {
			return fmt.Errorf("read the chunk spool: %w", err)
		}
		for {
			if t.self {
				err = chunkErr(n.chunks.PutExpect(id, bytes.NewReader(data)))
			} else {
				err = n.route.putChunk(ctx, t.addr, gid, id, data)
			}
			// The replica may not have started yet: the reconciler
			// starts it when it sees the channel.
			if err == nil || !errors.Is(err, shard.ErrNotHosted) || time.Now().After(hostWait) {
				break
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(200 * time.Millisecond):
			}
		}
		if err != nil {
			return fmt.Errorf("chunk %s to %s: %w", id, t.nodeID, err)
		}
	}
}
