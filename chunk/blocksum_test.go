package chunk

import (
	"bytes"
	"hash/crc32"
	"testing"
)

// TestBlockSums: the sums a kept-leaves Hasher gathers (in writes that cut
// blocks anywhere, and after Reset) and the sums readSums takes from a
// stream are the same, and are each block's leaf hash and CRC-32C.
func TestBlockSums(t *testing.T) {
	hs := NewHasher()
	hs.KeepLeaves()
	for _, n := range []int{0, 1, BlockSize - 1, BlockSize, BlockSize + 1, 3*BlockSize + 7} {
		data := randBytes(uint64(1000+n), n)
		hs.Reset()
		for off := 0; off < n; off += 777 {
			hs.Write(data[off:min(off+777, n)])
		}
		fromHasher := hs.sums()
		fromStream, length, err := readSums(bytes.NewReader(data))
		if err != nil || length != int64(n) {
			t.Fatalf("%d bytes: readSums: %d bytes, %v", n, length, err)
		}
		blocks := NumBlocks(int64(n))
		for name, s := range map[string]blockSums{"hasher": fromHasher, "stream": fromStream} {
			if len(s.leaves) != blocks || len(s.crcs) != blocks {
				t.Fatalf("%d bytes, %s: %d leaves and %d CRCs, want %d", n, name, len(s.leaves), len(s.crcs), blocks)
			}
			for i := 0; i < blocks; i++ {
				b := blockOf(data, i)
				if s.leaves[i] != LeafHash(b) {
					t.Fatalf("%d bytes, %s: leaf %d differs", n, name, i)
				}
				if s.crcs[i] != crc32.Checksum(b, crc32.MakeTable(crc32.Castagnoli)) {
					t.Fatalf("%d bytes, %s: CRC of block %d differs", n, name, i)
				}
			}
		}
	}
}
