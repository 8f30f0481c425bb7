package fsm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"testing"
)

// fakeStream is a snapshot stream's header at index idx followed by n
// bytes: the backup format reads no further into it.
func fakeStream(idx uint64, n int) []byte {
	b := []byte(snapshotMagic)
	b = binary.BigEndian.AppendUint32(b, snapshotVersion)
	b = binary.BigEndian.AppendUint64(b, idx)
	b = binary.BigEndian.AppendUint64(b, 0)
	r := rand.New(rand.NewPCG(1, 2))
	for range n {
		b = append(b, byte(r.Uint32()))
	}
	return b
}

func writeTestBackup(t *testing.T, stream []byte) []byte {
	t.Helper()
	var out bytes.Buffer
	h, n, err := WriteBackup(&out, BackupHeader{Channel: "c", GroupID: 7, Term: 3}, bytes.NewReader(stream))
	if err != nil {
		t.Fatal(err)
	}
	if h.Index != 42 || n != int64(out.Len()) {
		t.Fatalf("header index %d, %d bytes written of %d", h.Index, n, out.Len())
	}
	return out.Bytes()
}

func readTestBackup(file []byte) (BackupHeader, []byte, error) {
	br, err := OpenBackup(bytes.NewReader(file))
	if err != nil {
		return BackupHeader{}, nil, err
	}
	var got bytes.Buffer
	// Small reads cross the held-back trailer at every offset.
	_, err = io.CopyBuffer(struct{ io.Writer }{&got}, struct{ io.Reader }{br}, make([]byte, 7))
	return br.Header, got.Bytes(), err
}

func TestBackupRoundTrip(t *testing.T) {
	for _, size := range []int{0, 1, 39, 40, 41, 300 << 10} {
		stream := fakeStream(42, size)
		h, got, err := readTestBackup(writeTestBackup(t, stream))
		if err != nil {
			t.Fatalf("size %d: %v", size, err)
		}
		if h.Channel != "c" || h.GroupID != 7 || h.Index != 42 || h.Term != 3 {
			t.Fatalf("header %+v", h)
		}
		if !bytes.Equal(got, stream) {
			t.Fatalf("size %d: the stream read back differs (%d bytes of %d)", size, len(got), len(stream))
		}
	}
}

func TestBackupDamageRefused(t *testing.T) {
	file := writeTestBackup(t, fakeStream(42, 100<<10))
	cases := map[string][]byte{
		"truncated by one byte":      file[:len(file)-1],
		"truncated at the trailer":   file[:len(file)-backupTrailerLen],
		"truncated mid-stream":       file[:len(file)/2],
		"truncated in the header":    file[:10],
		"empty":                      nil,
		"a byte appended":            append(bytes.Clone(file), 0),
		"bit flipped in the stream":  flip(file, len(file)/2),
		"bit flipped in the header":  flip(file, 20),
		"bit flipped in the trailer": flip(file, len(file)-1),
		"bit flipped in the length":  flip(file, len(file)-backupTrailerLen+7),
	}
	for name, f := range cases {
		t.Run(name, func(t *testing.T) {
			if _, _, err := readTestBackup(f); !errors.Is(err, ErrBadBackup) {
				t.Fatalf("read: %v, want ErrBadBackup", err)
			}
		})
	}
}

func flip(b []byte, at int) []byte {
	c := bytes.Clone(b)
	c[at] ^= 0x10
	return c
}
