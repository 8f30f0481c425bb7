package cluster

import (
	"crypto/sha256"
	"encoding"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// An upload's record reads back as written, with the running sha256
// going on where it stopped; a damaged record, a temp file of an
// interrupted save and a record under another name are removed on load.
func TestUploadRecords(t *testing.T) {
	s := uploadStore{dir: filepath.Join(t.TempDir(), uploadsDir)}
	if recs, dropped, err := s.load(); err != nil || len(recs)+len(dropped) != 0 {
		t.Fatalf("load of no dir: %v %v %v", recs, dropped, err)
	}
	h := sha256.New()
	h.Write([]byte("the first bytes"))
	state, err := h.(encoding.BinaryMarshaler).MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	want := &uploadRecord{
		ID: "0123abcd", Channel: "media", Path: "v/clip.mp4", GroupID: 7,
		Length: 10 << 20, ChunkSize: 1 << 20, ContentType: "video/mp4",
		SHA256: &[32]byte{1, 2, 3}, Cond: 2, Match: [32]byte{9},
		Size: 2 << 20, Sum: state, IDs: [][32]byte{{1}, {2}}, Holders: []string{"a-1", "b-1"},
		Last: time.Unix(1700000000, 123),
	}
	if err := s.save(want); err != nil {
		t.Fatal(err)
	}
	bare := &uploadRecord{ID: "bare", Channel: "c", Path: "p", ChunkSize: 4 << 20, Sum: state, IDs: [][32]byte{}, Last: time.Unix(5, 0)}
	if err := s.save(bare); err != nil {
		t.Fatal(err)
	}
	// Damaged: one bit flipped. A temp file. A record under another name.
	b := want.encode()
	b[10] ^= 1
	if err := os.WriteFile(filepath.Join(s.dir, "flipped"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(s.dir, "x.tmp123"), want.encode(), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(s.dir, "other"), want.encode(), 0o644); err != nil {
		t.Fatal(err)
	}
	recs, dropped, err := s.load()
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 2 || len(dropped) != 3 {
		t.Fatalf("loaded %d records, dropped %v", len(recs), dropped)
	}
	got := recs[0]
	if got.ID == "bare" {
		got = recs[1]
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("read back\n%+v\nwant\n%+v", got, want)
	}
	h2 := sha256.New()
	if err := h2.(encoding.BinaryUnmarshaler).UnmarshalBinary(got.Sum); err != nil {
		t.Fatal(err)
	}
	h2.Write([]byte(" and the rest"))
	if string(h2.Sum(nil)) != string(func() []byte { s := sha256.Sum256([]byte("the first bytes and the rest")); return s[:] }()) {
		t.Fatal("the running sha256 does not go on where it stopped")
	}
	ents, _ := os.ReadDir(s.dir)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if strings.Join(names, ",") != "0123abcd,bare" {
		t.Fatalf("left in the dir: %v", names)
	}
	if err := s.remove("bare"); err != nil {
		t.Fatal(err)
	}
	if err := s.remove("bare"); err != nil {
		t.Fatalf("removing a record twice: %v", err)
	}
	if recs, _, _ := s.load(); len(recs) != 1 {
		t.Fatalf("after remove: %d records", len(recs))
	}
}

// A collection round that began before a hold, or runs while one is in
// force, stops; a lapsed hold stops nothing.
func TestCollectHolds(t *testing.T) {
	var h collectHolds
	now := time.Now()
	e := h.begin()
	if h.blocks(e, now) {
		t.Fatal("blocked without a hold")
	}
	h.hold("a", now.Add(time.Minute))
	if !h.blocks(e, now) {
		t.Fatal("a round that began before a hold goes on")
	}
	h.release("a")
	if !h.blocks(e, now) {
		t.Fatal("a round that began before a hold, since released, goes on")
	}
	e = h.begin()
	if h.blocks(e, now) {
		t.Fatal("a round that began after the hold ended is blocked")
	}
	h.hold("b", now.Add(time.Second))
	e = h.begin()
	if !h.blocks(e, now) {
		t.Fatal("a hold in force does not block")
	}
	if h.blocks(e, now.Add(2*time.Second)) {
		t.Fatal("a lapsed hold blocks")
	}
}
