package chunk

import (
	"errors"
	"io"
	"math/rand/v2"
	"testing"
)

// proofLengths are the chunk lengths every proof property is checked at:
// the edges of one block, 4 MiB, and odd sizes whose trees are unbalanced.
var proofLengths = []int{
	1, BlockSize - 1, BlockSize, BlockSize + 1,
	3*BlockSize + 17, 5 * BlockSize, 6*BlockSize + 1, 7*BlockSize - 1,
	13*BlockSize + 12345, 4 << 20, 4<<20 - 1, 4<<20 + 1,
}

func leavesOf(data []byte) []Digest {
	var leaves []Digest
	for off := 0; off < len(data); off += BlockSize {
		leaves = append(leaves, LeafHash(data[off:min(off+BlockSize, len(data))]))
	}
	return leaves
}

func blockOf(data []byte, i int) []byte {
	return data[i*BlockSize : min((i+1)*BlockSize, len(data))]
}

func flipBit(b []byte, bit int) { b[bit/8] ^= 1 << (bit % 8) }

// TestProofs: for random chunks of every length in proofLengths, the
// audit path of every block verifies against the id and length, and fails
// for any flipped bit of the path, of the id or of the length, for a
// flipped bit of the block, for any other index and for other lengths.
func TestProofs(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 7))
	for li, length := range proofLengths {
		data := randBytes(uint64(100+li), length)
		id := Sum(data)
		leaves := leavesOf(data)
		n := len(leaves)
		if n != NumBlocks(int64(length)) {
			t.Fatalf("%d bytes: %d leaves, NumBlocks %d", length, n, NumBlocks(int64(length)))
		}
		if got := IDOf(int64(length), leaves); got != id {
			t.Fatalf("%d bytes: IDOf %s, Sum %s", length, got, id)
		}
		for i := 0; i < n; i++ {
			path, err := Prove(leaves, i)
			if err != nil {
				t.Fatalf("%d bytes: Prove(%d): %v", length, i, err)
			}
			block := blockOf(data, i)
			if err := VerifyBlock(id, int64(length), i, block, path); err != nil {
				t.Fatalf("%d bytes: block %d of %d does not verify: %v", length, i, n, err)
			}
			bad := func(what string, err error) {
				t.Helper()
				if !errors.Is(err, ErrBadProof) {
					t.Fatalf("%d bytes, block %d of %d: %s: err %v, want ErrBadProof", length, i, n, what, err)
				}
			}
			// Every bit of the path and of the id (against the
			// block's leaf: the bits of the path are what is checked,
			// not the block hashing again).
			for k := range path {
				for bit := 0; bit < 8*len(Digest{}); bit++ {
					p := append([]Digest(nil), path...)
					flipBit(p[k][:], bit)
					bad("path bit flipped", verifyLeaf(id, int64(length), i, leaves[i], p))
				}
			}
			for bit := 0; bit < 8*len(ID{}); bit++ {
				wrong := id
				flipBit(wrong[:], bit)
				bad("id bit flipped", verifyLeaf(wrong, int64(length), i, leaves[i], path))
			}
			// Every bit of the length, through the full check (which
			// refuses a block of the wrong size first) and against the
			// leaf alone (where the id must refuse it).
			for bit := 0; bit < 63; bit++ {
				l := int64(length) ^ 1<<bit
				bad("length bit flipped", VerifyBlock(id, l, i, block, path))
				bad("length bit flipped (leaf)", verifyLeaf(id, l, i, leaves[i], path))
			}
			// Every other index.
			for j := 0; j < n+2; j++ {
				if j != i {
					bad("wrong index", verifyLeaf(id, int64(length), j, leaves[i], path))
				}
			}
			bad("negative index", VerifyBlock(id, int64(length), -1, block, path))
			// A path one hash too long or too short.
			bad("path too long", verifyLeaf(id, int64(length), i, leaves[i], append(append([]Digest(nil), path...), leaves[i])))
			if len(path) > 0 {
				bad("path too short", verifyLeaf(id, int64(length), i, leaves[i], path[:len(path)-1]))
			}
			// Bits of the block: the first, the last and a few between
			// (each one a full block hash; all 524,288 per block would
			// take minutes and test SHA-256 rather than this code).
			bits := []int{0, 8*len(block) - 1}
			for k := 0; k < 4; k++ {
				bits = append(bits, r.IntN(8*len(block)))
			}
			for _, bit := range bits {
				b := append([]byte(nil), block...)
				flipBit(b, bit)
				bad("block bit flipped", VerifyBlock(id, int64(length), i, b, path))
			}
			bad("block one byte short", VerifyBlock(id, int64(length), i, block[:len(block)-1], path))
			bad("block one byte long", VerifyBlock(id, int64(length), i, append(append([]byte(nil), block...), 0), path))
			if i > 0 {
				bad("another block", VerifyBlock(id, int64(length), i, blockOf(data, i-1)[:len(block)], path))
			}
		}
		// Lengths near the true one, with the last block cut to match.
		for _, l := range []int{0, length - 1, length + 1, length - BlockSize, length + BlockSize, 2 * length} {
			if l < 0 || l == length {
				continue
			}
			i := NumBlocks(int64(l)) - 1
			if i < 0 || i >= n {
				continue
			}
			path, _ := Prove(leaves, i)
			block := blockOf(data, i)
			if bl := blockLen(int64(l), i); bl <= len(block) {
				block = block[:bl]
			}
			if err := VerifyBlock(id, int64(l), i, block, path); !errors.Is(err, ErrBadProof) {
				t.Fatalf("%d bytes: verified as %d bytes: %v", length, l, err)
			}
		}
	}
}

// TestProofOtherChunk: a proof for a block of one chunk does not verify
// against another chunk that holds the same block elsewhere.
func TestProofOtherChunk(t *testing.T) {
	a := randBytes(8, 3*BlockSize)
	b := append(append([]byte(nil), a[BlockSize:2*BlockSize]...), a...) // a's block 1 is b's block 0
	la, lb := leavesOf(a), leavesOf(b)
	path, _ := Prove(la, 1)
	if err := VerifyBlock(Sum(b), int64(len(b)), 0, blockOf(a, 1), path); !errors.Is(err, ErrBadProof) {
		t.Fatalf("a's proof verified against b: %v", err)
	}
	pb, _ := Prove(lb, 0)
	if err := VerifyBlock(Sum(b), int64(len(b)), 0, blockOf(a, 1), pb); err != nil {
		t.Fatalf("b's own proof: %v", err)
	}
}

// TestProofEmptyChunk: the empty chunk has no blocks, so nothing proves.
func TestProofEmptyChunk(t *testing.T) {
	if _, err := Prove(nil, 0); !errors.Is(err, ErrBadProof) {
		t.Fatalf("Prove on no leaves: %v", err)
	}
	if err := VerifyBlock(Sum(nil), 0, 0, nil, nil); !errors.Is(err, ErrBadProof) {
		t.Fatalf("VerifyBlock on the empty chunk: %v", err)
	}
	if _, err := Prove(leavesOf([]byte("x")), 1); !errors.Is(err, ErrBadProof) {
		t.Fatalf("Prove past the end: %v", err)
	}
}

// TestLeaves: Leaves reads the same leaves and length as the chunk's
// blocks give.
func TestLeaves(t *testing.T) {
	for _, length := range []int{0, 1, BlockSize, 2*BlockSize + 3} {
		data := randBytes(9, length)
		leaves, n, err := Leaves(&slowReader{data: data})
		if err != nil || n != int64(length) {
			t.Fatalf("%d bytes: Leaves: %d, %v", length, n, err)
		}
		if IDOf(n, leaves) != Sum(data) {
			t.Fatalf("%d bytes: leaves give another id", length)
		}
	}
}

// slowReader returns at most 1000 bytes per Read.
type slowReader struct{ data []byte }

func (r *slowReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, errEOF
	}
	n := copy(p[:min(len(p), 1000)], r.data)
	r.data = r.data[n:]
	return n, nil
}

// FuzzProof: in chunks of fuzzed length, the proof of a fuzzed block
// verifies, and no single flipped bit of the block's leaf, the path or the
// id lets it verify.
func FuzzProof(f *testing.F) {
	f.Add(uint64(1), uint8(3), uint16(17), uint8(1), uint32(5))
	f.Add(uint64(2), uint8(0), uint16(1), uint8(0), uint32(0))
	f.Add(uint64(3), uint8(8), uint16(0), uint8(7), uint32(1000))
	f.Fuzz(func(t *testing.T, seed uint64, blocks uint8, tail uint16, index uint8, bit uint32) {
		length := int(blocks%9)*BlockSize + int(tail)
		if length == 0 {
			return
		}
		data := randBytes(seed, length)
		id, leaves := Sum(data), leavesOf(data)
		i := int(index) % len(leaves)
		path, err := Prove(leaves, i)
		if err != nil {
			t.Fatal(err)
		}
		if err := VerifyBlock(id, int64(length), i, blockOf(data, i), path); err != nil {
			t.Fatalf("%d bytes, block %d: %v", length, i, err)
		}
		// Flip one bit of leaf || path || id.
		total := 8 * (len(Digest{}) * (2 + len(path)))
		b := int(bit) % total
		leaf, p, wrongID := leaves[i], append([]Digest(nil), path...), id
		switch k := b / 256; {
		case k == 0:
			flipBit(leaf[:], b%256)
		case k <= len(p):
			flipBit(p[k-1][:], b%256)
		default:
			flipBit(wrongID[:], b%256)
		}
		if err := verifyLeaf(wrongID, int64(length), i, leaf, p); !errors.Is(err, ErrBadProof) {
			t.Fatalf("%d bytes, block %d, bit %d flipped: %v", length, i, b, err)
		}
	})
}

var errEOF = io.EOF
