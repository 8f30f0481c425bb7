// Package lint holds tests that check the shape of the code base itself.
package lint

import (
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/shardnet/shardnet/"

// The layers point one way: cmd → server → cluster → shard → transport,
// fsm, with api a leaf client package (docs/design.md "Layers"). rank gives each
// top-level package its layer; a package may import only packages of a
// lower rank (or its own subpackages).
var rank = map[string]int{
	"api":       0,
	"fsm":       1,
	"chunk":     0, // the node's chunk store; imports nothing of shardnet
	"access":    2, // who may call what: used by server and cluster alike
	"transport": 2, // the node's one cluster port: Raft of every group, calls
	"shard":     3,
	"cluster":   4,
	"server":    5,
	"internal":  6, // agent, testcluster, e2e: assemble everything
	"cmd":       7,
}

// allowed lists imports that rank alone would refuse.
var allowed = map[string][]string{
	"server":  {"api"},
	"cluster": {"api"},
}

func TestLayering(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", `{{.ImportPath}}{{range .Imports}} {{.}}{{end}}`, "github.com/shardnet/shardnet/...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		fields := strings.Fields(line)
		from := top(fields[0])
		if _, ok := rank[from]; !ok {
			t.Errorf("package %s is in no layer; add it to rank", fields[0])
			continue
		}
		for _, imp := range fields[1:] {
			if !strings.HasPrefix(imp, module) {
				continue
			}
			to := top(imp)
			if to == from || rank[to] < rank[from] || contains(allowed[from], to) {
				continue
			}
			t.Errorf("%s imports %s: a lower layer must not import a higher one", fields[0], imp)
		}
	}
}

func top(path string) string {
	rest := strings.TrimPrefix(path, module)
	if i := strings.IndexByte(rest, '/'); i >= 0 {
		return rest[:i]
	}
	return rest
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
