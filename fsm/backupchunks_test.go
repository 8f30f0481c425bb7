package fsm

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/shardnet/shardnet/chunk"
)

// mapSource serves chunks from a map, as a node's chunk store would.
type mapSource map[[32]byte][]byte

func (m mapSource) BackupChunk(id [32]byte, limit int64, buf []byte) ([]byte, error) {
	b, ok := m[id]
	if !ok {
		return nil, chunk.ErrNotFound
	}
	return append(buf[:0], b...), nil
}

// filesChannelStream is the snapshot stream of a channel holding a key and
// two files that share a chunk, and the chunks they reference.
func filesChannelStream(t *testing.T) ([]byte, mapSource) {
	t.Helper()
	_, c := newChannel1(t)
	src := mapSource{}
	mk := func(path string, parts ...string) *PutFile {
		m := Manifest{Path: path, ChunkSize: 8, Holders: []string{"n1", "n2"}}
		for _, p := range parts {
			id := chunk.Sum([]byte(p))
			src[id] = []byte(p)
			m.Chunks = append(m.Chunks, id)
			m.Size += uint64(len(p))
		}
		return &PutFile{Manifest: m}
	}
	for _, l := range []*raft.Log{
		confLog(1, "n1", "n2", "n3"),
		cmdLog(t, 2, mk("a", "aaaaaaaa", "shared!!", "tail")),
		cmdLog(t, 3, mk("b/c", "shared!!", "other")),
		cmdLog(t, 4, &Put{Key: []byte("k"), Value: []byte("v")}),
	} {
		if r, ok := c.ApplyBatch([]*raft.Log{l})[0].(*Result); ok && r.Err != nil {
			t.Fatal(r.Err)
		}
	}
	return snapshotBytes(t, c), src
}

func TestBackupChunksRoundTrip(t *testing.T) {
	stream, src := filesChannelStream(t)
	var out bytes.Buffer
	h, n, err := WriteBackupChunks(&out, BackupHeader{Channel: "c"}, bytes.NewReader(stream), src)
	if err != nil || n != int64(out.Len()) || h.Index != 4 {
		t.Fatalf("write: %v (%d bytes of %d, index %d)", err, n, out.Len(), h.Index)
	}
	file := out.Bytes()
	got, chunks, err := readChunksBackup(file)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, stream) {
		t.Fatalf("the stream read back differs")
	}
	if len(chunks) != len(src) {
		t.Fatalf("%d chunks read back, want %d (deduplicated)", len(chunks), len(src))
	}
	for id, b := range src {
		if !bytes.Equal(chunks[id], b) {
			t.Fatalf("chunk %x read back as %q", id, chunks[id])
		}
	}

	// A source that lacks a chunk fails the backup.
	delete(src, chunk.Sum([]byte("other")))
	if _, _, err := WriteBackupChunks(io.Discard, BackupHeader{}, bytes.NewReader(stream), src); !errors.Is(err, chunk.ErrNotFound) {
		t.Fatalf("backup without a chunk: %v", err)
	}
	if _, _, err := WriteBackupChunks(io.Discard, BackupHeader{}, bytes.NewReader(stream), nil); err == nil {
		t.Fatal("backup of files without a chunk source succeeded")
	}

	// Damage anywhere is refused, and so is a chunk that does not hash to
	// its id even under a recomputed SHA-256.
	at := bytes.Index(file, []byte("aaaaaaaa"))
	resum := func(b []byte) []byte {
		s := sha256.Sum256(b[:len(b)-32])
		return append(b[:len(b)-32], s[:]...)
	}
	cases := map[string][]byte{
		"bit flipped in a chunk":          flip(file, at),
		"chunk forged, checksum redone":   resum(flip(file, at)),
		"truncated in the chunks":         file[:at+3],
		"truncated by one byte":           file[:len(file)-1],
		"a byte appended":                 append(bytes.Clone(file), 0),
		"bit flipped in the snapshot":     flip(file, at/2),
		"chunk count changed, sum redone": resum(flip(file, len(file)-33)),
	}
	for name, f := range cases {
		t.Run(name, func(t *testing.T) {
			if _, _, err := readChunksBackup(f); !errors.Is(err, ErrBadBackup) {
				t.Fatalf("read: %v, want ErrBadBackup", err)
			}
		})
	}
}

func readChunksBackup(file []byte) ([]byte, map[[32]byte][]byte, error) {
	br, err := OpenBackup(bytes.NewReader(file))
	if err != nil {
		return nil, nil, err
	}
	defer br.Close()
	chunks := map[[32]byte][]byte{}
	br.OnChunk = func(id [32]byte, data []byte) error {
		if _, dup := chunks[id]; dup {
			return fmt.Errorf("chunk %x twice", id)
		}
		chunks[id] = bytes.Clone(data)
		return nil
	}
	var got bytes.Buffer
	_, err = io.CopyBuffer(struct{ io.Writer }{&got}, struct{ io.Reader }{br}, make([]byte, 7))
	return got.Bytes(), chunks, err
}

// A version 1 backup (no chunk section) of a real snapshot still reads,
// unless its manifests reference chunks it cannot hold.
func TestBackupVersion1(t *testing.T) {
	_, c := newChannel1(t)
	c.ApplyBatch([]*raft.Log{cmdLog(t, 1, &Put{Key: []byte("k"), Value: []byte("v")})})
	keys := snapshotBytes(t, c)
	var out bytes.Buffer
	if _, _, err := WriteBackup(&out, BackupHeader{}, bytes.NewReader(keys)); err != nil {
		t.Fatal(err)
	}
	if got, _, err := readChunksBackup(out.Bytes()); err != nil || !bytes.Equal(got, keys) {
		t.Fatalf("version 1 backup of keys: %v", err)
	}
	files, _ := filesChannelStream(t)
	out.Reset()
	if _, _, err := WriteBackup(&out, BackupHeader{}, bytes.NewReader(files)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := readChunksBackup(out.Bytes()); !errors.Is(err, ErrBadBackup) {
		t.Fatalf("version 1 backup of files: %v, want ErrBadBackup", err)
	}
}
