package lint

import (
	"fmt"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"unicode"
)

// TestReferences checks that every reference to a document, in the Go
// comments and the Markdown files of the repository, can be followed by
// someone who only cloned it. The one form is described in docs/design.md
// "How references are written": a repository path ending in .md, then
// optionally a section as the exact text of a heading of that file in double
// quotes (or the heading's label before its first colon, "D3" for
// "## D3: ..."). Comment blocks and Markdown paragraphs are joined before
// matching, so a reference may wrap across lines. Markdown links to a file or
// a #anchor are checked too. Names of the design notes that once lived
// outside the repository are refused outright.
func TestReferences(t *testing.T) {
	root := moduleRoot(t)
	files := repoFiles(t, root)
	headings := map[string][]string{} // .md path → its headings, read once
	for _, f := range files {
		if !strings.HasSuffix(f, ".go") && !strings.HasSuffix(f, ".md") {
			continue
		}
		src, err := os.ReadFile(filepath.Join(root, f))
		if os.IsNotExist(err) {
			continue // deleted in the work tree, not yet in the index
		}
		if err != nil {
			t.Fatal(err)
		}
		texts, err := textsOf(f, src)
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		for _, tx := range texts {
			for _, p := range checkText(root, f, tx.s, headings) {
				t.Errorf("%s:%d: %s", f, tx.lineAt(p.at), p.msg)
			}
		}
	}
}

// text is a Go comment block or a Markdown paragraph, its lines joined with
// single spaces (comment markers dropped, runs of white space collapsed).
// starts[i] is the offset in s where source line lines[i] begins.
type text struct {
	s      string
	starts []int
	lines  []int
}

func (t *text) add(line int, l string) {
	l = strings.TrimSpace(space.ReplaceAllString(l, " "))
	if l == "" {
		return
	}
	if t.s != "" {
		t.s += " "
	}
	t.starts = append(t.starts, len(t.s))
	t.lines = append(t.lines, line)
	t.s += l
}

// lineAt returns the source line of offset off in t.s.
func (t *text) lineAt(off int) int {
	line := 0
	for i, st := range t.starts {
		if st > off {
			break
		}
		line = t.lines[i]
	}
	return line
}

var space = regexp.MustCompile(`\s+`)

func textsOf(name string, src []byte) ([]*text, error) {
	if strings.HasSuffix(name, ".md") {
		// One text per paragraph: blank lines separate them.
		var out []*text
		cur := &text{}
		for i, l := range strings.Split(string(src), "\n") {
			if strings.TrimSpace(l) == "" {
				if cur.s != "" {
					out = append(out, cur)
					cur = &text{}
				}
				continue
			}
			cur.add(i+1, l)
		}
		if cur.s != "" {
			out = append(out, cur)
		}
		return out, nil
	}
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, name, src, parser.ParseComments)
	if err != nil {
		return nil, err
	}
	var out []*text
	for _, cg := range f.Comments {
		t := &text{}
		for _, c := range cg.List {
			body := strings.TrimPrefix(c.Text, "//")
			body = strings.TrimPrefix(body, "/*")
			body = strings.TrimSuffix(body, "*/")
			first := fset.Position(c.Pos()).Line
			for k, l := range strings.Split(body, "\n") {
				t.add(first+k, l)
			}
		}
		out = append(out, t)
	}
	// String literals and code: names of the old notes only, line by line.
	for i, l := range strings.Split(string(src), "\n") {
		if p := banned.FindString(l); p != "" && !strings.Contains(l, "//") {
			t := &text{}
			t.add(i+1, p)
			out = append(out, t)
		}
	}
	return out, nil
}

var (
	// A path to a Markdown file: at least one directory, so that it is
	// resolvable from the repository root; optionally followed by a quoted
	// section (with no comma: one form).
	mdRef = regexp.MustCompile("([A-Za-z0-9_.-]+(?:/[A-Za-z0-9_.-]+)+\\.md)`?(,?) ?(?:\"([^\"]+)\")?")
	// A Markdown link target: a .md path (relative to the linking file)
	// and/or an #anchor.
	mdLink = regexp.MustCompile(`\]\(([^)#\s:]*\.md)?(?:#([^)\s]+))?\)`)
	// What the old out-of-tree notes were called (spelt in pieces here so
	// that this file does not match itself), and a package design page
	// named without its directory (there are several).
	banned = regexp.MustCompile(strings.Join([]string{
		`RAFT` + `[- ]NOTES`,
		`DESIGN` + ` decision`,
		`decision` + ` [0-9]+\b`,
		`STYLE` + `\.md`,
		`(?:^|[^/A-Za-z0-9_.-])DESIGN` + `\.md`,
	}, "|"))
	// A section sign and a number with no document before it, unless it is
	// a section of an RFC.
	section = regexp.MustCompile(`§ ?[0-9]`)
	rfc     = regexp.MustCompile(`RFC ?[0-9]+ ?$`)
)

// problem is what is wrong at offset at of a text.
type problem struct {
	at  int
	msg string
}

func checkText(root, file, s string, headings map[string][]string) []problem {
	var problems []problem
	add := func(at int, format string, args ...any) {
		problems = append(problems, problem{at, fmt.Sprintf(format, args...)})
	}
	for _, m := range section.FindAllStringIndex(s, -1) {
		if !rfc.MatchString(s[:m[0]]) {
			add(m[0], "%q: a section sign with no document; cite an in-repo file and section (docs/design.md \"How references are written\")", s[m[0]:min(len(s), m[1]+8)])
		}
	}
	for _, m := range banned.FindAllStringIndex(s, -1) {
		add(m[0], `%q names a document outside the repository, or no one file; cite an in-repo file and section (docs/design.md "How references are written")`, strings.TrimSpace(s[m[0]:m[1]]))
	}
	for _, m := range mdRef.FindAllStringSubmatchIndex(s, -1) {
		path, comma := s[m[2]:m[3]], s[m[4]:m[5]]
		if m[0] > 1 && s[m[0]-2:m[0]] == "](" {
			continue // a Markdown link target: checked below, relative to the file
		}
		if m[0] > 0 && s[m[0]-1] == '/' {
			continue // part of a URL
		}
		if strings.HasPrefix(path, "../") || strings.HasPrefix(path, "./") {
			add(m[0], "%s: write paths from the repository root", path)
			continue
		}
		hs, ok := headingsOf(root, path, headings)
		if !ok {
			add(m[0], "%s: no such file in the repository", path)
			continue
		}
		if m[6] < 0 {
			continue
		}
		sec := s[m[6]:m[7]]
		if comma != "" {
			add(m[0], `%s, "%s": write the section right after the path, with no comma`, path, sec)
		}
		if !hasSection(hs, sec) {
			add(m[0], `%s "%s": no such heading in %s`, path, sec, path)
		}
	}
	if strings.HasSuffix(file, ".md") {
		for _, m := range mdLink.FindAllStringSubmatchIndex(s, -1) {
			var target, anchor string
			if m[2] >= 0 {
				target = s[m[2]:m[3]]
			}
			if m[4] >= 0 {
				anchor = s[m[4]:m[5]]
			}
			p := file
			if target != "" {
				p = filepath.ToSlash(filepath.Join(filepath.Dir(file), target))
			}
			hs, ok := headingsOf(root, p, headings)
			if !ok {
				add(m[0], "link to %s: no such file in the repository", p)
				continue
			}
			if anchor != "" && !hasAnchor(hs, anchor) {
				add(m[0], "link to %s#%s: no heading has that anchor", p, anchor)
			}
		}
	}
	return problems
}

// headingsOf returns the headings of the Markdown file at path (from the
// repository root), and whether the file exists.
func headingsOf(root, path string, cache map[string][]string) ([]string, bool) {
	if hs, ok := cache[path]; ok {
		return hs, hs != nil
	}
	src, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(path)))
	if err != nil {
		cache[path] = nil
		return nil, false
	}
	hs := []string{}
	fence := false
	for _, l := range strings.Split(string(src), "\n") {
		if strings.HasPrefix(l, "```") {
			fence = !fence
		}
		if fence || !strings.HasPrefix(l, "#") {
			continue
		}
		h := strings.TrimLeft(l, "#")
		if h == "" || h[0] != ' ' {
			continue
		}
		hs = append(hs, strings.TrimSpace(h))
	}
	cache[path] = hs
	return hs, true
}

// hasSection reports whether section is one of the headings, or the label
// of one (the text before its first colon).
func hasSection(headings []string, section string) bool {
	section = strings.TrimSpace(section)
	for _, h := range headings {
		if h == section {
			return true
		}
		if i := strings.Index(h, ":"); i > 0 && h[:i] == section {
			return true
		}
	}
	return false
}

// hasAnchor reports whether a heading's GitHub anchor is anchor: lower
// case, spaces to dashes, punctuation other than - and _ dropped.
func hasAnchor(headings []string, anchor string) bool {
	for _, h := range headings {
		var b strings.Builder
		for _, r := range strings.ToLower(h) {
			switch {
			case r == ' ':
				b.WriteByte('-')
			case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r):
				b.WriteRune(r)
			}
		}
		if b.String() == anchor {
			return true
		}
	}
	return false
}

func moduleRoot(t *testing.T) string {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}").Output()
	if err != nil {
		t.Fatalf("go list -m: %v", err)
	}
	return strings.TrimSpace(string(out))
}

// repoFiles lists the files git tracks, or, without git, every file under
// root but .git, vendor and testdata directories.
func repoFiles(t *testing.T, root string) []string {
	cmd := exec.Command("git", "ls-files", "-z")
	cmd.Dir = root
	if out, err := cmd.Output(); err == nil {
		var files []string
		for _, f := range strings.Split(string(out), "\x00") {
			if f != "" && !skipped(f) {
				files = append(files, f)
			}
		}
		return files
	}
	var files []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			if d.Name() == ".git" {
				return filepath.SkipDir
			}
			return nil
		}
		if !skipped(rel) {
			files = append(files, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

func skipped(path string) bool {
	for _, dir := range strings.Split(path, "/") {
		if dir == "vendor" || dir == "testdata" {
			return true
		}
	}
	return false
}
