package fsm

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/hashicorp/raft"
)

func confLog(index uint64, voters ...string) *raft.Log {
	var c raft.Configuration
	for _, v := range voters {
		c.Servers = append(c.Servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(v), Address: raft.ServerAddress(v)})
	}
	return &raft.Log{Index: index, Term: 1, Type: raft.LogConfiguration, Data: raft.EncodeConfiguration(c)}
}

func testManifest(path string, size uint64, sum byte, holders ...string) Manifest {
	m := Manifest{Path: path, Size: size, ContentType: "image/png", ChunkSize: 4, Holders: holders}
	m.SHA256[0] = sum
	for n := max((size+3)/4, 1); n > 0; n-- {
		m.Chunks = append(m.Chunks, [32]byte{sum, byte(n)})
	}
	return m
}

func TestFileCommandsRoundTrip(t *testing.T) {
	for _, c := range []Command{
		&PutFile{Manifest: testManifest("a/b.png", 9, 1, "n1", "n2")},
		&PutFile{Manifest: testManifest("x", 0, 2, "n1"), Cond: CondAbsent, Quota: 100},
		&PutFile{Manifest: testManifest("x", 4, 2, "n1"), Cond: CondMatch, Match: [32]byte{7}},
		&DeleteFile{Path: "a/b.png"},
		&DeleteFile{Path: "a/b.png", Cond: CondMatch, Match: [32]byte{3}},
	} {
		b, err := Encode(c)
		if err != nil {
			t.Fatalf("Encode(%+v): %v", c, err)
		}
		d, err := Decode(b)
		if err != nil {
			t.Fatalf("Decode: %v", err)
		}
		b2, _ := Encode(d)
		if !bytes.Equal(b, b2) {
			t.Fatalf("round trip of %T differs", c)
		}
		if EntryVersion(b) != 4 {
			t.Fatalf("EntryVersion = %d", EntryVersion(b))
		}
	}
}

func TestFileCommandsRefused(t *testing.T) {
	bad := testManifest("a", 9, 1, "n1")
	bad.Chunks = bad.Chunks[:2] // 9 bytes in chunks of 4 make 3
	for name, c := range map[string]Command{
		"dotdot":      &PutFile{Manifest: testManifest("a/../b", 1, 1, "n1")},
		"empty seg":   &PutFile{Manifest: testManifest("a//b", 1, 1, "n1")},
		"leading":     &PutFile{Manifest: testManifest("/a", 1, 1, "n1")},
		"nul":         &PutFile{Manifest: testManifest("a\x00b", 1, 1, "n1")},
		"long":        &PutFile{Manifest: testManifest(string(bytes.Repeat([]byte("a"), 1025)), 1, 1, "n1")},
		"chunks":      &PutFile{Manifest: bad},
		"no holders":  &PutFile{Manifest: testManifest("a", 1, 1)},
		"delete cond": &DeleteFile{Path: "a", Cond: CondAbsent},
	} {
		if _, err := Encode(c); err == nil {
			t.Errorf("%s: Encode accepted it", name)
		}
	}
}

func TestApplyFiles(t *testing.T) {
	s, c := newChannel1(t)
	apply := func(l *raft.Log) *Result {
		r, _ := c.ApplyBatch([]*raft.Log{l})[0].(*Result)
		return r
	}
	put := func(index uint64, p *PutFile) *Result { return apply(cmdLog(t, index, p)) }

	// No configuration recorded: nothing can be a majority of it.
	if r := put(1, &PutFile{Manifest: testManifest("f", 5, 1, "n1", "n2")}); !errors.Is(r.Err, ErrHoldersMinority) {
		t.Fatalf("put before a configuration: %v", r.Err)
	}
	apply(confLog(2, "n1", "n2", "n3"))
	if r := put(3, &PutFile{Manifest: testManifest("f", 5, 1, "n1", "n9")}); !errors.Is(r.Err, ErrHoldersMinority) {
		t.Fatalf("put held by one voter of three: %v", r.Err)
	}
	if r := put(4, &PutFile{Manifest: testManifest("f", 5, 1, "n1", "n3"), Cond: CondAbsent}); r.Err != nil {
		t.Fatalf("put: %v", r.Err)
	}
	if r := put(5, &PutFile{Manifest: testManifest("f", 5, 2, "n1", "n3"), Cond: CondAbsent}); !errors.Is(r.Err, ErrPrecondition) {
		t.Fatalf("create-only put over a file: %v", r.Err)
	}
	if r := put(6, &PutFile{Manifest: testManifest("f", 6, 2, "n1", "n3"), Cond: CondMatch, Match: [32]byte{9}}); !errors.Is(r.Err, ErrPrecondition) {
		t.Fatalf("if-match put with another etag: %v", r.Err)
	}
	if r := put(7, &PutFile{Manifest: testManifest("f", 6, 2, "n1", "n3"), Cond: CondMatch, Match: [32]byte{1}}); r.Err != nil {
		t.Fatalf("if-match put: %v", r.Err)
	}
	m, found, err := c.File("f")
	if err != nil || !found || m.Size != 6 || m.CreateIndex != 4 || m.ModifyIndex != 7 || m.SHA256[0] != 2 {
		t.Fatalf("File = %+v, %v, %v", m, found, err)
	}
	if st := c.Stats(); st.Bytes != 6 || st.Keys != 0 {
		t.Fatalf("stats = %+v, want 6 bytes and no keys", st)
	}
	// Files are not keys.
	if es, _, _ := c.List(nil, nil, 0); len(es) != 0 {
		t.Fatalf("List shows %d entries", len(es))
	}
	// Quota: the file's bytes count.
	if r := put(8, &PutFile{Manifest: testManifest("g", 10, 3, "n1", "n2"), Quota: 15}); !errors.Is(r.Err, ErrFileQuota) {
		t.Fatalf("put over quota: %v", r.Err)
	}
	if r := put(9, &PutFile{Manifest: testManifest("g", 9, 3, "n1", "n2"), Quota: 15}); r.Err != nil {
		t.Fatalf("put within quota: %v", r.Err)
	}
	ms, more, err := c.Files("", "", 1)
	if err != nil || !more || len(ms) != 1 || ms[0].Path != "f" {
		t.Fatalf("Files page 1 = %+v, %v, %v", ms, more, err)
	}
	ms, more, _ = c.Files("", "f", 0)
	if more || len(ms) != 1 || ms[0].Path != "g" {
		t.Fatalf("Files after f = %+v, %v", ms, more)
	}

	// Snapshots carry manifests and the configuration.
	stream := snapshotBytes(t, c)
	s2 := openStore(t, t.TempDir())
	c2 := openChannel(t, s2, 1)
	if err := c2.Restore(io.NopCloser(bytes.NewReader(stream))); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	if stateHash(t, s, 1) != stateHash(t, s2, 1) || c.Stats() != c2.Stats() {
		t.Fatalf("restored state differs: %+v vs %+v", c2.Stats(), c.Stats())
	}
	if conf, ok, _ := c2.Configuration(); !ok || len(conf.Voters) != 3 || conf.Index != 2 {
		t.Fatalf("restored configuration = %+v, %v", conf, ok)
	}

	if r := apply(cmdLog(t, 10, &DeleteFile{Path: "f", Cond: CondMatch, Match: [32]byte{1}})); !errors.Is(r.Err, ErrPrecondition) {
		t.Fatalf("if-match delete of another version: %v", r.Err)
	}
	if r := apply(cmdLog(t, 11, &DeleteFile{Path: "f"})); r.Err != nil {
		t.Fatalf("delete: %v", r.Err)
	}
	if r := apply(cmdLog(t, 12, &DeleteFile{Path: "f"})); !errors.Is(r.Err, ErrFileNotFound) {
		t.Fatalf("delete again: %v", r.Err)
	}
	if st := c.Stats(); st.Bytes != 9 {
		t.Fatalf("bytes after delete = %d", st.Bytes)
	}
	// Results travel between nodes with their outcome.
	for _, e := range []error{ErrFileNotFound, ErrPrecondition, ErrHoldersMinority, ErrFileQuota} {
		r, err := DecodeResult(EncodeResult(nil, &Result{Index: 3, Err: e}))
		if err != nil || !errors.Is(r.Err, e) {
			t.Fatalf("result %v came back as %v, %v", e, r, err)
		}
	}
}
