package fsm

import (
	"errors"
	"slices"
)

// Channels created from a backup (docs/operations.md "Backup and
// restore"). The meta command records the channel as CreateChannel does,
// plus where its first replica gets the backup's snapshot: the node that
// received the upload keeps it until that replica has seeded the group
// from it (package cluster, backup.go).

// ErrInvalidRestore refuses a CreateRestoredChannel without its source.
var ErrInvalidRestore = errors.New("fsm: a restored channel needs its restore source")

// RestoreSource says where a restored channel's state comes from.
type RestoreSource struct {
	// Node holds the uploaded snapshot under ID until the seeding replica
	// fetched it.
	Node string `json:"node"`
	ID   string `json:"id"`
	// ServerID is the replica that seeds the group: the first of the
	// creation placement. Any other replica, and this one should it be
	// replaced, starts empty and receives the leader's snapshot.
	ServerID string `json:"server_id"`
	// Index is the backup's index: the seeded group's log continues
	// after it, so no index the channel hands out is at or below one it
	// restored.
	Index uint64 `json:"index"`
	// Term is the backup's term (recorded for the operator; the seeded
	// group starts its own terms).
	Term uint64 `json:"term,omitempty"`
	// Bytes is the size of the snapshot.
	Bytes int64 `json:"bytes"`
}

// CreateRestoredChannel records a channel created from a backup (version
// 4): as CreateChannel, with Channel.Restore set.
type CreateRestoredChannel struct {
	Channel ChannelRecord `json:"channel"`
}

func (*CreateRestoredChannel) metaType() byte { return metaCreateRestoredChannel }

// applyCreateChannel records ch, placed, under the next group id.
func (m *Meta) applyCreateChannel(index uint64, ch ChannelRecord, res *MetaResult) {
	if _, ok := m.st.Channels[ch.Name]; ok {
		res.Err = ErrChannelExists
		return
	}
	if ch.ChunkSize != 0 && ValidateChunkSize(ch.ChunkSize) != nil {
		res.Err = ErrInvalidChunkSize
		return
	}
	ch.GroupID = m.st.NextGroupID
	m.st.NextGroupID++
	ch.CreateIndex, ch.ModifyIndex = index, index
	ch.Placement = slices.Clone(ch.Placement)
	if ch.Restore != nil {
		r := *ch.Restore
		ch.Restore = &r
	}
	m.st.Channels[ch.Name] = &ch
	res.GroupID = ch.GroupID
}

// ErrGroupMoved refuses a RecoverChannel of a group the channel no longer
// has (another recovery, or a delete and create, came first).
var ErrGroupMoved = errors.New("fsm: the channel's group is not the one recovered")

// RecoverChannel re-forms a channel that lost a quorum of its replicas
// (version 4): a new group, seeded from the surviving replica's state
// (Restore, at the last index of its log), takes the place of OldGroup,
// which is retired for good. The channel keeps its name, settings, quota
// and tokens; its placement is Placement, the surviving replica first.
type RecoverChannel struct {
	Name      string        `json:"name"`
	OldGroup  uint64        `json:"old_group"`
	Placement []Replica     `json:"placement"`
	Restore   RestoreSource `json:"restore"`
}

func (*RecoverChannel) metaType() byte { return metaRecoverChannel }

func (m *Meta) applyRecoverChannel(index uint64, c *RecoverChannel, res *MetaResult) {
	ch, ok := m.st.Channels[c.Name]
	if !ok {
		res.Err = ErrChannelNotFound
		return
	}
	if ch.GroupID != c.OldGroup || len(c.Placement) == 0 {
		res.Err = ErrGroupMoved
		return
	}
	ch.RetiredGroups = append(ch.RetiredGroups, ch.GroupID)
	ch.GroupID = m.st.NextGroupID
	m.st.NextGroupID++
	ch.Placement = slices.Clone(c.Placement)
	ch.Replicas = len(c.Placement)
	src := c.Restore
	ch.Restore = &src
	// The new group's replicas are removed only by a meta state newer
	// than this entry (the reconciler counts from CreateIndex).
	ch.CreateIndex, ch.ModifyIndex = index, index
	res.GroupID = ch.GroupID
}
