package cluster

import (
	"slices"
	"testing"

	"github.com/hashicorp/raft"
)

// TestTally: a replica's hash is judged against the hash more than half of
// the group's voters computed; without such a hash nothing is decided.
func TestTally(t *testing.T) {
	type peers = map[raft.ServerID]uint64
	tests := []struct {
		name     string
		own      uint64
		voters   int
		peers    peers
		decided  bool
		majority uint64
		disagree []raft.ServerID
	}{
		{"all agree", 1, 3, peers{"b": 1, "c": 1}, true, 1, nil},
		{"this one differs", 2, 3, peers{"b": 1, "c": 1}, true, 1, nil},
		{"a peer differs", 1, 3, peers{"b": 1, "c": 2}, true, 1, []raft.ServerID{"c"}},
		{"one peer silent, the other agrees", 1, 3, peers{"b": 1}, true, 1, nil},
		{"one peer silent, the other differs", 1, 3, peers{"b": 2}, false, 0, nil},
		{"two voters that differ", 1, 2, peers{"b": 2}, false, 0, nil},
		{"three hashes", 1, 3, peers{"b": 2, "c": 3}, false, 0, nil},
		{"five voters, two silent, three agree", 1, 5, peers{"b": 1, "c": 1}, true, 1, nil},
		{"five voters, this one and a peer against three", 2, 5, peers{"b": 1, "c": 1, "d": 1, "e": 2}, true, 1, []raft.ServerID{"e"}},
		{"five voters, two against two", 1, 5, peers{"b": 1, "c": 2, "d": 2}, false, 0, nil},
		{"a lone voter", 7, 1, peers{}, true, 7, nil},
	}
	// A non-voter (a resource node's copy of the meta state) is judged by
	// the voters' hashes; its own does not count.
	if v := tally(9, 2, false, 3, peers{"a": 1, "b": 1}); !v.Decided || v.Majority != 1 || v.Answers != 2 {
		t.Errorf("a non-voter against two voters that agree: %+v", v)
	}
	if v := tally(9, 2, false, 3, peers{"a": 1, "b": 2}); v.Decided {
		t.Errorf("a non-voter agreeing with one of three voters: %+v, want undecided", v)
	}
	for _, tt := range tests {
		v := tally(9, tt.own, true, tt.voters, tt.peers)
		if v.Decided != tt.decided || (v.Decided && v.Majority != tt.majority) || !slices.Equal(v.Disagree, tt.disagree) {
			t.Errorf("%s: %+v, want decided %v majority %d disagree %v", tt.name, v, tt.decided, tt.majority, tt.disagree)
		}
		if v.Index != 9 || v.Hash != tt.own || v.Answers != 1+len(tt.peers) {
			t.Errorf("%s: %+v", tt.name, v)
		}
	}
}
