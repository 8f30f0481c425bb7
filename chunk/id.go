package chunk

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
)

// BlockSize is the size of the Merkle tree's leaves: every block of a chunk
// but the last is exactly this long. It is part of every id: changing it
// changes the id of every chunk longer than one block.
const BlockSize = 64 << 10

// Domain separation prefixes (chunk/DESIGN.md "Chunk ids"): a leaf, an
// inner node and the id are hashed with distinct first bytes, so no leaf
// can pass for an inner node (RFC 6962's second-preimage defence) and no
// tree root can pass for an id.
const (
	prefixLeaf  = 0x00
	prefixInner = 0x01
	prefixID    = 0x02
)

// leafPrefix is written through hash.Hash, where a literal would escape to
// the heap once per block.
var leafPrefix = []byte{prefixLeaf}

// ID names a chunk: H(0x02 || uint64 big-endian length || root), with root
// the RFC 6962 Merkle tree hash over the chunk's 64 KiB blocks
// (chunk/DESIGN.md "Chunk ids").
type ID [sha256.Size]byte

// Digest is a node of a chunk's Merkle tree: a leaf hash H(0x00 || block)
// or an inner hash H(0x01 || left || right). It is a type of its own so a
// tree node is never taken for an id.
type Digest [sha256.Size]byte

// String returns the id in lower-case hex, the form used in file names and
// on the wire.
func (id ID) String() string { return hex.EncodeToString(id[:]) }

// MarshalText encodes the id as hex (JSON manifests carry ids as strings).
func (id ID) MarshalText() ([]byte, error) { return []byte(id.String()), nil }

// UnmarshalText parses a hex id.
func (id *ID) UnmarshalText(b []byte) error {
	p, err := ParseID(string(b))
	if err != nil {
		return err
	}
	*id = p
	return nil
}

// ParseID parses the 64 lower- or upper-case hex digits of an id.
func ParseID(s string) (ID, error) {
	var id ID
	if len(s) != 2*len(id) {
		return id, fmt.Errorf("chunk: id %q: want %d hex digits", s, 2*len(id))
	}
	if _, err := hex.Decode(id[:], []byte(s)); err != nil {
		return id, fmt.Errorf("chunk: id %q: %w", s, err)
	}
	return id, nil
}

// Hasher computes a chunk's id from its bytes as they stream past, in
// constant memory: the hash state of the current block and the stack of
// complete subtree roots, at most one per bit of the block count. Write
// never fails. The zero value is not usable; call NewHasher.
type Hasher struct {
	leaf    hash.Hash // H(0x00 || the current block so far)
	inBlock int       // bytes of the current block written to leaf
	length  uint64
	// stack holds the roots of complete perfect subtrees, largest first;
	// levels[i] is the height of stack[i] (a leaf is 0). Pushing a leaf
	// merges equal heights like a binary counter's carries, so the stack
	// mirrors the bits of the block count.
	stack  []Digest
	levels []uint8
	sum    []byte // scratch for hash.Sum
	// leaves, when kept (KeepLeaves), records every complete block's
	// leaf hash: 32 bytes per 64 KiB, what a verified read of the chunk
	// needs without hashing it twice.
	keep   bool
	leaves []Digest
	crc    uint32   // CRC-32C of the current block so far, when kept
	crcs   []uint32 // every complete block's CRC-32C, when kept
}

// KeepLeaves makes h record the leaf hash of every block, for Leaves. Call
// it before the first Write.
func (h *Hasher) KeepLeaves() { h.keep = true }

// Leaves returns the leaf hashes of the blocks written so far (the short
// last block included) if KeepLeaves was called, else nil.
func (h *Hasher) Leaves() []Digest {
	if !h.keep {
		return nil
	}
	leaves := append([]Digest(nil), h.leaves...)
	if h.inBlock > 0 {
		var d Digest
		h.sum = h.leaf.Sum(h.sum[:0])
		copy(d[:], h.sum)
		leaves = append(leaves, d)
	}
	return leaves
}

// sums returns the leaf hashes and CRC-32Cs of the blocks written so far
// (the short last block included); h must keep its leaves.
func (h *Hasher) sums() blockSums {
	sums := blockSums{leaves: h.Leaves(), crcs: append([]uint32(nil), h.crcs...)}
	if h.inBlock > 0 {
		sums.crcs = append(sums.crcs, h.crc)
	}
	return sums
}

// NewHasher returns a Hasher for one chunk.
func NewHasher() *Hasher {
	h := &Hasher{leaf: sha256.New(), sum: make([]byte, 0, sha256.Size)}
	h.leaf.Write(leafPrefix)
	return h
}

// Reset makes h ready for another chunk.
func (h *Hasher) Reset() {
	h.leaf.Reset()
	h.leaf.Write(leafPrefix)
	h.inBlock = 0
	h.length = 0
	h.stack = h.stack[:0]
	h.levels = h.levels[:0]
	h.leaves = h.leaves[:0]
	h.crc = 0
	h.crcs = h.crcs[:0]
}

// Write hashes p as the next bytes of the chunk.
func (h *Hasher) Write(p []byte) (int, error) {
	n := len(p)
	h.length += uint64(n)
	for len(p) > 0 {
		take := min(BlockSize-h.inBlock, len(p))
		h.leaf.Write(p[:take])
		if h.keep {
			h.crc = crc32.Update(h.crc, castagnoli, p[:take])
		}
		h.inBlock += take
		p = p[take:]
		if h.inBlock == BlockSize {
			d := h.leafSum()
			if h.keep {
				h.leaves = append(h.leaves, d)
				h.crcs = append(h.crcs, h.crc)
				h.crc = 0
			}
			h.push(d)
		}
	}
	return n, nil
}

// Len returns the bytes written so far.
func (h *Hasher) Len() int64 { return int64(h.length) }

// leafSum ends the current block and starts the next.
func (h *Hasher) leafSum() Digest {
	var d Digest
	h.sum = h.leaf.Sum(h.sum[:0])
	copy(d[:], h.sum)
	h.leaf.Reset()
	h.leaf.Write(leafPrefix)
	h.inBlock = 0
	return d
}

func (h *Hasher) push(d Digest) {
	var level uint8
	for n := len(h.stack); n > 0 && h.levels[n-1] == level; n = len(h.stack) {
		d = h.node(h.stack[n-1], d)
		h.stack = h.stack[:n-1]
		h.levels = h.levels[:n-1]
		level++
	}
	h.stack = append(h.stack, d)
	h.levels = append(h.levels, level)
}

func (h *Hasher) node(left, right Digest) Digest {
	return innerHash(left, right)
}

// Root returns the Merkle tree hash of the blocks written so far, without
// changing h.
func (h *Hasher) Root() Digest {
	if h.length == 0 {
		return emptyRoot // RFC 6962: MTH({}) = SHA-256()
	}
	top := len(h.stack) - 1
	var acc Digest
	if h.inBlock > 0 {
		// The short last block: its leaf hash without ending the block.
		// hash.Hash.Sum does not change the running state.
		h.sum = h.leaf.Sum(h.sum[:0])
		copy(acc[:], h.sum)
		top++
	} else {
		acc = h.stack[top]
	}
	// RFC 6962 splits n leaves at the largest power of two below n: its
	// left subtrees are exactly the stack's perfect subtrees, largest
	// first, so folding the stack from the right gives the same root.
	for i := top - 1; i >= 0; i-- {
		acc = h.node(h.stack[i], acc)
	}
	return acc
}

// Sum returns the id of the bytes written so far, without changing h.
func (h *Hasher) Sum() ID {
	return idOf(uint64(h.length), h.Root())
}

var emptyRoot = Digest(sha256.Sum256(nil))

func idOf(length uint64, root Digest) ID {
	var b [1 + 8 + sha256.Size]byte
	b[0] = prefixID
	binary.BigEndian.PutUint64(b[1:9], length)
	copy(b[9:], root[:])
	return ID(sha256.Sum256(b[:]))
}

// Sum returns the id of data.
func Sum(data []byte) ID {
	h := NewHasher()
	h.Write(data)
	return h.Sum()
}

// SumReader reads r to its end and returns the id of its bytes and their
// length, in constant memory.
func SumReader(r io.Reader) (ID, int64, error) {
	h := NewHasher()
	n, err := io.Copy(h, r)
	if err != nil {
		return ID{}, n, fmt.Errorf("chunk: hash: %w", err)
	}
	return h.Sum(), n, nil
}

// NumBlocks returns the number of blocks of a chunk of length bytes (0 for
// the empty chunk).
func NumBlocks(length int64) int {
	return int((length + BlockSize - 1) / BlockSize)
}

// blockLen returns the length of block i of a chunk of length bytes.
func blockLen(length int64, i int) int {
	if last := NumBlocks(length) - 1; i == last {
		return int(length - int64(last)*BlockSize)
	}
	return BlockSize
}
