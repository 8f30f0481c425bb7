package cluster

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// The durable state of resumable uploads (uploads.go): one file per open
// upload in <data-dir>/uploads, named by the upload's id, rewritten whole
// (a synced temp file renamed over it, the directory synced) when the
// upload is created and after every request that moved its offset, before
// the answer tells the client that offset. A node that restarts, even
// after kill -9, finds the upload where its client last heard it was; the
// chunks it names are held by a majority of the channel's replicas (only
// such chunks count in an offset).
//
//	version byte (1) | id | channel | path | group id uvarint |
//	length uvarint | chunk size uvarint | content type |
//	sha256 flag byte (0, or 1 then 32 bytes) | cond byte | match (32 bytes) |
//	size uvarint | sha256 state (crypto/sha256's MarshalBinary) |
//	chunks uvarint n, then n ids (32 bytes each) |
//	holders uvarint n, then n server ids |
//	last request, Unix nanoseconds uvarint |
//	CRC-32C of everything before it (4 bytes, big-endian)
//
// Strings and the sha256 state are uvarint-length-prefixed bytes.

const (
	uploadsDir          = "uploads"
	uploadRecordVersion = 1
	// maxUploadRecord bounds a record read back: every chunk id of the
	// largest file, its holders and room to spare.
	maxUploadRecord = 4 << 20
)

var crc32c = crc32.MakeTable(crc32.Castagnoli)

// uploadRecord is what a restart needs of an open upload.
type uploadRecord struct {
	ID, Channel, Path string
	GroupID           uint64
	Length, ChunkSize int64
	ContentType       string
	SHA256            *[32]byte
	Cond              byte
	Match             [32]byte
	Size              int64
	Sum               []byte // the running sha256's state
	IDs               [][32]byte
	Holders           []string // server ids that hold every chunk in IDs
	Last              time.Time
}

func (r *uploadRecord) encode() []byte {
	b := []byte{uploadRecordVersion}
	for _, s := range []string{r.ID, r.Channel, r.Path} {
		b = appendBytes(b, []byte(s))
	}
	b = binary.AppendUvarint(b, r.GroupID)
	b = binary.AppendUvarint(b, uint64(r.Length))
	b = binary.AppendUvarint(b, uint64(r.ChunkSize))
	b = appendBytes(b, []byte(r.ContentType))
	if r.SHA256 != nil {
		b = append(append(b, 1), r.SHA256[:]...)
	} else {
		b = append(b, 0)
	}
	b = append(append(b, r.Cond), r.Match[:]...)
	b = binary.AppendUvarint(b, uint64(r.Size))
	b = appendBytes(b, r.Sum)
	b = binary.AppendUvarint(b, uint64(len(r.IDs)))
	for _, id := range r.IDs {
		b = append(b, id[:]...)
	}
	b = binary.AppendUvarint(b, uint64(len(r.Holders)))
	for _, h := range r.Holders {
		b = appendBytes(b, []byte(h))
	}
	b = binary.AppendUvarint(b, uint64(r.Last.UnixNano()))
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(b, crc32c))
}

var errBadUploadRecord = errors.New("cluster: malformed upload record")

func decodeUploadRecord(b []byte) (*uploadRecord, error) {
	if len(b) < 5 {
		return nil, fmt.Errorf("%w: %d bytes", errBadUploadRecord, len(b))
	}
	body, sum := b[:len(b)-4], binary.BigEndian.Uint32(b[len(b)-4:])
	if crc32.Checksum(body, crc32c) != sum {
		return nil, fmt.Errorf("%w: checksum", errBadUploadRecord)
	}
	d := decoder{b: body}
	if v := d.byte(); v != uploadRecordVersion {
		return nil, fmt.Errorf("%w: version %d", errBadUploadRecord, v)
	}
	r := &uploadRecord{ID: string(d.bytes()), Channel: string(d.bytes()), Path: string(d.bytes())}
	r.GroupID = d.uvarint()
	r.Length = int64(d.uvarint())
	r.ChunkSize = int64(d.uvarint())
	r.ContentType = string(d.bytes())
	if d.byte() == 1 {
		r.SHA256 = new([32]byte)
		copy(r.SHA256[:], d.fixed(32))
	}
	r.Cond = d.byte()
	copy(r.Match[:], d.fixed(32))
	r.Size = int64(d.uvarint())
	r.Sum = d.bytes()
	n := d.uvarint()
	if n > uint64(len(d.b))/32 {
		return nil, fmt.Errorf("%w: %d chunks", errBadUploadRecord, n)
	}
	r.IDs = make([][32]byte, n)
	for i := range r.IDs {
		copy(r.IDs[i][:], d.fixed(32))
	}
	n = d.uvarint()
	if n > uint64(len(d.b)) {
		return nil, fmt.Errorf("%w: %d holders", errBadUploadRecord, n)
	}
	for i := uint64(0); i < n && d.err == nil; i++ {
		r.Holders = append(r.Holders, string(d.bytes()))
	}
	r.Last = time.Unix(0, int64(d.uvarint()))
	if d.err != nil || len(d.b) != 0 {
		return nil, fmt.Errorf("%w: %v (%d bytes left)", errBadUploadRecord, d.err, len(d.b))
	}
	if r.ID == "" || r.ChunkSize <= 0 || r.Size < 0 || r.Size > r.Length {
		return nil, fmt.Errorf("%w: id %q, chunk size %d, at %d of %d bytes", errBadUploadRecord, r.ID, r.ChunkSize, r.Size, r.Length)
	}
	return r, nil
}

// fixed reads n bytes.
func (d *decoder) fixed(n int) []byte {
	if d.err != nil || len(d.b) < n {
		d.err = errShort
		return make([]byte, n)
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

// uploadStore keeps the records of a node's open uploads on disk.
type uploadStore struct {
	dir string
}

func (s uploadStore) path(id string) string { return filepath.Join(s.dir, id) }

// save writes r durably: when it returns nil, a restart finds r.
func (s uploadStore) save(r *uploadRecord) error {
	if err := os.MkdirAll(s.dir, 0o755); err != nil {
		return fmt.Errorf("cluster: save upload %s: %w", r.ID, err)
	}
	f, err := os.CreateTemp(s.dir, r.ID+".tmp*")
	if err != nil {
		return fmt.Errorf("cluster: save upload %s: %w", r.ID, err)
	}
	_, err = f.Write(r.encode())
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), s.path(r.ID))
	}
	if err == nil {
		err = syncDir(s.dir)
	}
	if err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("cluster: save upload %s: %w", r.ID, err)
	}
	return nil
}

// remove forgets upload id. The directory is synced too: a record that a
// power cut brought back would let a client resume an upload that ended.
func (s uploadStore) remove(id string) error {
	if err := os.Remove(s.path(id)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("cluster: remove upload %s: %w", id, err)
	}
	if err := syncDir(s.dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("cluster: remove upload %s: %w", id, err)
	}
	return nil
}

// load reads every record. A file that is not a sound record (a temp
// file a crash left, a record damaged on disk) is removed and reported in
// dropped: its upload cannot be resumed, and its chunks, unreferenced, go
// to the collector after the grace period.
func (s uploadStore) load() (recs []*uploadRecord, dropped []string, err error) {
	ents, err := os.ReadDir(s.dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("cluster: read %s: %w", s.dir, err)
	}
	for _, e := range ents {
		p := filepath.Join(s.dir, e.Name())
		var r *uploadRecord
		var rerr error
		if fi, err := e.Info(); err == nil && fi.Size() > maxUploadRecord {
			rerr = fmt.Errorf("%w: %d bytes", errBadUploadRecord, fi.Size())
		} else if strings.Contains(e.Name(), ".tmp") || !e.Type().IsRegular() {
			rerr = errors.New("a temp file of an interrupted save")
		} else {
			b, err := os.ReadFile(p)
			if err != nil {
				return nil, nil, fmt.Errorf("cluster: read %s: %w", p, err)
			}
			if r, rerr = decodeUploadRecord(b); rerr == nil && r.ID != e.Name() {
				rerr = fmt.Errorf("%w: names upload %q", errBadUploadRecord, r.ID)
			}
		}
		if rerr != nil {
			if err := os.RemoveAll(p); err != nil {
				return nil, nil, fmt.Errorf("cluster: remove %s: %w", p, err)
			}
			dropped = append(dropped, fmt.Sprintf("%s: %v", e.Name(), rerr))
			continue
		}
		recs = append(recs, r)
	}
	return recs, dropped, nil
}

// syncDir fsyncs a directory, so that the names created, renamed or
// removed in it survive a power cut.
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
