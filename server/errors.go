package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/shardnet/shardnet/access"
	"github.com/shardnet/shardnet/api"
	"github.com/shardnet/shardnet/cluster"
	"github.com/shardnet/shardnet/fsm"
	"github.com/shardnet/shardnet/shard"
)

// Sentinel errors of the server itself: requests refused before anything
// reached the backend.
var (
	errBadRequest       = errors.New("server: invalid request")
	errInvalidChannel   = errors.New("server: invalid channel name")
	errBodyTooLarge     = errors.New("server: request body too large")
	errUnauthorized     = access.ErrUnauthorized
	errForbidden        = access.ErrForbidden
	errRouteNotFound    = errors.New("server: no such endpoint")
	errMethodNotAllowed = errors.New("server: method not allowed")
	errTooManyWatchers  = errors.New("server: too many blocking reads on this node")
	errNotReady         = errors.New("server: node not ready")
	errUnreachable      = errors.New("server: cannot reach the node to forward to")
	errStopping         = errors.New("server: shutting down")
	errRateLimited      = errors.New("server: request rate limit exceeded")
	errBodyTimeout      = errors.New("server: request body timed out")
)

// errorTable maps every error the API can answer to its status and code,
// first match wins (errors.Is). Nothing else in the package chooses a status
// for an error. retry adds "Retry-After: 1": the request was not applied
// and may be sent again.
var errorTable = []struct {
	err    error
	status int
	code   string
	retry  bool
}{
	// Client mistakes (4xx: nothing was applied).
	{errBadRequest, http.StatusBadRequest, api.CodeBadRequest, false},
	{errInvalidChannel, http.StatusBadRequest, api.CodeInvalidChannel, false},
	{fsm.ErrInvalidKey, http.StatusBadRequest, api.CodeInvalidKey, false},
	{fsm.ErrKeyTooLarge, http.StatusBadRequest, api.CodeKeyTooLarge, false},
	{fsm.ErrInvalidCommand, http.StatusBadRequest, api.CodeBadRequest, false},
	{fsm.ErrInvalidIdemKey, http.StatusBadRequest, api.CodeBadRequest, false},
	{cluster.ErrInvalidRequest, http.StatusBadRequest, api.CodeBadRequest, false},
	{cluster.ErrInvalidGossipKey, http.StatusBadRequest, api.CodeInvalidGossipKey, false},
	{fsm.ErrBadBackup, http.StatusBadRequest, api.CodeInvalidBackup, false},
	{errUnauthorized, http.StatusUnauthorized, api.CodeUnauthorized, false},
	{errForbidden, http.StatusForbidden, api.CodeForbidden, false},
	{cluster.ErrTokenNotFound, http.StatusNotFound, api.CodeTokenNotFound, false},
	{cluster.ErrTooManyTokens, http.StatusConflict, api.CodeTooManyTokens, false},
	{errRouteNotFound, http.StatusNotFound, api.CodeNotFound, false},
	{fsm.ErrKeyNotFound, http.StatusNotFound, api.CodeKeyNotFound, false},
	{fsm.ErrInvalidPath, http.StatusBadRequest, api.CodeInvalidPath, false},
	{cluster.ErrUploadMismatch, http.StatusBadRequest, api.CodeUploadMismatch, false},
	{fsm.ErrFileNotFound, http.StatusNotFound, api.CodeFileNotFound, false},
	{cluster.ErrUploadNotFound, http.StatusNotFound, api.CodeUploadNotFound, false},
	{cluster.ErrUploadOffset, http.StatusConflict, api.CodeUploadOffset, false},
	{cluster.ErrTooManyUploads, http.StatusTooManyRequests, api.CodeTooManyUploads, true},
	{fsm.ErrPrecondition, http.StatusPreconditionFailed, api.CodePreconditionFailed, false},
	{fsm.ErrFileQuota, http.StatusInsufficientStorage, api.CodeQuotaExceeded, false},
	{cluster.ErrChannelNotFound, http.StatusNotFound, api.CodeChannelNotFound, false},
	{cluster.ErrNodeNotFound, http.StatusNotFound, api.CodeNodeNotFound, false},
	{errMethodNotAllowed, http.StatusMethodNotAllowed, api.CodeMethodNotAllowed, false},
	{fsm.ErrCASMismatch, http.StatusConflict, api.CodeCASMismatch, false},
	{cluster.ErrChannelExists, http.StatusConflict, api.CodeChannelExists, false},
	{cluster.ErrNotEnoughNodes, http.StatusConflict, api.CodeNotEnoughNodes, false},
	{cluster.ErrPlacementChanged, http.StatusConflict, api.CodePlacementChanged, false},
	{cluster.ErrNodeState, http.StatusConflict, api.CodeNodeState, false},
	{fsm.ErrValueLarge, http.StatusRequestEntityTooLarge, api.CodeValueTooLarge, false},
	{fsm.ErrTxnTooLarge, http.StatusRequestEntityTooLarge, api.CodeTxnTooLarge, false},
	{errBodyTooLarge, http.StatusRequestEntityTooLarge, api.CodeBodyTooLarge, false},
	{errBodyTimeout, http.StatusRequestTimeout, api.CodeRequestTimeout, false},
	{shard.ErrNotCorrupt, http.StatusConflict, api.CodeNotCorrupt, false},
	{fsm.ErrIdempotencyKeyReused, http.StatusUnprocessableEntity, api.CodeIdempotencyKeyReused, false},
	{fsm.ErrUpgradePending, http.StatusConflict, api.CodeUpgradePending, false},
	{cluster.ErrGossipNotEncrypted, http.StatusConflict, api.CodeGossipNotEncrypted, false},
	{cluster.ErrGossipKeyNotInstalled, http.StatusConflict, api.CodeGossipKeyNotInstalled, false},
	{cluster.ErrGossipKeyPrimary, http.StatusConflict, api.CodeGossipKeyPrimary, false},
	{shard.ErrOverloaded, http.StatusTooManyRequests, api.CodeOverloaded, true},
	{errRateLimited, http.StatusTooManyRequests, api.CodeRateLimited, true},
	{shard.ErrDiskFull, http.StatusInsufficientStorage, api.CodeDiskFull, false},
	{cluster.ErrQuotaExceeded, http.StatusInsufficientStorage, api.CodeQuotaExceeded, false},
	{errTooManyWatchers, http.StatusTooManyRequests, api.CodeTooManyWatchers, true},

	// Unavailable (5xx). outcome_unknown first: a write that may have been
	// applied must never look retryable (docs/design.md "D3").
	{shard.ErrOutcomeUnknown, http.StatusServiceUnavailable, api.CodeOutcomeUnknown, false},
	{shard.ErrNoLeader, http.StatusServiceUnavailable, api.CodeNoLeader, true},
	{cluster.ErrNotEnoughHolders, http.StatusServiceUnavailable, api.CodeNotEnoughHolders, true},
	{fsm.ErrHoldersMinority, http.StatusServiceUnavailable, api.CodeNotEnoughHolders, true},
	{cluster.ErrChunkUnavailable, http.StatusServiceUnavailable, api.CodeChunkUnavailable, true},
	{shard.ErrReplicaCorrupt, http.StatusServiceUnavailable, api.CodeReplicaCorrupt, true},
	{cluster.ErrNoMetaLeader, http.StatusServiceUnavailable, api.CodeNoLeader, true},
	// A redirect reaches this table only from a node serving another's
	// call (it answers or refuses, never sends on: cluster/route.go), or
	// when the node it names kept refusing: the leader moved again, or is
	// not known yet.
	{shard.ErrNotLeader, http.StatusServiceUnavailable, api.CodeNoLeader, true},
	{shard.ErrNotHosted, http.StatusServiceUnavailable, api.CodeNoLeader, true},
	{cluster.ErrNotMetaLeader, http.StatusServiceUnavailable, api.CodeNoLeader, true},
	{cluster.ErrUnreachable, http.StatusServiceUnavailable, api.CodeUnavailable, true},
	{errUnreachable, http.StatusServiceUnavailable, api.CodeUnavailable, true},
	{shard.ErrStopped, http.StatusServiceUnavailable, api.CodeUnavailable, true},
	{cluster.ErrRepairSource, http.StatusServiceUnavailable, api.CodeUnavailable, true},
	{cluster.ErrRestoreFailed, http.StatusServiceUnavailable, api.CodeRestoreFailed, false},
	{fsm.ErrSnapshotBehind, http.StatusServiceUnavailable, api.CodeUnavailable, true},
	{fsm.ErrClosed, http.StatusServiceUnavailable, api.CodeUnavailable, true}, // a read of a replica being closed
	{errStopping, http.StatusServiceUnavailable, api.CodeUnavailable, true},
	{errNotReady, http.StatusServiceUnavailable, api.CodeNotReady, true},
	{cluster.ErrNotReady, http.StatusServiceUnavailable, api.CodeNotReady, true},
	{context.DeadlineExceeded, http.StatusServiceUnavailable, api.CodeTimeout, false},
	{context.Canceled, http.StatusServiceUnavailable, api.CodeUnavailable, false},
}

// statusOf returns the status, code and retry flag of err; anything not in
// the table is a 500 internal.
func statusOf(err error) (status int, code string, retry bool) {
	for _, e := range errorTable {
		if errors.Is(err, e.err) {
			return e.status, e.code, e.retry
		}
	}
	return http.StatusInternalServerError, api.CodeInternal, false
}

// requestError is a mistake found in a request; its message is meant for
// the client as it is, and it matches its sentinel with errors.Is.
type requestError struct {
	sentinel error
	msg      string
}

func (e *requestError) Error() string { return e.msg }
func (e *requestError) Unwrap() error { return e.sentinel }

// invalid returns a 400 invalid_request error saying what is wrong.
func invalid(format string, args ...any) error {
	return &requestError{errBadRequest, fmt.Sprintf(format, args...)}
}

// refuse returns an error matching sentinel with a message for the client.
func refuse(sentinel error, format string, args ...any) error {
	return &requestError{sentinel, fmt.Sprintf(format, args...)}
}

// indexedError carries the index that an error response reports in
// X-Shardnet-Index (a missing key: the applied index; a CAS mismatch: the
// index of the refused entry).
type indexedError struct {
	err   error
	index uint64
}

func (e *indexedError) Error() string { return e.err.Error() }
func (e *indexedError) Unwrap() error { return e.err }

func withIndex(err error, index uint64) error { return &indexedError{err, index} }

// writeError answers err as {"error": {"code", "message"}}.
func writeError(w http.ResponseWriter, err error) {
	status, code, retry := statusOf(err)
	h := w.Header()
	var ie *indexedError
	if errors.As(err, &ie) {
		h.Set(api.HeaderIndex, strconv.FormatUint(ie.index, 10))
	}
	if retry {
		h.Set("Retry-After", "1")
	}
	if status == http.StatusUnauthorized {
		h.Set("WWW-Authenticate", `Bearer realm="shardnet"`)
	}
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(errorJSON(code, err.Error()))
}

// errorJSON is an error body, newline-terminated. Messages quote the
// client's input, so '&', '<' and '>' stay as they are rather than
// \u0026-style escapes: the body is JSON served as application/json with
// nosniff, never HTML.
func errorJSON(code, msg string) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(api.ErrorBody{Error: api.Error{Code: code, Message: msg}})
	return buf.Bytes()
}
