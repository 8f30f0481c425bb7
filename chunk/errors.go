package chunk

import "errors"

// Sentinel errors of the chunk store. Callers test them with errors.Is; the
// server maps them to HTTP statuses in its one table.
var (
	// ErrNotFound: no chunk with that id on this node.
	ErrNotFound = errors.New("chunk: not found")
	// ErrMismatch: the bytes of a Put hashed to another id than the one
	// the caller expected. Nothing was stored.
	ErrMismatch = errors.New("chunk: content does not match the expected id")
	// ErrCorrupt: a stored chunk no longer matches its id (Verify's
	// re-hash, or a verified read whose block fails its checksum).
	// Verify removes it so a good copy can be put back.
	ErrCorrupt = errors.New("chunk: stored chunk does not match its id")
	// ErrTooLarge: a Put longer than the store's maximum chunk size.
	ErrTooLarge = errors.New("chunk: chunk larger than the maximum chunk size")
	// ErrDiskFull: free space on the store's file system is below its
	// threshold (or ran out during the write); the Put stored nothing.
	ErrDiskFull = errors.New("chunk: disk almost full, chunks refused")
	// ErrPinned: Delete or Collect of a chunk a pin holds, or (Collect)
	// whose last pin was released after the caller's mark.
	ErrPinned = errors.New("chunk: chunk is pinned")
	// ErrStaleMark: Collect with a mark older than the one before the
	// store's latest Mark (pin releases that old are forgotten).
	ErrStaleMark = errors.New("chunk: garbage collection mark is stale")
	// ErrBadProof: a block and audit path that do not prove the block
	// against the chunk's id and length.
	ErrBadProof = errors.New("chunk: block proof does not verify")
	// ErrClosed: the store was closed.
	ErrClosed = errors.New("chunk: store closed")
)
