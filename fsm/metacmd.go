package fsm

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
)

// Meta command type bytes (0x40..0x7F; see codec.go). Bodies are JSON: meta
// entries are rare control-plane decisions, and JSON lets a later release add
// fields that older nodes ignore.
const (
	metaSetClusterID  byte = 0x40
	metaUpsertNode    byte = 0x41
	metaSetNodeState  byte = 0x42
	metaRemoveNode    byte = 0x43
	metaCreateChannel byte = 0x44
	metaDeleteChannel byte = 0x45
	// metaHashCheck has the skippable bit: older nodes ignore it.
	metaHashCheck byte = 0x46 | TypeSkippable
	// metaSetClusterVersion has no skippable bit: a node that skipped it
	// would hold another cluster version than its group, and could propose
	// what the others cannot apply. It is proposed only once every member
	// supports its version, so a node that cannot decode it runs a binary
	// older than it claimed, or joined after the upgrade: it must stop.
	metaSetClusterVersion byte = 0x47
	// Channel tokens and settings (version 3; tokens.go). No skippable
	// bit: a node that skipped them would accept revoked tokens.
	metaIssueToken         byte = 0x48
	metaRevokeToken        byte = 0x49
	metaSetChannelSettings byte = 0x4A
	// metaSetPlacement (version 4) changes a channel's placement after
	// its creation: scaling, repair, drain. No skippable bit: a node that
	// skipped it would keep replicas the group no longer has, or never
	// start the ones it gained.
	metaSetPlacement byte = 0x50
	// metaCreateRestoredChannel (version 4; restore.go): no skippable
	// bit, a node that skipped it would not know the channel.
	metaCreateRestoredChannel byte = 0x60
	// metaRecoverChannel (version 4; restore.go): no skippable bit.
	metaRecoverChannel byte = 0x61
	// metaSetChannelQuota (version 4) changes a channel's quota.
	metaSetChannelQuota byte = 0x51
	// metaFenceServers (version 4; fence.go): no skippable bit, a node
	// that skipped it would let fenced servers back in.
	metaFenceServers byte = 0x62
	// metaSetChannelChunkSize (version 5; chunksize.go) changes the chunk
	// size of a channel's new files. No skippable bit: a node that skipped
	// it would cut uploads it receives into other chunks than its peers.
	metaSetChannelChunkSize byte = 0x52
)

var errSkippable = errors.New("fsm: entry may be skipped")

// MetaCommand is one decoded meta command.
type MetaCommand interface{ metaType() byte }

// SetClusterID names the cluster; only the first one sticks.
type SetClusterID struct {
	ID string `json:"id"`
}

// UpsertNode adds a node to the registry or updates its addresses and capacity.
type UpsertNode struct {
	Node NodeRecord `json:"node"`
}

// SetNodeState moves a node between alive, suspect, dead, draining and left.
type SetNodeState struct {
	ID    string `json:"id"`
	State string `json:"state"`
}

// RemoveNode forgets a node.
type RemoveNode struct {
	ID string `json:"id"`
}

// CreateChannel records a channel and its placement; the FSM assigns the group id.
type CreateChannel struct {
	Channel ChannelRecord `json:"channel"`
}

// DeleteChannel forgets a channel; its group id is never reused.
type DeleteChannel struct {
	Name string `json:"name"`
}

// SetPlacement replaces a channel's placement: the replica set its Raft
// group converges to, one configuration change at a time, driven by the
// channel's leader (cluster/DESIGN.md "Membership changes"). A replica
// whose server id was not in the old placement gets Added set to the
// entry's index: it joins the running group and never bootstraps.
type SetPlacement struct {
	Channel   string    `json:"channel"`
	Placement []Replica `json:"placement"`
	// Expect is the channel's ModifyIndex the proposer decided from. A
	// channel changed since fails with ErrPlacementChanged and nothing is
	// applied: two placement changes that race never mix.
	Expect uint64 `json:"expect"`
}

// SetChannelQuota replaces a channel's quota (0: none).
type SetChannelQuota struct {
	Channel    string `json:"channel"`
	QuotaBytes uint64 `json:"quota_bytes"`
}

// MetaHashCheck makes every replica of the meta group hash its state as of
// the entry's index (metahash.go); it changes nothing.
type MetaHashCheck struct{}

// SetClusterVersion raises the cluster version (fsm/version.go) to Version;
// a lower or equal Version changes nothing, so the cluster version never
// goes down. Nodes carries the version each node supports, as the leader
// decided from: applying it writes them into the node records, so that
// every replica holds the same records whatever an older binary dropped
// from them before it was upgraded.
type SetClusterVersion struct {
	Version int            `json:"version"`
	Nodes   map[string]int `json:"nodes,omitempty"`
}

func (*MetaHashCheck) metaType() byte     { return metaHashCheck }
func (*SetClusterVersion) metaType() byte { return metaSetClusterVersion }
func (*SetClusterID) metaType() byte      { return metaSetClusterID }
func (*UpsertNode) metaType() byte        { return metaUpsertNode }
func (*SetNodeState) metaType() byte      { return metaSetNodeState }
func (*RemoveNode) metaType() byte        { return metaRemoveNode }
func (*CreateChannel) metaType() byte     { return metaCreateChannel }
func (*DeleteChannel) metaType() byte     { return metaDeleteChannel }
func (*SetPlacement) metaType() byte      { return metaSetPlacement }
func (*SetChannelQuota) metaType() byte   { return metaSetChannelQuota }

// EncodeMeta returns the log entry bytes of a meta command.
func EncodeMeta(c MetaCommand) ([]byte, error) {
	body, err := json.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("fsm: encode meta command: %w", err)
	}
	return append([]byte{c.metaType()}, body...), nil
}

// DecodeMeta parses a meta log entry.
func DecodeMeta(b []byte) (MetaCommand, error) {
	if len(b) == 0 {
		return nil, fmt.Errorf("%w: empty meta entry", ErrDecode)
	}
	var c MetaCommand
	switch b[0] {
	case metaSetClusterID:
		c = &SetClusterID{}
	case metaUpsertNode:
		c = &UpsertNode{}
	case metaSetNodeState:
		c = &SetNodeState{}
	case metaRemoveNode:
		c = &RemoveNode{}
	case metaCreateChannel:
		c = &CreateChannel{}
	case metaDeleteChannel:
		c = &DeleteChannel{}
	case metaHashCheck:
		c = &MetaHashCheck{}
	case metaSetClusterVersion:
		c = &SetClusterVersion{}
	case metaIssueToken:
		c = &IssueToken{}
	case metaRevokeToken:
		c = &RevokeToken{}
	case metaSetChannelSettings:
		c = &SetChannelSettings{}
	case metaSetPlacement:
		c = &SetPlacement{}
	case metaCreateRestoredChannel:
		c = &CreateRestoredChannel{}
	case metaRecoverChannel:
		c = &RecoverChannel{}
	case metaSetChannelQuota:
		c = &SetChannelQuota{}
	case metaFenceServers:
		c = &FenceServers{}
	case metaSetChannelChunkSize:
		c = &SetChannelChunkSize{}
	default:
		if b[0]&0x80 != 0 {
			return nil, errSkippable
		}
		return nil, fmt.Errorf("%w: unknown meta type 0x%02x", ErrDecode, b[0])
	}
	dec := json.NewDecoder(bytes.NewReader(b[1:]))
	if err := dec.Decode(c); err != nil {
		return nil, fmt.Errorf("%w: meta type 0x%02x: %v", ErrDecode, b[0], err)
	}
	return c, nil
}
