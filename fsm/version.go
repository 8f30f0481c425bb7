package fsm

import (
	"errors"
	"fmt"
)

// Versions of the commands (fsm/DESIGN.md "Versions: a command is proposed
// only once every node can apply it"). Version is the highest version this
// binary applies; every release that adds a command type raises it by one,
// and gives the new type that version in EntryVersion or MetaVersion. The
// cluster version, committed in the meta group (SetClusterVersion), is the
// highest version every member supports; nothing proposes a command of a
// higher version.
//
//	1  every release before versions: nodes that report no version. Some
//	   of them (after commit 404f01c) apply the hash checks too, but
//	   counting them as 1 only holds the checks back a little longer.
//	2  HashCheck (0x84), MetaHashCheck (0xC6), SetClusterVersion (0x47);
//	   nodes report their version
//	3  IssueToken (0x48), RevokeToken (0x49), SetChannelSettings (0x4A):
//	   channel tokens, public prefixes and CORS; Idempotent (0x05): writes
//	   under an idempotency key
//	4  SetPlacement (0x50): placements that change after creation;
//	   SetChannelQuota (0x51): a channel's quota changed;
//	   CreateRestoredChannel (0x60): a channel created from a backup;
//	   RecoverChannel (0x61): a channel re-formed after losing a quorum;
//	   FenceServers (0x62): server ids a meta recovery removed
//	   PutFile (0x06), DeleteFile (0x07): files in channels
//	5  SetChannelChunkSize (0x52), and CreateChannel with a chunk_size:
//	   a channel's chunk size (chunksize.go); nodes of this version take
//	   chunks of up to MaxChunkSize. And, with no command of its own:
//	   resource nodes leave the meta group and follow the meta state by
//	   watch on a core node (cluster/metafollow.go); the meta leader
//	   removes them from the meta configuration only once every node
//	   runs a binary that can follow that way
const Version = 5

// ErrUpgradePending is what a proposal of a command whose version is above
// the cluster version fails with: nothing was proposed.
var ErrUpgradePending = errors.New("finish upgrading every node")

// VersionError says which version a refused command needs.
type VersionError struct {
	Need, Cluster int
}

func (e *VersionError) Error() string {
	return fmt.Sprintf("command needs cluster version %d, the cluster runs %d: %v", e.Need, e.Cluster, ErrUpgradePending)
}

// Unwrap makes errors.Is(err, ErrUpgradePending) hold.
func (e *VersionError) Unwrap() error { return ErrUpgradePending }

// CheckVersion returns a *VersionError when a command of version need may
// not be proposed in a cluster that runs version cluster.
func CheckVersion(need, cluster int) error {
	if need > cluster {
		return &VersionError{Need: need, Cluster: cluster}
	}
	return nil
}

// EntryVersion is the version that introduced an encoded channel command's
// type. A type this binary does not know is above Version: it is never
// proposed.
func EntryVersion(entry []byte) int {
	if len(entry) == 0 {
		return 1
	}
	switch entry[0] {
	case typePut, typeDelete, typeTxn:
		return 1
	case typeHashCheck:
		return 2
	case typeIdempotent:
		return 3
	case typePutFile, typeDeleteFile:
		return 4
	}
	return Version + 1
}

// MetaVersion is the version that introduced a meta command: its type,
// or a field it sets (a new channel's chunk size).
func MetaVersion(c MetaCommand) int {
	switch c := c.(type) {
	case *MetaHashCheck, *SetClusterVersion:
		return 2
	case *IssueToken, *RevokeToken, *SetChannelSettings:
		return 3
	case *SetPlacement, *SetChannelQuota, *RecoverChannel, *FenceServers:
		return 4
	case *SetChannelChunkSize:
		return 5
	// A chunk size in a new channel's record: an older node would drop
	// the field, and its copy of the record, and of the meta state's
	// hash, would differ from the others'.
	case *CreateRestoredChannel:
		if c.Channel.ChunkSize != 0 {
			return 5
		}
		return 4
	case *CreateChannel:
		if c.Channel.ChunkSize != 0 {
			return 5
		}
	}
	return 1
}
