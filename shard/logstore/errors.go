package logstore

import "errors"

// Sentinel errors. A missing log entry is not among them: GetLog returns
// raft.ErrLogNotFound itself, because raft compares it with == (docs/raft-notes.md "R5").
var (
	// ErrCorrupt means a stored value or key could not be decoded.
	ErrCorrupt = errors.New("logstore: corrupt data")
	// ErrUnsupportedVersion means the directory holds a format this build
	// does not read (or something that is not a log store at all).
	ErrUnsupportedVersion = errors.New("logstore: unsupported format version")
	// ErrClosed is returned by every operation after DB.Close.
	ErrClosed = errors.New("logstore: closed")
)
