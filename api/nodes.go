package api

import (
	"context"
	"net/http"
	"net/url"
)

// CodeNodeState is the error code of a node operation the node's state
// does not allow (409): removing a live node, leaving while holding
// replicas, draining a dead node, or taking away a meta vote the meta
// group's quorum needs. The message says why with the numbers.
const CodeNodeState = "node_state"

// NodeDetail is one node with what its drain, leave and removal need to
// know (GET /v1/nodes/{id}).
type NodeDetail struct {
	Node
	// ReplicasLeft is how many channels still place a replica on the
	// node; Channels names them.
	ReplicasLeft int      `json:"replicas_left"`
	Channels     []string `json:"channels,omitempty"`
	// Drained: the node is draining and no channel places a replica on
	// it any more; it is ready to leave (shardnet node leave).
	Drained bool `json:"drained"`
	// Blocked lists the node's replicas that the meta leader cannot move
	// (repair or drain), and why.
	Blocked []BlockedMove `json:"blocked,omitempty"`
	// MetaVoter: the node has a vote in the meta group.
	MetaVoter bool `json:"meta_voter"`
}

// BlockedMove is a replica that cannot be moved off its node, and why.
type BlockedMove struct {
	Channel string `json:"channel"`
	Reason  string `json:"reason"`
}

// NodeRemoved is the answer of DELETE /v1/nodes/{id}.
type NodeRemoved struct {
	ID string `json:"id"`
	// Moved are the channels whose replica on the node was placed
	// elsewhere by the removal.
	Moved []string `json:"moved,omitempty"`
	// MetaVoteRemoved: the node was a meta voter and its vote is gone.
	MetaVoteRemoved bool `json:"meta_vote_removed"`
}

func nodePath(id string) string { return "/v1/nodes/" + url.PathEscape(id) }

// Node describes one node.
func (c *Client) Node(ctx context.Context, id string) (NodeDetail, error) {
	var out NodeDetail
	_, err := c.doJSON(ctx, http.MethodGet, nodePath(id), nil, nil, &out)
	return out, err
}

// DrainNode starts draining a node: the meta leader moves every replica
// off it. The answer is the node as the drain starts.
func (c *Client) DrainNode(ctx context.Context, id string) (NodeDetail, error) {
	var out NodeDetail
	_, err := c.doJSON(ctx, http.MethodPost, nodePath(id)+"/drain", nil, nil, &out)
	return out, err
}

// CancelDrain stops a drain: the node takes replicas again; those already
// moved stay where they are.
func (c *Client) CancelDrain(ctx context.Context, id string) (NodeDetail, error) {
	var out NodeDetail
	_, err := c.doJSON(ctx, http.MethodDelete, nodePath(id)+"/drain", nil, nil, &out)
	return out, err
}

// LeaveNode makes a node that holds no replica leave the cluster
// gracefully: it leaves gossip and its process stops.
func (c *Client) LeaveNode(ctx context.Context, id string) error {
	_, err := c.doJSON(ctx, http.MethodPost, nodePath(id)+"/leave", nil, nil, nil)
	return err
}

// RemoveNode forgets a dead or left node for good: its replicas are placed
// elsewhere, its meta vote is removed, and the registry drops it.
func (c *Client) RemoveNode(ctx context.Context, id string) (NodeRemoved, error) {
	var out NodeRemoved
	_, err := c.doJSON(ctx, http.MethodDelete, nodePath(id), nil, nil, &out)
	return out, err
}
