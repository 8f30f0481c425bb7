package fsm

import (
	"errors"
	"fmt"
)

// A channel's chunk size (version 5): the size its new files are cut into,
// from MinChunkSize to MaxChunkSize in whole blocks of ChunkBlockSize
// (chunk.BlockSize: a chunk's id is a Merkle tree over such blocks, so a
// chunk size that is a multiple of it keeps every chunk's tree whole).
// A file keeps the chunk size it was uploaded with: its manifest records
// it, and downloads, anti-entropy and backups read that.

const (
	// DefaultChunkSize is the chunk size of a channel that sets none.
	DefaultChunkSize = 4 << 20
	// MinChunkSize is the smallest chunk size a channel may set (one
	// block). With MaxFileChunks, it bounds a file to 4 GiB.
	MinChunkSize = ChunkBlockSize
	// ChunkBlockSize is the block a chunk size is a multiple of
	// (chunk.BlockSize).
	ChunkBlockSize = 64 << 10
)

// ErrInvalidChunkSize: a chunk size outside MinChunkSize..MaxChunkSize or
// not a multiple of ChunkBlockSize.
var ErrInvalidChunkSize = errors.New("fsm: invalid chunk size")

// ValidateChunkSize reports whether a channel may set chunk size n.
func ValidateChunkSize(n uint64) error {
	if n < MinChunkSize || n > MaxChunkSize || n%ChunkBlockSize != 0 {
		return fmt.Errorf("%w: %d bytes; a chunk size is %d to %d bytes, a multiple of %d", ErrInvalidChunkSize, n, MinChunkSize, MaxChunkSize, ChunkBlockSize)
	}
	return nil
}

// SetChannelChunkSize changes the chunk size of a channel's new files (0:
// back to the default).
type SetChannelChunkSize struct {
	Channel   string `json:"channel"`
	ChunkSize uint64 `json:"chunk_size"`
}

func (*SetChannelChunkSize) metaType() byte { return metaSetChannelChunkSize }

// applySetChannelChunkSize sets the channel's chunk size; under mu.
func (m *Meta) applySetChannelChunkSize(index uint64, c *SetChannelChunkSize, res *MetaResult) {
	ch, ok := m.st.Channels[c.Channel]
	if !ok {
		res.Err = ErrChannelNotFound
		return
	}
	if c.ChunkSize != 0 && ValidateChunkSize(c.ChunkSize) != nil {
		res.Err = ErrInvalidChunkSize
		return
	}
	ch.ChunkSize = c.ChunkSize
	ch.ModifyIndex = index
}
