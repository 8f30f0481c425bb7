package chunk

import (
	"fmt"
	"hash/crc32"
	"io"
)

// blockSums are what a verified read checks a chunk's blocks against, both
// taken from bytes that hashed to the chunk's id: the leaf hashes (which
// proofs need) and a CRC-32C of every block. A read checks the CRC, not the
// leaf: SHA-256 runs at about 1.5 GB/s on one core even with SHA-NI and
// was half of a serving node's CPU in a download, CRC-32C (SSE 4.2) at
// over 10 GB/s. What a read must catch is the disk's corruption of bytes
// that were right when hashed — a CRC-32C misses a random corruption of a
// block with probability 2^-32 and no burst of up to 32 bits — while the
// id itself (the whole SHA-256 tree) is checked when a chunk is put, when
// it is first read after leaving the cache, and by Verify (anti-entropy).
// chunk/DESIGN.md "Verified reads" gives the reasoning.
type blockSums struct {
	leaves []Digest
	crcs   []uint32
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// blockCRC returns the CRC-32C of one block.
func blockCRC(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }

// readSums reads r to its end and returns the sums of its blocks and its
// length. The caller checks IDOf(length, sums.leaves) against the id.
func readSums(r io.Reader) (blockSums, int64, error) {
	var (
		sums   blockSums
		length int64
		buf    = make([]byte, BlockSize)
	)
	for {
		n, err := io.ReadFull(r, buf)
		if n > 0 {
			sums.leaves = append(sums.leaves, LeafHash(buf[:n]))
			sums.crcs = append(sums.crcs, blockCRC(buf[:n]))
			length += int64(n)
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return sums, length, nil
		}
		if err != nil {
			return blockSums{}, length, fmt.Errorf("chunk: read for leaves: %w", err)
		}
	}
}
