package main

import (
	"path/filepath"
	"strings"
	"testing"
)

// TestRecoverMetaCommand: the offline command's usage, help and the
// refusal of a data dir without meta state (the recovery itself:
// internal/e2e TestRecoverMetaAfterLosingAQuorum).
func TestRecoverMetaCommand(t *testing.T) {
	if r := shardnet(t, nil, "", "recover-meta"); r.code != 2 || !strings.Contains(r.err, "-data-dir") {
		t.Fatalf("without -data-dir: exit %d, stderr %q", r.code, r.err)
	}
	if r := shardnet(t, nil, "", "recover-meta", "-data-dir", "x", "extra"); r.code != 2 {
		t.Fatalf("with an argument: exit %d, stderr %q", r.code, r.err)
	}
	if r := shardnet(t, nil, "", "recover-meta", "-h"); r.code != 0 || !strings.Contains(r.err, "-i-understand-data-loss") || !strings.Contains(r.err, "wipe its data dir") {
		t.Fatalf("-h: exit %d, stderr %q", r.code, r.err)
	}
	dir := filepath.Join(t.TempDir(), "empty")
	if r := shardnet(t, nil, "", "recover-meta", "-data-dir", dir, "-i-understand-data-loss"); r.code != 1 || !strings.Contains(r.err, "no meta state") {
		t.Fatalf("an empty data dir: exit %d, stderr %q", r.code, r.err)
	}
}
