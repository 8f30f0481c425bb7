package shard

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
)

func TestQuietLowersRaftLevels(t *testing.T) {
	var buf bytes.Buffer
	q := Quiet(hclog.New(&hclog.LoggerOptions{Output: &buf, Level: hclog.Info}))
	q.Error("failed to appendEntries to", "error", errors.New("disk on fire"))
	q.Warn("failed to contact", "server-id", "n2")
	q.Info("entering follower state")
	q.Error("failed to make requestVote RPC", "error", errors.New("transport: request_vote to x (group 3): transport: unknown group 3"))
	out := buf.String()
	if !strings.Contains(out, "[WARN]  failed to appendEntries to") || !strings.Contains(out, "[INFO]  failed to contact") {
		t.Fatalf("errors and warnings not one level lower:\n%s", out)
	}
	if strings.Contains(out, "entering follower state") {
		t.Fatalf("raft INFO reached an INFO logger:\n%s", out)
	}
	if strings.Contains(out, "unknown group") {
		t.Fatalf("a refusal for a group the peer does not run yet was not demoted to debug:\n%s", out)
	}
}
