package chunk

import (
	"crypto/sha256"
	"fmt"
	"io"
	"math/bits"
)

// LeafHash returns H(0x00 || block), the leaf of block in a chunk's tree.
func LeafHash(block []byte) Digest {
	h := sha256.New()
	h.Write(leafPrefix)
	h.Write(block)
	var d Digest
	h.Sum(d[:0])
	return d
}

func innerHash(left, right Digest) Digest {
	var b [1 + 2*sha256.Size]byte
	b[0] = prefixInner
	copy(b[1:], left[:])
	copy(b[1+sha256.Size:], right[:])
	return Digest(sha256.Sum256(b[:]))
}

// Leaves reads a chunk from r to its end and returns the leaf hash of each
// of its blocks and its length: what Prove needs. It holds one block in
// memory.
func Leaves(r io.Reader) ([]Digest, int64, error) {
	sums, length, err := readSums(r)
	return sums.leaves, length, err
}

// RootOf returns the RFC 6962 Merkle tree hash of leaves (MTH). It is the
// recursive definition, used for proofs; Hasher computes the same root
// while streaming.
func RootOf(leaves []Digest) Digest {
	switch len(leaves) {
	case 0:
		return emptyRoot
	case 1:
		return leaves[0]
	}
	k := split(len(leaves))
	return innerHash(RootOf(leaves[:k]), RootOf(leaves[k:]))
}

// IDOf returns the id of a chunk of length bytes whose blocks have the given
// leaf hashes.
func IDOf(length int64, leaves []Digest) ID {
	return idOf(uint64(length), RootOf(leaves))
}

// split returns the largest power of two smaller than n (n > 1): RFC 6962's
// rule for where an unbalanced tree divides.
func split(n int) int {
	return 1 << (bits.Len(uint(n-1)) - 1)
}

// Prove returns the audit path of block i (RFC 6962 section 2.1.1, PATH(m,
// D[n])): the sibling hashes from the leaf up to the root, nearest first.
// With the block itself, the chunk's id and its length, the path proves that
// the block is block i of that chunk (VerifyBlock).
func Prove(leaves []Digest, i int) ([]Digest, error) {
	if i < 0 || i >= len(leaves) {
		return nil, fmt.Errorf("chunk: prove block %d of %d: %w", i, len(leaves), ErrBadProof)
	}
	var path []Digest
	return prove(path, leaves, i), nil
}

func prove(path []Digest, leaves []Digest, i int) []Digest {
	if len(leaves) <= 1 {
		return path
	}
	k := split(len(leaves))
	if i < k {
		path = prove(path, leaves[:k], i)
		return append(path, RootOf(leaves[k:]))
	}
	path = prove(path, leaves[k:], i-k)
	return append(path, RootOf(leaves[:k]))
}

// VerifyBlock checks that block is block i of the chunk with the given id
// and length, using its audit path (Prove). It returns nil or an error
// wrapping ErrBadProof. It needs nothing of the chunk but the block: this
// is what lets a single block be proven against the id alone.
//
// The length is bound into the id, so a wrong length fails like a wrong
// block; it also fixes how many blocks there are and how long block i must
// be, which the walk below relies on (RFC 9162 section 2.1.3.2).
func VerifyBlock(id ID, length int64, i int, block []byte, path []Digest) error {
	n := NumBlocks(length)
	if length < 0 || i < 0 || i >= n {
		return fmt.Errorf("chunk: block %d of a %d-byte chunk: %w", i, length, ErrBadProof)
	}
	if len(block) != blockLen(length, i) {
		return fmt.Errorf("chunk: block %d is %d bytes, want %d: %w", i, len(block), blockLen(length, i), ErrBadProof)
	}
	return verifyLeaf(id, length, i, LeafHash(block), path)
}

// verifyLeaf is VerifyBlock given the block's leaf hash.
func verifyLeaf(id ID, length int64, i int, leaf Digest, path []Digest) error {
	n := NumBlocks(length)
	if length < 0 || i < 0 || i >= n {
		return fmt.Errorf("chunk: block %d of a %d-byte chunk: %w", i, length, ErrBadProof)
	}
	fn, sn := uint64(i), uint64(n-1)
	r := leaf
	for _, p := range path {
		if sn == 0 {
			return fmt.Errorf("chunk: audit path of block %d too long: %w", i, ErrBadProof)
		}
		if fn&1 == 1 || fn == sn {
			r = innerHash(p, r)
			for fn&1 == 0 && fn != 0 {
				fn >>= 1
				sn >>= 1
			}
		} else {
			r = innerHash(r, p)
		}
		fn >>= 1
		sn >>= 1
	}
	if sn != 0 {
		return fmt.Errorf("chunk: audit path of block %d too short: %w", i, ErrBadProof)
	}
	if idOf(uint64(length), r) != id {
		return fmt.Errorf("chunk: block %d does not hash to chunk %s: %w", i, id, ErrBadProof)
	}
	return nil
}
