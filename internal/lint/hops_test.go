package lint

import (
	"bufio"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// maxHopFiles is how many files a request may cross from the HTTP handler
// to the pebble batch (docs/architecture.md "Hop by hop"): more, and the path
// is too long to hold in one's head.
const maxHopFiles = 8

// hopRow is one row of a hop table: | n | `file.go` | `Type.Method` | why |.
var hopRow = regexp.MustCompile("^\\|\\s*\\d+\\s*\\|\\s*`([^`]+\\.go)`\\s*\\|\\s*`([A-Za-z_][A-Za-z0-9_]*(?:\\.[A-Za-z_][A-Za-z0-9_]*)?)`\\s*\\|")

// TestHopsExist reads the hop-by-hop tables of docs/architecture.md and
// checks that each listed function exists in the listed file, and that each
// path crosses at most maxHopFiles files. A rename or a move that leaves the
// page behind fails here.
func TestHopsExist(t *testing.T) {
	root := moduleRoot(t)
	paths := readHopTables(t, filepath.Join(root, "docs", "architecture.md"))
	if len(paths) < 2 {
		t.Fatalf("docs/architecture.md \"Hop by hop\" lists %d paths, want the write and the follower's read at least", len(paths))
	}
	decls := map[string]map[string]bool{} // file → declared functions
	for name, hops := range paths {
		files := map[string]bool{}
		for _, h := range hops {
			files[h.file] = true
			d, ok := decls[h.file]
			if !ok {
				var err error
				d, err = declaredFuncs(filepath.Join(root, h.file))
				if err != nil {
					t.Errorf("%s: %v", name, err)
				}
				decls[h.file] = d
			}
			if !d[h.fn] {
				t.Errorf("%s: %s has no function %s", name, h.file, h.fn)
			}
		}
		if len(files) > maxHopFiles {
			t.Errorf("%s crosses %d files, more than %d", name, len(files), maxHopFiles)
		}
	}
}

type hop struct{ file, fn string }

// readHopTables returns the rows of every table under a "### " heading of
// the "## Hop by hop" section, by heading.
func readHopTables(t *testing.T, path string) map[string][]hop {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	paths := map[string][]hop{}
	in, current := false, ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "## "):
			in = strings.TrimSpace(line[3:]) == "Hop by hop"
			current = ""
		case in && strings.HasPrefix(line, "### "):
			current = strings.TrimSpace(line[4:])
		case in && current != "" && strings.HasPrefix(line, "|"):
			if m := hopRow.FindStringSubmatch(line); m != nil {
				paths[current] = append(paths[current], hop{file: m[1], fn: m[2]})
			} else if !strings.HasPrefix(line, "|---") && !strings.HasPrefix(line, "| step") {
				t.Errorf("%s: a row of %q that is not | n | `file.go` | `Func` | ...: %s", path, current, line)
			}
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return paths
}

// declaredFuncs lists the functions a Go file declares, methods as
// Type.Method.
func declaredFuncs(path string) (map[string]bool, error) {
	f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.SkipObjectResolution)
	if err != nil {
		return nil, fmt.Errorf("parse: %w", err)
	}
	out := map[string]bool{}
	for _, d := range f.Decls {
		fd, ok := d.(*ast.FuncDecl)
		if !ok {
			continue
		}
		name := fd.Name.Name
		if fd.Recv != nil && len(fd.Recv.List) == 1 {
			typ := fd.Recv.List[0].Type
			if s, ok := typ.(*ast.StarExpr); ok {
				typ = s.X
			}
			if g, ok := typ.(*ast.IndexExpr); ok {
				typ = g.X
			}
			if id, ok := typ.(*ast.Ident); ok {
				name = id.Name + "." + name
			}
		}
		out[name] = true
	}
	return out, nil
}
