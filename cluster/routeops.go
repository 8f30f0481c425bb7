package cluster

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/shardnet/shardnet/api"
	"github.com/shardnet/shardnet/fsm"
	"github.com/shardnet/shardnet/shard"
)

// The route calls, each as its client half (router.X) and its serving half
// (router.serveX). Heads and answers are built with appendBytes (a uvarint
// length and the bytes) and read with decoder; group ids and indexes are
// u64 big-endian.

// handler returns the serving half of op and its metric label.
func (r *router) handler(op byte) (routeHandler, string) {
	switch op {
	case rcPropose:
		return r.servePropose, "propose"
	case rcReadIndex:
		return r.serveReadIndex, "readindex"
	case rcMetaReadIndex:
		return r.serveMetaReadIndex, "meta_readindex"
	case rcHash:
		return r.serveHash, "hash"
	case rcGet:
		return r.serveGet, "get"
	case rcList:
		return r.serveList, "list"
	case rcWatch:
		return r.serveWatch, "watch"
	case rcReplicaInfo:
		return r.serveReplicaInfo, "replica_info"
	case rcCreateChannel:
		return r.serveCreateChannel, "create_channel"
	case rcDeleteChannel:
		return r.serveDeleteChannel, "delete_channel"
	case rcRepair:
		return r.serveRepair, "repair"
	case rcSnapshot:
		return r.serveSnapshot, "snapshot"
	case rcIssueToken:
		return r.serveIssueToken, "issue_token"
	case rcRevokeToken:
		return r.serveRevokeToken, "revoke_token"
	case rcSettings:
		return r.serveSettings, "settings"
	case rcBackup:
		return r.serveBackup, "backup"
	case rcRestoreFetch:
		return r.serveRestoreFetch, "restore_fetch"
	case rcCreateRestored:
		return r.serveCreateRestored, "create_restored"
	case rcRecoverInfo:
		return r.serveRecoverInfo, "recover_info"
	case rcRetire:
		return r.serveRetire, "retire"
	case rcRecoverMeta:
		return r.serveRecoverMeta, "recover_meta"
	case rcMember:
		return r.serveMember, "member"
	case rcMetaWatch:
		return r.serveMetaWatch, "meta_watch"
	case rcChangeChannel:
		return r.serveChangeChannel, "change_channel"
	case rcDrain:
		return r.serveDrain, "drain"
	case rcLeave:
		return r.serveLeave, "leave"
	case rcRemoveNode:
		return r.serveRemoveNode, "remove_node"
	case rcPutChunk:
		return r.servePutChunk, "put_chunk"
	case rcGetChunk:
		return r.serveGetChunk, "get_chunk"
	case rcStatFile:
		return r.serveStatFile, "stat_file"
	case rcListFiles:
		return r.serveListFiles, "list_files"
	case rcHoldCollection:
		return r.serveHoldCollection, "hold_collection"
	case rcLeaseChunks:
		return r.serveLeaseChunks, "lease_chunks"
	}
	return nil, ""
}

// count records a call's outcome: ok, refused (the peer answered an
// error), unreachable (nothing sent), no_answer (it may have been served),
// previous_version.
func (r *router) count(call string, err error) {
	var cf *callFailedError
	outcome := "ok"
	switch {
	case err == nil:
	case errors.Is(err, errPreviousVersion):
		outcome = "previous_version"
	case errors.As(err, &cf) && !cf.sent:
		outcome = "unreachable"
	case errors.As(err, &cf):
		outcome = "no_answer"
	default:
		outcome = "refused"
	}
	r.n.metrics.calls.WithLabelValues(call, outcome).Inc()
}

// simple makes a call without bodies and returns the answer head.
func (r *router) simple(ctx context.Context, call, addr string, op byte, head []byte) ([]byte, error) {
	ans, err := r.call(ctx, addr, op, head, nil)
	r.count(call, err)
	if err != nil {
		return nil, err
	}
	if ans.body != nil {
		_ = ans.body.Close()
		return nil, fmt.Errorf("cluster: %s from %s: unexpected answer body", call, addr)
	}
	return ans.head, nil
}

// readFailed is the error of a read call that got no answer: the read may
// be sent again (by the client), nothing was written.
func readFailed(err error, re *shard.RedirectError) error {
	var cf *callFailedError
	if errors.As(err, &cf) && cf.sent {
		return fmt.Errorf("%w: node %s: %v", ErrUnreachable, re.NodeID, err)
	}
	return err
}

// writeFailed is the error of a write call: no answer after it was sent,
// or an answer that may come after the write was applied, is an unknown
// outcome (docs/design.md "D3"); a refusal that proves nothing was done,
// and a call that reached nobody, are passed on.
func writeFailed(err error, re *shard.RedirectError) error {
	var cf *callFailedError
	switch {
	case errors.As(err, &cf) && !cf.sent:
		return err
	case errors.As(err, &cf):
		return fmt.Errorf("%w: sent to node %s, which did not answer: %v", shard.ErrOutcomeUnknown, re.NodeID, err)
	case isFinal(err):
		return err
	}
	return fmt.Errorf("%w: node %s: %v", shard.ErrOutcomeUnknown, re.NodeID, err)
}

func u64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

func readU64(b []byte, what string) (uint64, error) {
	if len(b) != 8 {
		return 0, fmt.Errorf("%w: %s of %d bytes", ErrInvalidRequest, what, len(b))
	}
	return binary.BigEndian.Uint64(b), nil
}

// propose (rcPropose): head gid u64 | the fsm.Encode'd command; answer
// fsm.EncodeResult. A refusal proving nothing was proposed comes back as
// it is (a moved leader as a *shard.RedirectError); a call that may have
// reached the leader but got no answer is shard.ErrOutcomeUnknown.
func (r *router) propose(ctx context.Context, re *shard.RedirectError, gid uint64, cmd []byte) (*fsm.Result, error) {
	head, err := r.simple(ctx, "propose", re.Addr, rcPropose, append(u64(gid), cmd...))
	if errors.Is(err, errPreviousVersion) {
		return r.legacyPropose(ctx, re, gid, cmd)
	}
	if err != nil {
		return nil, writeFailed(err, re)
	}
	res, err := fsm.DecodeResult(head)
	if err != nil {
		return nil, fmt.Errorf("%w: node %s: %v", shard.ErrOutcomeUnknown, re.NodeID, err)
	}
	return res, nil
}

func (r *router) servePropose(ctx context.Context, head []byte, _ io.Reader) ([]byte, func(io.Writer) error, error) {
	if len(head) < 8 {
		return nil, nil, fmt.Errorf("%w: short propose call", ErrInvalidRequest)
	}
	rep, ok := r.n.shards.Replica(binary.BigEndian.Uint64(head))
	if !ok {
		return nil, nil, fmt.Errorf("%w: group %d", shard.ErrNotHosted, binary.BigEndian.Uint64(head))
	}
	if err := r.n.servedReplica(ctx, rep); err != nil {
		return nil, nil, err
	}
	res, err := r.n.proposeLocal(ctx, rep, head[8:])
	if err != nil {
		return nil, nil, err
	}
	return fsm.EncodeResult(nil, res), nil, nil
}

// metaReadIndex (rcMetaReadIndex): no head; answer the meta leader's commit
// index, confirmed, u64 (metaread.go).
func (r *router) metaReadIndex(ctx context.Context, addr string) (uint64, error) {
	head, err := r.simple(ctx, "meta_readindex", addr, rcMetaReadIndex, nil)
	if errors.Is(err, errPreviousVersion) {
		return r.legacyIndex(ctx, addr, opMetaReadIndex, metaGroupID)
	}
	if err != nil {
		return 0, fmt.Errorf("cluster: meta read index from %s: %w", addr, err)
	}
	return readU64(head, "meta read index")
}

func (r *router) serveMetaReadIndex(ctx context.Context, _ []byte, _ io.Reader) ([]byte, func(io.Writer) error, error) {
	idx, err := r.n.localMetaReadIndex(ctx)
	if err != nil {
		return nil, nil, err
	}
	return u64(idx), nil, nil
}

// hashAt (rcHash): head gid u64 (0: the meta group) | index u64; answer the
// state hash at index, u64, once the peer has applied and hashed it
// (hashcheck.go).
func (r *router) hashAt(ctx context.Context, addr string, gid, index uint64) (uint64, error) {
	head, err := r.simple(ctx, "hash", addr, rcHash, binary.BigEndian.AppendUint64(u64(gid), index))
	if errors.Is(err, errPreviousVersion) {
		return r.legacyHashAt(ctx, addr, gid, index)
	}
	if err != nil {
		return 0, err
	}
	return readU64(head, "hash")
}

func (r *router) serveHash(ctx context.Context, head []byte, _ io.Reader) ([]byte, func(io.Writer) error, error) {
	if len(head) != 16 {
		return nil, nil, fmt.Errorf("%w: hash call of %d bytes", ErrInvalidRequest, len(head))
	}
	gid, index := binary.BigEndian.Uint64(head), binary.BigEndian.Uint64(head[8:])
	hashAt := r.n.meta.fsm.HashAt
	if gid != metaGroupID {
		rep, ok := r.n.shards.Replica(gid)
		if !ok {
			return nil, nil, fmt.Errorf("%w: group %d", shard.ErrNotHosted, gid)
		}
		hashAt = rep.FSM().HashAt
	}
	h, err := hashAt(ctx, index)
	if err != nil {
		return nil, nil, err
	}
	return u64(h), nil, nil
}

// get (rcGet): head level u8 | channel | key; answer found u8 | applied
// uvarint | fsm.AppendEntry.
func (r *router) get(ctx context.Context, re *shard.RedirectError, channel string, key []byte, level shard.ReadLevel) (fsm.Entry, bool, uint64, error) {
	head := appendBytes(appendBytes([]byte{byte(level)}, []byte(channel)), key)
	ans, err := r.simple(ctx, "get", re.Addr, rcGet, head)
	if errors.Is(err, errPreviousVersion) {
		return fsm.Entry{}, false, 0, &PreviousVersionError{Redirect: re}
	}
	if err != nil {
		return fsm.Entry{}, false, 0, readFailed(err, re)
	}
	d := decoder{b: ans}
	found := d.byte() == 1
	applied := d.uvarint()
	if d.err != nil {
		return fsm.Entry{}, false, 0, fmt.Errorf("cluster: get from %s: %w", re.NodeID, d.err)
	}
	e, rest, err := fsm.DecodeEntry(d.b)
	if err != nil || len(rest) != 0 {
		return fsm.Entry{}, false, 0, fmt.Errorf("cluster: get from %s: bad answer: %v", re.NodeID, err)
	}
	return e, found, applied, nil
}

// readCall is the decoded head of a get, list or watch call (parseGet,
// parseList, parseWatch), which the handler and authorize both read.
type readCall struct {
	level              shard.ReadLevel
	channel            string
	key, prefix, after []byte
	limit, index       uint64
}

func parseGet(head []byte) (readCall, error) {
	d := decoder{b: head}
	c := readCall{level: shard.ReadLevel(d.byte())}
	c.channel, c.key = string(d.bytes()), d.bytes()
	if d.err != nil || len(d.b) != 0 {
		return c, fmt.Errorf("%w: malformed get call", ErrInvalidRequest)
	}
	return c, nil
}

func (r *router) serveGet(ctx context.Context, head []byte, _ io.Reader) ([]byte, func(io.Writer) error, error) {
	c, err := parseGet(head)
	if err != nil {
		return nil, nil, err
	}
	e, found, applied, err := r.n.Get(ctx, c.channel, c.key, c.level)
	if err != nil {
		return nil, nil, err
	}
	b := binary.AppendUvarint([]byte{boolByte(found)}, applied)
	return fsm.AppendEntry(b, e), nil, nil
}

// list (rcList): head level u8 | channel | prefix | after | limit uvarint;
// answer more u8 | applied uvarint | fsm.EncodeEntries.
func (r *router) list(ctx context.Context, re *shard.RedirectError, channel string, prefix, after []byte, limit int, level shard.ReadLevel) ([]fsm.Entry, bool, uint64, error) {
	head := appendBytes(appendBytes(appendBytes([]byte{byte(level)}, []byte(channel)), prefix), after)
	head = binary.AppendUvarint(head, uint64(max(limit, 0)))
	ans, err := r.simple(ctx, "list", re.Addr, rcList, head)
	if errors.Is(err, errPreviousVersion) {
		return nil, false, 0, &PreviousVersionError{Redirect: re}
	}
	if err != nil {
		return nil, false, 0, readFailed(err, re)
	}
	d := decoder{b: ans}
	more := d.byte() == 1
	applied := d.uvarint()
	if d.err != nil {
		return nil, false, 0, fmt.Errorf("cluster: list from %s: %w", re.NodeID, d.err)
	}
	most := limit
	if most <= 0 {
		most = len(d.b) // no limit: every entry takes a few bytes
	}
	es, rest, err := fsm.DecodeEntries(d.b, most)
	if err != nil || len(rest) != 0 {
		return nil, false, 0, fmt.Errorf("cluster: list from %s: bad answer: %v", re.NodeID, err)
	}
	return es, more, applied, nil
}

func parseList(head []byte) (readCall, error) {
	d := decoder{b: head}
	c := readCall{level: shard.ReadLevel(d.byte())}
	c.channel, c.prefix, c.after = string(d.bytes()), d.bytes(), d.bytes()
	c.limit = d.uvarint()
	if d.err != nil || len(d.b) != 0 || c.limit > 1<<20 {
		return c, fmt.Errorf("%w: malformed list call", ErrInvalidRequest)
	}
	return c, nil
}

func (r *router) serveList(ctx context.Context, head []byte, _ io.Reader) ([]byte, func(io.Writer) error, error) {
	c, err := parseList(head)
	if err != nil {
		return nil, nil, err
	}
	es, more, applied, err := r.n.List(ctx, c.channel, c.prefix, c.after, int(c.limit), c.level)
	if err != nil {
		return nil, nil, err
	}
	b := binary.AppendUvarint([]byte{boolByte(more)}, applied)
	return fsm.EncodeEntries(b, es), nil, nil
}

// watch (rcWatch): head channel | key | index uvarint; an empty answer once
// an entry above index wrote or deleted key, or the error (the caller's
// deadline passing: context.DeadlineExceeded). It holds the stream for as
// long as the blocking read waits.
func (r *router) watch(ctx context.Context, re *shard.RedirectError, channel string, key []byte, index uint64) error {
	head := binary.AppendUvarint(appendBytes(appendBytes(nil, []byte(channel)), key), index)
	_, err := r.simple(ctx, "watch", re.Addr, rcWatch, head)
	switch {
	case errors.Is(err, errPreviousVersion):
		return &PreviousVersionError{Redirect: re}
	case err != nil && ctx.Err() != nil:
		return ctx.Err()
	case errors.Is(err, context.DeadlineExceeded):
		// The peer's clock ran out a moment before this node's: the
		// wait is over all the same.
		if d, ok := ctx.Deadline(); ok && time.Until(d) < internalCallLimit {
			<-ctx.Done()
			return ctx.Err()
		}
		return readFailed(err, re)
	case err != nil:
		return readFailed(err, re)
	}
	return nil
}

// maxServedWatches bounds the watch calls a node serves at once, as the
// HTTP server bounds the blocking reads its own clients hold
// (server.DefaultMaxWatchers): each holds a stream and a goroutine here.
const maxServedWatches = 4096

func (r *router) serveWatch(ctx context.Context, head []byte, _ io.Reader) ([]byte, func(io.Writer) error, error) {
	select {
	case r.watches <- struct{}{}:
		defer func() { <-r.watches }()
	default:
		return nil, nil, fmt.Errorf("%w: this node already serves %d blocking reads for other nodes", shard.ErrOverloaded, maxServedWatches)
	}
	c, err := parseWatch(head)
	if err != nil {
		return nil, nil, err
	}
	return nil, nil, r.n.WaitKey(ctx, c.channel, c.key, c.index)
}

func parseWatch(head []byte) (readCall, error) {
	d := decoder{b: head}
	var c readCall
	c.channel, c.key = string(d.bytes()), d.bytes()
	c.index = d.uvarint()
	if d.err != nil || len(d.b) != 0 {
		return c, fmt.Errorf("%w: malformed watch call", ErrInvalidRequest)
	}
	return c, nil
}

// replicaInfo (rcReplicaInfo): head gid u64; answer the JSON of the peer's
// shard.ReplicaInfo. It asks this node's own replica without a call.
func (r *router) replicaInfo(ctx context.Context, nd fsm.NodeRecord, gid uint64) (shard.ReplicaInfo, error) {
	if nd.ID == r.n.cfg.Name {
		rep, ok := r.n.shards.Replica(gid)
		if !ok {
			return shard.ReplicaInfo{}, shard.ErrNotHosted
		}
		return rep.Info(), nil
	}
	ctx, cancel := context.WithTimeout(ctx, internalCallLimit)
	defer cancel()
	ans, err := r.simple(ctx, "replica_info", nd.ClusterAddr, rcReplicaInfo, u64(gid))
	if errors.Is(err, errPreviousVersion) {
		return r.legacyReplicaInfo(ctx, nd, gid)
	}
	if err != nil {
		return shard.ReplicaInfo{}, fmt.Errorf("cluster: ask %s about group %d: %w", nd.ID, gid, err)
	}
	var info shard.ReplicaInfo
	if err := json.Unmarshal(ans, &info); err != nil {
		return info, fmt.Errorf("cluster: ask %s about group %d: %w", nd.ID, gid, err)
	}
	return info, nil
}

func (r *router) serveReplicaInfo(_ context.Context, head []byte, _ io.Reader) ([]byte, func(io.Writer) error, error) {
	gid, err := readU64(head, "replica info call")
	if err != nil {
		return nil, nil, err
	}
	rep, ok := r.n.shards.Replica(gid)
	if !ok {
		return nil, nil, fmt.Errorf("%w: group %d", shard.ErrNotHosted, gid)
	}
	b, err := json.Marshal(rep.Info())
	return b, nil, err
}

// createChannel (rcCreateChannel): head the JSON of the
// api.CreateChannelRequest; answer the JSON of the api.Channel created.
func (r *router) createChannel(ctx context.Context, re *shard.RedirectError, req api.CreateChannelRequest) (api.Channel, error) {
	head, err := json.Marshal(req)
	if err != nil {
		return api.Channel{}, err
	}
	ans, err := r.simple(ctx, "create_channel", re.Addr, rcCreateChannel, head)
	if errors.Is(err, errPreviousVersion) {
		return api.Channel{}, &PreviousVersionError{Redirect: re}
	}
	if err != nil {
		return api.Channel{}, metaWriteFailed(err, re)
	}
	var ch api.Channel
	if err := json.Unmarshal(ans, &ch); err != nil {
		return api.Channel{}, fmt.Errorf("%w: node %s: %v", shard.ErrOutcomeUnknown, re.NodeID, err)
	}
	return ch, nil
}

// metaWriteFailed is writeFailed for a meta write, whose refusals come back
// typed as they are (a channel that exists, too few nodes...).
func metaWriteFailed(err error, re *shard.RedirectError) error {
	var cf *callFailedError
	if errors.As(err, &cf) {
		return writeFailed(err, re)
	}
	return err
}

func (r *router) serveCreateChannel(ctx context.Context, head []byte, body io.Reader) ([]byte, func(io.Writer) error, error) {
	return serveJSON("create", func(ctx context.Context, req api.CreateChannelRequest) (any, error) {
		return r.n.CreateChannel(ctx, req)
	})(ctx, head, body)
}

// deleteChannel (rcDeleteChannel): head the channel's name; an empty answer.
func (r *router) deleteChannel(ctx context.Context, re *shard.RedirectError, name string) error {
	_, err := r.simple(ctx, "delete_channel", re.Addr, rcDeleteChannel, []byte(name))
	if errors.Is(err, errPreviousVersion) {
		return &PreviousVersionError{Redirect: re}
	}
	if err != nil {
		return metaWriteFailed(err, re)
	}
	return nil
}

func (r *router) serveDeleteChannel(ctx context.Context, head []byte, _ io.Reader) ([]byte, func(io.Writer) error, error) {
	return nil, nil, r.n.DeleteChannel(ctx, string(head))
}

// metaJSON sends a meta write whose head is the JSON of req to the node re
// names (the meta leader) and decodes the JSON answer into out (nil: none).
func (r *router) metaJSON(ctx context.Context, call string, op byte, re *shard.RedirectError, req, out any) error {
	err := r.leaderJSON(ctx, call, op, re, req, out)
	if errors.Is(err, errPreviousVersion) {
		return &PreviousVersionError{Redirect: re}
	}
	return err
}

// leaderJSON sends req as the JSON head of call op to the meta leader re
// names and decodes the answer's JSON into out (nil: no answer wanted). A
// leader of the previous version answers errPreviousVersion as it is:
// for calls that version never had, there is nothing to forward to.
func (r *router) leaderJSON(ctx context.Context, call string, op byte, re *shard.RedirectError, req, out any) error {
	head, err := json.Marshal(req)
	if err != nil {
		return err
	}
	ans, err := r.simple(ctx, call, re.Addr, op, head)
	if err != nil {
		return metaWriteFailed(err, re)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(ans, out); err != nil {
		return fmt.Errorf("%w: node %s: %v", shard.ErrOutcomeUnknown, re.NodeID, err)
	}
	return nil
}

// serveJSON is the serving side of a call whose head is the JSON of a T
// and whose answer is the JSON of what serve returns.
func serveJSON[T any](what string, serve func(context.Context, T) (any, error)) routeHandler {
	return func(ctx context.Context, head []byte, _ io.Reader) ([]byte, func(io.Writer) error, error) {
		var c T
		if err := json.Unmarshal(head, &c); err != nil {
			return nil, nil, fmt.Errorf("%w: malformed %s call: %v", ErrInvalidRequest, what, err)
		}
		out, err := serve(ctx, c)
		if err != nil {
			return nil, nil, err
		}
		b, err := json.Marshal(out)
		return b, nil, err
	}
}

// tokenCall is the head of the token calls (rcIssueToken, rcRevokeToken)
// and of rcSettings, as JSON.
type tokenCall struct {
	Channel  string               `json:"channel"`
	Scope    string               `json:"scope,omitempty"`
	Expires  time.Time            `json:"expires,omitzero"`
	ID       string               `json:"id,omitempty"`
	Settings *api.ChannelSettings `json:"settings,omitempty"`
}

// issueToken (rcIssueToken): answer the JSON of the api.TokenCreated.
func (r *router) issueToken(ctx context.Context, re *shard.RedirectError, channel, scope string, expires time.Time) (api.TokenCreated, error) {
	var out api.TokenCreated
	err := r.metaJSON(ctx, "issue_token", rcIssueToken, re, tokenCall{Channel: channel, Scope: scope, Expires: expires}, &out)
	return out, err
}

// parseTokenCall decodes the head of a token or settings call.
func parseTokenCall(head []byte) (tokenCall, error) {
	var c tokenCall
	if err := json.Unmarshal(head, &c); err != nil {
		return c, fmt.Errorf("%w: malformed token call: %v", ErrInvalidRequest, err)
	}
	return c, nil
}

func (r *router) serveIssueToken(ctx context.Context, head []byte, _ io.Reader) ([]byte, func(io.Writer) error, error) {
	c, err := parseTokenCall(head)
	if err != nil {
		return nil, nil, err
	}
	tok, err := r.n.IssueToken(ctx, c.Channel, c.Scope, c.Expires)
	if err != nil {
		return nil, nil, err
	}
	b, err := json.Marshal(tok)
	return b, nil, err
}

// revokeToken (rcRevokeToken): an empty answer.
func (r *router) revokeToken(ctx context.Context, re *shard.RedirectError, channel, id string) error {
	return r.metaJSON(ctx, "revoke_token", rcRevokeToken, re, tokenCall{Channel: channel, ID: id}, nil)
}

func (r *router) serveRevokeToken(ctx context.Context, head []byte, _ io.Reader) ([]byte, func(io.Writer) error, error) {
	c, err := parseTokenCall(head)
	if err != nil {
		return nil, nil, err
	}
	return nil, nil, r.n.RevokeToken(ctx, c.Channel, c.ID)
}

// setSettings (rcSettings): an empty answer.
func (r *router) setSettings(ctx context.Context, re *shard.RedirectError, channel string, s api.ChannelSettings) error {
	return r.metaJSON(ctx, "settings", rcSettings, re, tokenCall{Channel: channel, Settings: &s}, nil)
}

func (r *router) serveSettings(ctx context.Context, head []byte, _ io.Reader) ([]byte, func(io.Writer) error, error) {
	c, err := parseTokenCall(head)
	if err != nil || c.Settings == nil {
		return nil, nil, fmt.Errorf("%w: malformed settings call", ErrInvalidRequest)
	}
	return nil, nil, r.n.SetChannelSettings(ctx, c.Channel, *c.Settings)
}

// repair (rcRepair): head channel | node; answer the applied index the
// node's replica was rebuilt at, u64.
func (r *router) repair(ctx context.Context, re *shard.RedirectError, channel, node string) (uint64, error) {
	head := appendBytes(appendBytes(nil, []byte(channel)), []byte(node))
	ans, err := r.simple(ctx, "repair", re.Addr, rcRepair, head)
	if errors.Is(err, errPreviousVersion) {
		return 0, &PreviousVersionError{Redirect: re}
	}
	if err != nil {
		return 0, metaWriteFailed(err, re)
	}
	return readU64(ans, "repair answer")
}

func (r *router) serveRepair(ctx context.Context, head []byte, _ io.Reader) ([]byte, func(io.Writer) error, error) {
	d := decoder{b: head}
	channel, node := string(d.bytes()), string(d.bytes())
	if d.err != nil || len(d.b) != 0 {
		return nil, nil, fmt.Errorf("%w: malformed repair call", ErrInvalidRequest)
	}
	applied, err := r.n.RepairReplica(ctx, channel, node)
	if err != nil {
		return nil, nil, err
	}
	return u64(applied), nil, nil
}

// snapshot (rcSnapshot): head gid u64 | min u64; the answer body is the
// replica's state (fsm snapshot format) once it has applied min. A replica
// marked corrupt refuses. The caller closes the body.
func (r *router) snapshot(ctx context.Context, addr, leader string, gid, minIndex uint64) (io.ReadCloser, error) {
	ans, err := r.call(ctx, addr, rcSnapshot, binary.BigEndian.AppendUint64(u64(gid), minIndex), nil)
	r.count("snapshot", err)
	if errors.Is(err, errPreviousVersion) {
		return r.legacySnapshot(ctx, addr, leader, gid, minIndex)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: snapshot from %s: %v", ErrRepairSource, leader, err)
	}
	if ans.body == nil {
		return nil, fmt.Errorf("%w: snapshot from %s: no body", ErrRepairSource, leader)
	}
	return ans.body, nil
}

func (r *router) serveSnapshot(ctx context.Context, head []byte, _ io.Reader) ([]byte, func(io.Writer) error, error) {
	if len(head) != 16 {
		return nil, nil, fmt.Errorf("%w: snapshot call of %d bytes", ErrInvalidRequest, len(head))
	}
	gid, minIndex := binary.BigEndian.Uint64(head), binary.BigEndian.Uint64(head[8:])
	rep, ok := r.n.shards.Replica(gid)
	if !ok {
		return nil, nil, fmt.Errorf("%w: group %d", shard.ErrNotHosted, gid)
	}
	if rep.Corrupt() != nil {
		return nil, nil, fmt.Errorf("%w: this replica is marked corrupt", shard.ErrReplicaCorrupt)
	}
	wctx, cancel := context.WithTimeout(ctx, internalCallLimit)
	err := rep.FSM().WaitApplied(wctx, minIndex)
	cancel()
	if err != nil {
		return nil, nil, fmt.Errorf("%w: not applied up to %d: %v", ErrRepairSource, minIndex, err)
	}
	snap, err := rep.FSM().Snapshot()
	if err != nil {
		return nil, nil, err
	}
	return nil, func(w io.Writer) error {
		defer snap.Release()
		// Cut short, the stream ends with the error: the rebuild fails
		// on it (and its trailer's checksum would anyway).
		return snap.Persist(&writerSink{w: w})
	}, nil
}
