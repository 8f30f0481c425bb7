package cluster

import (
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/raft"
)

// TestRecoveredConfiguration: the named survivors become the only voters,
// non-voters stay, every other voter is fenced; a survivor missing from
// the configuration, or this node under another server id, is refused.
func TestRecoveredConfiguration(t *testing.T) {
	cur := raft.Configuration{Servers: []raft.Server{
		{Suffrage: raft.Voter, ID: "n1@a", Address: "1"},
		{Suffrage: raft.Voter, ID: "n2@b", Address: "2"},
		{Suffrage: raft.Voter, ID: "n3@c", Address: "3"},
		{Suffrage: raft.Nonvoter, ID: "r1@d", Address: "4"},
		{Suffrage: raft.Nonvoter, ID: "n4@e", Address: "5"},
	}}
	for _, tt := range []struct {
		name      string
		voters    []string
		self      raft.ServerID
		wantIDs   []raft.ServerID
		wantFence []string
		err       string
	}{
		{"alone", []string{"n1"}, "n1@a", []raft.ServerID{"n1@a", "r1@d", "n4@e"}, []string{"n2@b", "n3@c"}, ""},
		{"two survivors", []string{"n1", "n3"}, "n1@a", []raft.ServerID{"n1@a", "n3@c", "r1@d", "n4@e"}, []string{"n2@b"}, ""},
		{"a non-voter promoted", []string{"n1", "n4"}, "n1@a", []raft.ServerID{"n1@a", "r1@d", "n4@e"}, []string{"n2@b", "n3@c"}, ""},
		{"unknown survivor", []string{"n1", "n9"}, "n1@a", nil, nil, "n9 is not in the meta configuration"},
		{"another incarnation", []string{"n1"}, "n1@z", nil, nil, "not this node's server id"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			next, fenced, err := recoveredConfiguration(cur, tt.voters, tt.self)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var ids []raft.ServerID
			for _, s := range next.Servers {
				ids = append(ids, s.ID)
				isVoter := slices.ContainsFunc(tt.voters, func(v string) bool { return strings.HasPrefix(string(s.ID), v+"@") })
				if isVoter != (s.Suffrage == raft.Voter) {
					t.Errorf("%s: suffrage %v", s.ID, s.Suffrage)
				}
			}
			if !slices.Equal(ids, tt.wantIDs) || !slices.Equal(fenced, tt.wantFence) {
				t.Fatalf("servers %v fenced %v, want %v and %v", ids, fenced, tt.wantIDs, tt.wantFence)
			}
		})
	}
}
