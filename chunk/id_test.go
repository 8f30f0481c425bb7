package chunk

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"math/rand/v2"
	"testing"
)

// randBytes returns n bytes drawn from seed.
func randBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		binary.LittleEndian.PutUint64(b[i:], r.Uint64())
	}
	for i := n &^ 7; i < n; i++ {
		b[i] = byte(r.Uint32())
	}
	return b
}

func h(parts ...[]byte) []byte {
	d := sha256.New()
	for _, p := range parts {
		d.Write(p)
	}
	return d.Sum(nil)
}

func lenBytes(n uint64) []byte {
	return binary.BigEndian.AppendUint64(nil, n)
}

// TestIDConstruction recomputes ids by the construction written out in
// chunk/DESIGN.md "Chunk ids", with crypto/sha256 alone.
func TestIDConstruction(t *testing.T) {
	leaf := func(b []byte) []byte { return h([]byte{0}, b) }
	node := func(l, r []byte) []byte { return h([]byte{1}, l, r) }
	id := func(n int, root []byte) []byte { return h([]byte{2}, lenBytes(uint64(n)), root) }
	data := randBytes(1, 3*BlockSize+5)
	b0, b1, b2, b3 := data[:BlockSize], data[BlockSize:2*BlockSize], data[2*BlockSize:3*BlockSize], data[3*BlockSize:]
	for _, tc := range []struct {
		name string
		data []byte
		want []byte
	}{
		{"empty", nil, id(0, h())},
		{"one byte", data[:1], id(1, leaf(data[:1]))},
		{"one full block", b0, id(BlockSize, leaf(b0))},
		{"two blocks", data[:BlockSize+1], id(BlockSize+1, node(leaf(b0), leaf(data[BlockSize:BlockSize+1])))},
		// Three leaves split 2 + 1 (the largest power of two below 3).
		{"three blocks", data[:3*BlockSize], id(3*BlockSize, node(node(leaf(b0), leaf(b1)), leaf(b2)))},
		{"four blocks", data, id(len(data), node(node(leaf(b0), leaf(b1)), node(leaf(b2), leaf(b3))))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Sum(tc.data); !bytes.Equal(got[:], tc.want) {
				t.Fatalf("Sum = %x, want %x", got, tc.want)
			}
		})
	}
}

// TestEmptyID pins the empty chunk's id, written in chunk/DESIGN.md.
func TestEmptyID(t *testing.T) {
	// Computed outside Go: sha256(b"\x02" + bytes(8) + sha256(b"")).
	const want = "f0c1e0b4cd1983b9c92909f8145cc102993e4c797489c0ba98639fd93056b82f"
	got := Sum(nil).String()
	if got != want {
		t.Fatalf("empty chunk id %s, want %s", got, want)
	}
	// sha256(b"\x02" + (1).to_bytes(8, "big") + sha256(b"\x00a")).
	if got := Sum([]byte("a")).String(); got != "a94fe96b1c38a1bdfb72939d6cd46bc31a31bfe1ad0d960804189a287b6558a0" {
		t.Fatalf(`id of "a" = %s`, got)
	}
	if again, _, _ := SumReader(bytes.NewReader(nil)); again.String() != got {
		t.Fatalf("SumReader of nothing = %s, Sum(nil) = %s", again, got)
	}
}

// TestHasherMatchesRecursiveTree: the streaming stack gives RFC 6962's
// recursive tree hash for every block count around the powers of two.
func TestHasherMatchesRecursiveTree(t *testing.T) {
	counts := []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 15, 16, 17, 31, 32, 33, 63, 64, 65}
	data := randBytes(2, 65*BlockSize+1)
	for _, n := range counts {
		for _, last := range []int{BlockSize, 1, BlockSize - 1} { // the last block's length
			length := 0
			if n > 0 {
				length = (n-1)*BlockSize + last
			}
			c := data[:length]
			var leaves []Digest
			for off := 0; off < len(c); off += BlockSize {
				leaves = append(leaves, LeafHash(c[off:min(off+BlockSize, len(c))]))
			}
			if got, want := Sum(c), IDOf(int64(len(c)), leaves); got != want {
				t.Errorf("%d bytes (%d blocks): streaming id %s, recursive %s", len(c), len(leaves), got, want)
			}
		}
	}
}

// TestHasherWriteSplits: the id does not depend on how the bytes are cut
// into writes, and Sum does not disturb later writes.
func TestHasherWriteSplits(t *testing.T) {
	data := randBytes(3, 5*BlockSize+77)
	want := Sum(data)
	r := rand.New(rand.NewPCG(4, 4))
	for trial := 0; trial < 50; trial++ {
		hs := NewHasher()
		rest := data
		for len(rest) > 0 {
			n := min(len(rest), r.IntN(3*BlockSize)+1)
			if r.IntN(4) == 0 {
				n = min(len(rest), r.IntN(3)) // tiny and empty writes
			}
			hs.Write(rest[:n])
			rest = rest[n:]
			if prefix := data[:len(data)-len(rest)]; r.IntN(5) == 0 && hs.Sum() != Sum(prefix) {
				t.Fatalf("trial %d: Sum of a %d-byte prefix differs", trial, len(prefix))
			}
		}
		if got := hs.Sum(); got != want {
			t.Fatalf("trial %d: id %s, want %s", trial, got, want)
		}
		hs.Reset()
		hs.Write(data[:10])
		if hs.Sum() != Sum(data[:10]) {
			t.Fatalf("trial %d: Reset hasher differs", trial)
		}
	}
}

// TestIDsDiffer: contents that differ by one bit, by length, or by a
// trailing zero padding have different ids.
func TestIDsDiffer(t *testing.T) {
	data := randBytes(5, 2*BlockSize+9)
	seen := map[ID]string{}
	add := func(name string, b []byte) {
		id := Sum(b)
		if prev, ok := seen[id]; ok {
			t.Errorf("%s and %s share id %s", name, prev, id)
		}
		seen[id] = name
	}
	add("data", data)
	add("prefix", data[:len(data)-1])
	add("padded", append(append([]byte(nil), data...), 0))
	add("block-aligned prefix", data[:2*BlockSize])
	flipped := append([]byte(nil), data...)
	flipped[BlockSize+3] ^= 0x10
	add("one bit flipped", flipped)
	add("empty", nil)
	add("one zero byte", []byte{0})
	// A chunk whose single block is the concatenation of two leaf hashes
	// must not collide with the two-leaf tree (domain separation).
	add("zeros", make([]byte, 64))
}

func TestParseID(t *testing.T) {
	id := Sum([]byte("x"))
	got, err := ParseID(id.String())
	if err != nil || got != id {
		t.Fatalf("ParseID(%s) = %s, %v", id, got, err)
	}
	var u ID
	if err := u.UnmarshalText([]byte(id.String())); err != nil || u != id {
		t.Fatalf("UnmarshalText = %s, %v", u, err)
	}
	for _, bad := range []string{"", "ab", id.String()[:63], id.String() + "0", "zz" + id.String()[2:]} {
		if _, err := ParseID(bad); err == nil {
			t.Errorf("ParseID(%q) succeeded", bad)
		}
	}
}

// FuzzHasherSplits: any cut of any bytes into two writes gives Sum's id,
// and the id matches the recursive tree.
func FuzzHasherSplits(f *testing.F) {
	f.Add([]byte("hello"), uint32(2), uint32(0))
	f.Add([]byte{}, uint32(0), uint32(0))
	f.Add([]byte{1, 2, 3}, uint32(1), uint32(BlockSize))
	f.Fuzz(func(t *testing.T, data []byte, cut uint32, pad uint32) {
		// Repeat the input to cross block edges with small inputs.
		if pad %= 3 * BlockSize; len(data) > 0 {
			for len(data) < int(pad) {
				data = append(data, data...)
			}
		}
		c := int(cut) % (len(data) + 1)
		hs := NewHasher()
		hs.Write(data[:c])
		hs.Write(data[c:])
		var leaves []Digest
		for off := 0; off < len(data); off += BlockSize {
			leaves = append(leaves, LeafHash(data[off:min(off+BlockSize, len(data))]))
		}
		if got, want := hs.Sum(), IDOf(int64(len(data)), leaves); got != want {
			t.Fatalf("%d bytes cut at %d: %s, recursive %s", len(data), c, got, want)
		}
	})
}

// TestHasherLeaves: the leaves a Hasher keeps are the chunk's, whatever
// the writes, and none are kept unless asked.
func TestHasherLeaves(t *testing.T) {
	for _, n := range []int{0, 1, BlockSize, 3*BlockSize + 1} {
		data := randBytes(uint64(n), n)
		hs := NewHasher()
		hs.KeepLeaves()
		for off := 0; off < n; off += 1000 {
			hs.Write(data[off:min(off+1000, n)])
		}
		want := leavesOf(data)
		got := hs.Leaves()
		if len(got) != len(want) {
			t.Fatalf("%d bytes: %d leaves, want %d", n, len(got), len(want))
		}
		for i := range got {
			if got[i] != want[i] {
				t.Fatalf("%d bytes: leaf %d differs", n, i)
			}
		}
	}
	hs := NewHasher()
	hs.Write(make([]byte, 2*BlockSize))
	if hs.Leaves() != nil {
		t.Fatal("leaves kept without KeepLeaves")
	}
}
