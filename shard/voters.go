package shard

import (
	"github.com/hashicorp/raft"
)

// VoterCheck returns the transport's voter check for a group run by rf
// (transport's GroupTransport.SetVoterCheck): a node may send the group Raft
// RPCs when one of its server ids is a voter of the group's latest
// configuration, committed or not, as Raft itself counts votes by it.
//
// A replica with no configuration yet (one being added to a running group:
// its leader's first AppendEntries or InstallSnapshot brings it) accepts
// the nodes placed reports (those the committed meta state places on the
// group), or, when placed is nil, any node the transport authenticated: it
// has no other way to learn who its voters are.
//
// GetConfiguration reads an atomic copy in hashicorp/raft v1.8, so this is
// cheap enough for every RPC.
func VoterCheck(rf *raft.Raft, placed func(node string) bool) func(node string) bool {
	return func(node string) bool {
		f := rf.GetConfiguration()
		if f.Error() != nil {
			return false
		}
		servers := f.Configuration().Servers
		if len(servers) == 0 {
			return placed == nil || placed(node)
		}
		for _, s := range servers {
			if s.Suffrage == raft.Voter && NodeOf(s.ID) == node {
				return true
			}
		}
		return false
	}
}
