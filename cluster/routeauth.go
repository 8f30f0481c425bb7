package cluster

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/raft"

	"github.com/shardnet/shardnet/access"
	"github.com/shardnet/shardnet/fsm"
	"github.com/shardnet/shardnet/shard"
	"github.com/shardnet/shardnet/transport"
)

// Who may make a route call (docs/security.md "Cluster port"). The node a
// client connected to checks the client (server/auth.go), but a route call
// may come from any node of the cluster CA, a resource node a stranger runs
// included: so the node serving a call checks again, here and nowhere
// else (serveRoute calls authorize before any handler), with the same
// rules and code (package access) as the HTTP layer:
//
//   - client calls (propose, get, list, watch, and the meta writes:
//     create_channel, delete_channel, repair, issue_token, revoke_token,
//     settings) carry the client's proof as the first node received it
//     (its bearer token, a signed link's query, or none), which must allow
//     the call: the operator token everything, a channel token its channel
//     (read-only: get, list, watch), a link or a public prefix a read of
//     the key. A call that carries no client (the node's own) may not read
//     or write channel data at all, and may make a meta write only when its
//     sender's certificate names a core node.
//   - node calls (readindex, meta_readindex, hash, replica_info) answer
//     indexes, hashes and who leads: any node of the cluster may ask.
//   - snapshot (a replica's whole state, for a repair) answers only a node
//     the meta state places on the channel; restore_fetch (an uploaded
//     backup) only the node the meta state names to seed the restore.
//   - backup, create_restored, retire and recover_meta are operator calls;
//     recover_info answers indexes, as replica_info does; change_channel
//     (scaling) is an operator call; member (is this replica still in
//     the group?) answers any node.
//   - files: put_chunk and lease_chunks write as propose does (a client's write of the
//     channel, or a node the meta state places on it); stat_file and
//     list_files read as get and list do (a signed link to the file);
//     get_chunk answers any node: a chunk id is a capability, learnt only
//     from a manifest, and the caller checks the bytes against it.
//   - hold_collection (backupholds.go) is a node's own call, from any
//     node: a hold only postpones the collector, and lapses.
//   - meta_watch (the whole meta state, streamed to a resource node that
//     follows it: metawatch.go) answers a node the registry holds and
//     that has not left: what every node received as a meta non-voter
//     before (a node is registered from gossip, which the gossip key
//     guards).
//   - drain, leave and remove_node (the node commands, drain.go) are
//     operator calls, made only for a client.
//
// Without TLS (-insecure) a call's sender is not known: every holder of the
// cluster key is trusted as a core node placed on every channel, and only
// the client checks hold.

// clientOp marks the ops made for a client: they carry its proof.
var clientOp = map[byte]bool{
	rcPropose: true, rcGet: true, rcList: true, rcWatch: true,
	rcCreateChannel: true, rcDeleteChannel: true, rcRepair: true,
	rcIssueToken: true, rcRevokeToken: true, rcSettings: true,
	rcBackup: true, rcCreateRestored: true, rcRetire: true, rcRecoverMeta: true,
	rcChangeChannel: true, rcDrain: true, rcLeave: true, rcRemoveNode: true,
	rcPutChunk: true, rcStatFile: true, rcListFiles: true, rcLeaseChunks: true,
}

// metaWriteOp marks the client ops that write the meta state (or, repair,
// rebuild a replica): a node may make them for itself, if it is core.
var metaWriteOp = map[byte]bool{
	rcCreateChannel: true, rcDeleteChannel: true, rcRepair: true,
	rcIssueToken: true, rcRevokeToken: true, rcSettings: true,
	rcCreateRestored: true, rcRetire: true, rcRecoverMeta: true,
	rcChangeChannel: true,
}

// appendProof appends a call's proof: kind u8, then for a bearer token its
// bytes, for a link its token id, expiry and signature, and for any
// client proof the caller's applied meta index uvarint (authorize waits
// for it before it refuses a token it does not know).
func appendProof(b []byte, p access.Proof, metaIndex uint64) []byte {
	b = append(b, byte(p.Kind))
	switch p.Kind {
	case access.ProofNone:
		return b
	case access.ProofBearer:
		b = appendBytes(b, []byte(p.Bearer))
	case access.ProofLink:
		b = appendBytes(appendBytes(appendBytes(b, []byte(p.Link.Token)), []byte(p.Link.Exp)), []byte(p.Link.Sig))
	}
	return binary.AppendUvarint(b, metaIndex)
}

// readProof reads what appendProof wrote and returns the rest.
func readProof(b []byte) (p access.Proof, metaIndex uint64, rest []byte, err error) {
	d := decoder{b: b}
	p.Kind = access.ProofKind(d.byte())
	switch p.Kind {
	case access.ProofNone:
		return p, 0, d.b, d.err
	case access.ProofAnonymous:
	case access.ProofBearer:
		p.Bearer = string(d.bytes())
	case access.ProofLink:
		p.Link = access.Link{Token: string(d.bytes()), Exp: string(d.bytes()), Sig: string(d.bytes())}
	default:
		return p, 0, nil, fmt.Errorf("%w: unknown proof kind %d", ErrInvalidRequest, p.Kind)
	}
	metaIndex = d.uvarint()
	if d.err != nil {
		return p, 0, nil, fmt.Errorf("%w: malformed proof: %v", ErrInvalidRequest, d.err)
	}
	return p, metaIndex, d.b, nil
}

// proofFor is the proof a call of op sends: the client's (from ctx) for a
// client op, none for a node op, and none for a call made while serving
// one (a repair's snapshot fetch is the node's own).
func proofFor(ctx context.Context, op byte) access.Proof {
	if !clientOp[op] || servedCall(ctx) {
		return access.Proof{}
	}
	return access.ProofOf(ctx)
}

// authorize is the one check of every served route call (the comment
// above): nil, or why peer may not make call op with head and proof.
func (r *router) authorize(ctx context.Context, op byte, head []byte, proof access.Proof, metaIndex uint64, peer transport.Peer) error {
	switch op {
	case rcReadIndex, rcMetaReadIndex, rcHash, rcReplicaInfo, rcRecoverInfo, rcMember:
		return nil
	case rcSnapshot:
		return r.placedPeer(head, peer)
	case rcMetaWatch:
		return r.registeredPeer(peer)
	case rcRestoreFetch:
		return r.seedingPeer(head, peer)
	case rcGetChunk:
		// A chunk id is a capability: a node learns one only from a
		// manifest it holds, and the bytes are checked against it.
		return nil
	case rcHoldCollection:
		// A node's own call (a backup it writes): a hold only postpones
		// collection, and lapses unless renewed.
		if proof.Kind == access.ProofNone {
			return nil
		}
	case rcPutChunk, rcLeaseChunks:
		if proof.Kind == access.ProofNone {
			return r.placedPeer(head, peer) // a replica's own (restore, repair)
		}
	}
	if !clientOp[op] {
		return fmt.Errorf("%w: call %d", access.ErrForbidden, op)
	}
	if proof.Kind == access.ProofNone {
		switch {
		case !metaWriteOp[op]:
			return &access.Refusal{Sentinel: access.ErrForbidden, Msg: "a node's own call may not read or write channel data: it carries no client"}
		case peer.Node != "" && peer.Role != transport.RoleCore:
			return &access.Refusal{Sentinel: access.ErrForbidden, Msg: fmt.Sprintf("node %s is not a core node: its own calls may not write the meta state", peer.Node)}
		}
		return nil
	}
	if r.n.check.Open() {
		return nil
	}
	n, err := r.need(op, head)
	if err != nil {
		return err
	}
	err = r.allowClient(proof, n)
	if errors.Is(err, access.ErrUnauthorized) && r.n.metaFSM.Applied() < metaIndex {
		// The node the client reached knows more of the meta state (a
		// token issued a moment ago): catch up with it, then decide.
		wctx, cancel := context.WithTimeout(ctx, internalCallLimit)
		werr := r.n.waitMetaApplied(wctx, metaIndex)
		cancel()
		if werr == nil {
			err = r.allowClient(proof, n)
		}
	}
	return err
}

// need is what a client call asks of the channel it names.
type need struct {
	rule    access.Rule
	channel string
	call    string
	// key is the key a get or watch reads (signed links, public
	// prefixes), prefix a list's; hasKey and hasPrefix say which is set.
	key, prefix       []byte
	hasKey, hasPrefix bool
	// resource is what a signed link must name (a file's); "" for a key's,
	// access.KVResource(key).
	resource string
}

// need decodes what op with head asks, with the decoders its handler uses.
func (r *router) need(op byte, head []byte) (need, error) {
	switch op {
	case rcPropose:
		if len(head) < 8 {
			return need{}, fmt.Errorf("%w: short propose call", ErrInvalidRequest)
		}
		gid := binary.BigEndian.Uint64(head)
		rep, ok := r.n.shards.Replica(gid)
		if !ok {
			return need{}, fmt.Errorf("%w: group %d", shard.ErrNotHosted, gid)
		}
		return need{rule: access.RuleWrite, channel: rep.Channel, call: "propose"}, nil
	case rcGet:
		c, err := parseGet(head)
		return need{rule: access.RuleRead, channel: c.channel, call: "get", key: c.key, hasKey: true}, err
	case rcList:
		c, err := parseList(head)
		return need{rule: access.RuleRead, channel: c.channel, call: "list", prefix: c.prefix, hasPrefix: true}, err
	case rcWatch:
		c, err := parseWatch(head)
		return need{rule: access.RuleRead, channel: c.channel, call: "watch", key: c.key, hasKey: true}, err
	case rcCreateChannel:
		return need{rule: access.RuleOperator, call: "create_channel"}, nil
	case rcDeleteChannel:
		return need{rule: access.RuleOperator, channel: string(head), call: "delete_channel"}, nil
	case rcRepair:
		return need{rule: access.RuleOperator, call: "repair"}, nil
	case rcBackup:
		return need{rule: access.RuleOperator, channel: string(head), call: "backup"}, nil
	case rcCreateRestored, rcRecoverMeta:
		return need{rule: access.RuleOperator, call: "restore"}, nil
	case rcRetire:
		return need{rule: access.RuleOperator, call: "recover"}, nil
	case rcChangeChannel:
		return need{rule: access.RuleOperator, call: "change_channel"}, nil
	case rcPutChunk, rcLeaseChunks:
		n, err := r.need(rcPropose, head)
		n.call = "put_chunk"
		return n, err
	case rcStatFile, rcListFiles:
		// head: level u8 | channel | path (stat) or prefix (list) | ...
		d := decoder{b: head}
		d.byte()
		channel, path := string(d.bytes()), string(d.bytes())
		if d.err != nil {
			return need{}, fmt.Errorf("%w: malformed file call: %v", ErrInvalidRequest, d.err)
		}
		if op == rcListFiles {
			return need{rule: access.RuleRead, channel: channel, call: "list_files"}, nil
		}
		return need{rule: access.RuleRead, channel: channel, call: "stat_file", resource: access.FileResource(path)}, nil
	case rcDrain, rcLeave, rcRemoveNode:
		return need{rule: access.RuleOperator, call: "node"}, nil
	case rcIssueToken, rcRevokeToken, rcSettings:
		c, err := parseTokenCall(head)
		return need{rule: access.RuleWrite, channel: c.Channel, call: "tokens"}, err
	}
	return need{}, fmt.Errorf("%w: call %d", access.ErrForbidden, op)
}

// allowClient checks a client's proof against what its call needs, as
// server.admit checks a request.
func (r *router) allowClient(p access.Proof, n need) error {
	now := time.Now()
	switch p.Kind {
	case access.ProofBearer:
		cred, err := r.n.check.Bearer(p.Bearer, now)
		if err != nil {
			return err
		}
		return access.Allow(cred, n.rule, n.channel, n.call)
	case access.ProofLink:
		res := n.resource
		if res == "" && n.hasKey {
			res = access.KVResource(n.key)
		}
		if n.rule == access.RuleRead && res != "" && r.n.check.SignedLink(p.Link, n.channel, res, now) {
			return nil
		}
	case access.ProofAnonymous:
		if n.rule == access.RuleRead && (n.hasKey && r.n.check.Public(n.channel, string(n.key)) ||
			n.hasPrefix && r.n.check.Public(n.channel, string(n.prefix))) {
			return nil
		}
	}
	return &access.Refusal{Sentinel: access.ErrUnauthorized, Msg: "missing or wrong bearer token"}
}

// placedPeer lets a snapshot call through from a node the meta state
// places on the group's channel (the replica being repaired).
func (r *router) placedPeer(head []byte, peer transport.Peer) error {
	if peer.Node == "" {
		return nil // -insecure: no identity to check
	}
	if len(head) < 8 {
		return fmt.Errorf("%w: short snapshot call", ErrInvalidRequest)
	}
	gid := binary.BigEndian.Uint64(head)
	rep, ok := r.n.shards.Replica(gid)
	if !ok {
		return fmt.Errorf("%w: group %d", shard.ErrNotHosted, gid)
	}
	if ch, ok := r.n.metaFSM.Channel(rep.Channel); ok && ch.GroupID == gid && placedOn(ch, peer.Node) {
		return nil
	}
	return &access.Refusal{Sentinel: access.ErrForbidden, Msg: fmt.Sprintf("node %s holds no replica of channel %q: it may not read its state", peer.Node, rep.Channel)}
}

// registeredPeer lets a meta watch through from a node the registry holds
// and that has not left.
func (r *router) registeredPeer(peer transport.Peer) error {
	if peer.Node == "" {
		return nil // -insecure: no identity to check
	}
	if nd, ok := r.n.metaFSM.Node(peer.Node); ok && nd.State != fsm.NodeLeft {
		return nil
	}
	return &access.Refusal{Sentinel: access.ErrForbidden, Msg: fmt.Sprintf("node %s is not a registered member of the cluster: it may not follow the meta state", peer.Node)}
}

// seedingPeer allows a restore's uploaded backup (rcRestoreFetch, head the
// restore id) only to the node the meta state names as the one that seeds
// the restored channel: the file is a whole channel's data.
func (r *router) seedingPeer(head []byte, peer transport.Peer) error {
	if peer.Node == "" {
		return nil // -insecure: no identity to check
	}
	for _, ch := range r.n.metaFSM.Channels() {
		if ch.Restore != nil && ch.Restore.ID == string(head) && shard.NodeOf(raft.ServerID(ch.Restore.ServerID)) == peer.Node {
			return nil
		}
	}
	return &access.Refusal{Sentinel: access.ErrForbidden, Msg: fmt.Sprintf("node %s does not seed the restore %q: it may not fetch its backup", peer.Node, head)}
}

func placedOn(ch fsm.ChannelRecord, node string) bool {
	for _, p := range ch.Placement {
		if p.NodeID == node {
			return true
		}
	}
	return false
}
