package cluster

import (
	"errors"
	"strings"
	"testing"

	"github.com/hashicorp/raft"
)

func TestMetaVoteCheck(t *testing.T) {
	voter := func(node string) raft.Server {
		return raft.Server{ID: raft.ServerID(node + "@1"), Suffrage: raft.Voter}
	}
	nonvoter := raft.Server{ID: "r1@1", Suffrage: raft.Nonvoter}
	three := []raft.Server{voter("c1"), voter("c2"), voter("c3"), nonvoter}
	all := func(string) bool { return true }
	deadC2 := func(n string) bool { return n != "c2" }
	tests := []struct {
		name    string
		servers []raft.Server
		id      string
		live    func(string) bool
		want    string // "" or a substring of the refusal
	}{
		{"not a voter", three, "r1", all, ""},
		{"not a member", three, "zz", all, ""},
		{"three live voters: one may go", three, "c3", all, ""},
		{"a dead voter may go", three, "c2", deadC2, ""},
		{"a live voter may not go while another is dead", three, "c3", deadC2, "2 voters, 1 of them live, and needs 2"},
		{"the last voter", []raft.Server{voter("c1")}, "c1", all, "0 voters, 0 of them live, and needs 1"},
		{"five voters, two dead: a dead one may go", []raft.Server{voter("c1"), voter("c2"), voter("c3"), voter("c4"), voter("c5")}, "c5",
			func(n string) bool { return n != "c4" && n != "c5" }, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := metaVoteCheck(tc.servers, tc.id, tc.live)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.want != "" && (!errors.Is(err, ErrNodeState) || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("got %v, want a refusal with %q", err, tc.want)
			}
		})
	}
}
