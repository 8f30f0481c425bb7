package api

import (
	"errors"
	"fmt"
	"time"
)

// Error codes of the API: the "code" of an error body. A client branches on
// the code (or the status), never on the message.
const (
	CodeBadRequest       = "invalid_request"      // 400: a malformed parameter or body
	CodeInvalidChannel   = "invalid_channel"      // 400: channel name not [a-z0-9-]{1,63}
	CodeInvalidKey       = "invalid_key"          // 400: empty, not UTF-8, NUL, bad escape
	CodeKeyTooLarge      = "key_too_large"        // 400: key over 1 KiB
	CodeUnauthorized     = "unauthorized"         // 401: no valid credentials (token or signed link)
	CodeForbidden        = "forbidden"            // 403: a valid token that may not do this (another channel's, or read-only on a write)
	CodeTokenNotFound    = "token_not_found"      // 404: no such token in the channel
	CodeTooManyTokens    = "too_many_tokens"      // 409: the channel holds its maximum of token records
	CodeNotFound         = "not_found"            // 404: no such endpoint
	CodeKeyNotFound      = "key_not_found"        // 404
	CodeChannelNotFound  = "channel_not_found"    // 404
	CodeNodeNotFound     = "node_not_found"       // 404
	CodeMethodNotAllowed = "method_not_allowed"   // 405
	CodeCASMismatch      = "cas_mismatch"         // 409: ?cas=N did not match
	CodeChannelExists    = "channel_exists"       // 409
	CodeNotEnoughNodes   = "not_enough_nodes"     // 409: more replicas than eligible nodes
	CodeValueTooLarge    = "value_too_large"      // 413: value over 1 MiB
	CodeTxnTooLarge      = "txn_too_large"        // 413: over 128 ops or 4 MiB of keys and values
	CodeBodyTooLarge     = "body_too_large"       // 413: a JSON body over its limit
	CodeRequestTimeout   = "request_timeout"      // 408: the request body did not arrive in time
	CodeTooManyConns     = "too_many_connections" // 429 or 503: the connection was refused by the node's connection limits
	CodeOverloaded       = "overloaded"           // 429: too many proposals in flight
	CodeTooManyWatchers  = "too_many_watchers"    // 429: blocking reads per node bounded
	CodeRateLimited      = "rate_limited"         // 429: too many requests per second from this client
	CodeDiskFull         = "disk_full"            // 507: the leader's disk is almost full; writes refused
	CodeQuotaExceeded    = "quota_exceeded"       // 507: the channel's quota_bytes is used up; deletes still work
	CodeInternal         = "internal"             // 500
	CodeNoLeader         = "no_leader"            // 503: no leader (yet); retry
	CodeOutcomeUnknown   = "outcome_unknown"      // 503: the write may or may not have been applied
	CodeUnavailable      = "unavailable"          // 503: a node could not be reached, or is stopping
	CodeTimeout          = "timeout"              // 503: the request ran out of time
	CodeNotReady         = "not_ready"            // 503: GET /v1/health?ready=1 on a node not ready
	CodeReplicaCorrupt   = "replica_corrupt"      // 503: the replica that would serve this failed a hash check; retry
	CodeNotCorrupt       = "not_corrupt"          // 409: a repair of a replica that no hash check marked corrupt
	CodeUpgradePending   = "upgrade_pending"      // 409: the command needs a cluster version the cluster does not run yet; nothing was proposed
	// CodePlacementChanged (409): the channel changed (another scaling, a
	// repair, a drain) between the read the change was decided from and
	// its commit; nothing was applied: read the channel and decide again.
	CodePlacementChanged = "placement_changed"
	// CodeIdempotencyKeyReused (422): the Idempotency-Key was used, within
	// its window, for another request; nothing was applied.
	CodeIdempotencyKeyReused = "idempotency_key_reused"

	CodeInvalidGossipKey      = "invalid_gossip_key"       // 400: not base64 of 16, 24 or 32 bytes
	CodeGossipNotEncrypted    = "gossip_not_encrypted"     // 409: the node runs gossip without a key (-insecure), so it has no keyring
	CodeGossipKeyNotInstalled = "gossip_key_not_installed" // 409: use of a key the node does not have; install it first
	CodeGossipKeyPrimary      = "gossip_key_primary"       // 409: removal of the key gossip is encrypted with; use another first

	CodeInvalidBackup = "invalid_backup" // 400: a restore's body is not a sound backup (truncated, damaged, another format); nothing was created
	CodeRestoreFailed = "restore_failed" // 503: the restored channel did not start serving; it was deleted again
	// Files (docs/api.md "Files").
	CodeInvalidPath        = "invalid_path"        // 400: a file path with "..", ".", NUL, an empty segment, or over 1 KiB
	CodeUploadMismatch     = "upload_mismatch"     // 400: the body's length or checksum is not what the request declared; nothing was stored
	CodeFileNotFound       = "file_not_found"      // 404
	CodePreconditionFailed = "precondition_failed" // 412: If-None-Match: * found the file, or If-Match another version
	CodeNotEnoughHolders   = "not_enough_holders"  // 503: fewer than a majority of the replicas stored the chunks; nothing was committed; retry
	CodeChunkUnavailable   = "chunk_unavailable"   // 503: no replica could serve a chunk of the file
	CodeUploadNotFound     = "upload_not_found"    // 404: no such resumable upload on this node (expired, done, aborted, or the node restarted)
	CodeUploadOffset       = "upload_offset"       // 409: the request's Upload-Offset is not the upload's (its answer carries the right one)
	CodeTooManyUploads     = "too_many_uploads"    // 429: the node holds its maximum of open uploads
)

// ErrorBody is the JSON body of every error response:
// {"error": {"code": "...", "message": "..."}}.
type ErrorBody struct {
	Error Error `json:"error"`
}

// Error is an error answered by the API. The client returns it as *Error.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`

	Status     int           `json:"-"` // the HTTP status
	RetryAfter time.Duration `json:"-"` // from Retry-After; 0 when absent
	Index      uint64        `json:"-"` // from X-Shardnet-Index; 0 when absent
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s (%s, HTTP %d)", e.Message, e.Code, e.Status)
}

// AsError returns the *Error inside err, or nil.
func AsError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return nil
}

func hasStatus(err error, status int) bool {
	e := AsError(err)
	return e != nil && e.Status == status
}

func hasCode(err error, code string) bool {
	e := AsError(err)
	return e != nil && e.Code == code
}

// IsNotFound reports a 404: a missing key, channel, node or endpoint.
func IsNotFound(err error) bool { return hasStatus(err, 404) }

// IsConflict reports a 409: a CAS mismatch, an existing channel, or not
// enough nodes for a placement.
func IsConflict(err error) bool { return hasStatus(err, 409) }

// IsCASMismatch reports a 409 whose cause is a ?cas=N that did not match.
func IsCASMismatch(err error) bool { return hasCode(err, CodeCASMismatch) }

// IsUnauthorized reports a 401.
func IsUnauthorized(err error) bool { return hasStatus(err, 401) }

// IsTooLarge reports a 413.
func IsTooLarge(err error) bool { return hasStatus(err, 413) }

// IsNoLeader reports a 503 answered while a channel (or the meta group) had
// no reachable leader; the request was not applied and may be retried.
func IsNoLeader(err error) bool { return hasCode(err, CodeNoLeader) }

// IsOutcomeUnknown reports a write whose outcome is unknown: it may or may
// not have been applied (docs/design.md "D3").
func IsOutcomeUnknown(err error) bool { return hasCode(err, CodeOutcomeUnknown) }

// IsTimeout reports a 503 timeout: the request ran out of time, its
// outcome unknown. An idempotent request (a read, a drain, a leave) may be
// sent again; a write may have been applied.
func IsTimeout(err error) bool { return hasCode(err, CodeTimeout) }

// IsRetryable reports an error after which the same request may be sent
// again without risk: 429, or a 503 other than outcome_unknown.
func IsRetryable(err error) bool {
	e := AsError(err)
	if e == nil {
		return false
	}
	return e.Status == 429 || (e.Status == 503 && e.Code != CodeOutcomeUnknown && e.Code != CodeTimeout)
}
