package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"mime"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/shardnet/shardnet/api"
)

var fileCommands = map[string]command{
	"put":  {"upload a file to a channel", runFilePut},
	"get":  {"download a file (-o FILE resumes a partial download)", runFileGet},
	"ls":   {"list a channel's files by prefix", runFileList},
	"rm":   {"delete a file", runFileRm},
	"stat": {"describe a file", runFileStat},
}

// runFile: shardnet file put|get|ls|rm|stat
func runFile(ctx context.Context, c *cli, args []string) int {
	return subcommands(ctx, c, "file", fileCommands, args)
}

func runFilePut(ctx context.Context, c *cli, args []string) int {
	f := c.newFlags("file put", "CHANNEL PATH FILE|-",
		"Upload FILE (or stdin) as PATH of CHANNEL. The file is hashed first so the node\n"+
			"checks its sha256; stdin is sent as it comes. It prints the answer.").withJSON()
	var ctype string
	var create bool
	var ifMatch string
	f.StringVar(&ctype, "type", "", "Content-Type (default: from the file's extension)")
	f.BoolVar(&create, "create", false, "only if PATH holds no file (If-None-Match: *)")
	f.StringVar(&ifMatch, "if-match", "", "only if PATH's current version has this `ETAG` (sha256)")
	pos, code, ok := f.parse(args, 3, 3)
	if !ok {
		return code
	}
	opts := api.PutFileOptions{ContentType: ctype, IfNoneMatch: create, IfMatch: ifMatch}
	var body io.Reader
	size := int64(-1)
	if pos[2] == "-" {
		body = c.stdin
	} else {
		fh, err := os.Open(pos[2])
		if err != nil {
			return c.fail(err)
		}
		defer fh.Close()
		st, err := fh.Stat()
		if err != nil {
			return c.fail(err)
		}
		h := sha256.New()
		if _, err := io.Copy(h, fh); err != nil {
			return c.fail(err)
		}
		if _, err := fh.Seek(0, io.SeekStart); err != nil {
			return c.fail(err)
		}
		opts.SHA256 = hex.EncodeToString(h.Sum(nil))
		size = st.Size()
		body = fh
		if opts.ContentType == "" {
			opts.ContentType = mime.TypeByExtension(filepath.Ext(pos[2]))
		}
	}
	p := newProgress(c.stderr, "put", size)
	defer p.done()
	res, err := f.client().PutFile(ctx, pos[0], pos[1], &countingReader{r: body, p: p}, size, opts)
	if err != nil {
		return c.fail(err)
	}
	p.done()
	if f.json {
		return c.printJSON(res)
	}
	fmt.Fprintf(c.stdout, "%s: %d bytes, %d chunks, sha256 %s, index %d\n", res.Path, res.Size, res.Chunks, res.SHA256, res.Index)
	return 0
}

func runFileGet(ctx context.Context, c *cli, args []string) int {
	f := c.newFlags("file get", "CHANNEL PATH",
		"Write the file to stdout, or to -o FILE. A FILE already there (a download cut\n"+
			"short) is continued from its length with a Range request, if the file did\n"+
			"not change meanwhile (If-Range).")
	var out, consistency string
	f.StringVar(&out, "o", "", "write to this `FILE`, continuing a partial one")
	f.StringVar(&consistency, "consistency", "", "linearizable (default) or stale")
	pos, code, ok := f.parse(args, 2, 2)
	if !ok {
		return code
	}
	client := f.client()
	opts := api.GetFileOptions{Consistency: api.Consistency(consistency)}
	w := c.stdout
	var have int64
	var fh *os.File
	if out != "" {
		var err error
		if fh, err = os.OpenFile(out, os.O_WRONLY|os.O_CREATE, 0o644); err != nil {
			return c.fail(err)
		}
		defer fh.Close()
		if have, err = fh.Seek(0, io.SeekEnd); err != nil {
			return c.fail(err)
		}
		w = fh
		if have > 0 {
			st, err := client.StatFile(ctx, pos[0], pos[1])
			if err != nil {
				return c.fail(err)
			}
			switch {
			case have == st.Size:
				fmt.Fprintf(c.stderr, "%s is complete (%d bytes)\n", out, have)
				return 0
			case have < st.Size:
				opts.Range = "bytes=" + strconv.FormatInt(have, 10) + "-"
				opts.IfRange = `"` + st.ETag + `"`
			default:
				have = 0 // longer than the file: start again
			}
		}
	}
	resp, err := client.GetFile(ctx, pos[0], pos[1], opts)
	if err != nil {
		return c.fail(err)
	}
	defer resp.Body.Close()
	if fh != nil && resp.StatusCode != http.StatusPartialContent {
		// The whole file came (it changed since the partial copy, or
		// nothing was there): start the output again.
		have = 0
		if err := fh.Truncate(0); err != nil {
			return c.fail(err)
		}
		if _, err := fh.Seek(0, io.SeekStart); err != nil {
			return c.fail(err)
		}
	}
	total := int64(-1)
	if resp.ContentLength >= 0 {
		total = have + resp.ContentLength
	}
	p := newProgress(c.stderr, "get", total)
	p.add(have)
	defer p.done()
	if _, err := io.Copy(w, &countingReader{r: resp.Body, p: p}); err != nil {
		return c.fail(fmt.Errorf("download cut short (run again with -o to continue): %w", err))
	}
	return 0
}

func runFileList(ctx context.Context, c *cli, args []string) int {
	f := c.newFlags("file ls", "CHANNEL", "List the channel's files, by path.").withJSON()
	var prefix, after string
	var limit int
	f.StringVar(&prefix, "prefix", "", "only paths that start with `P`")
	f.StringVar(&after, "after", "", "only paths after `PATH`")
	f.IntVar(&limit, "limit", 0, "at most `N` files (0: all)")
	pos, code, ok := f.parse(args, 1, 1)
	if !ok {
		return code
	}
	client := f.client()
	var all []api.FileInfo
	for {
		page := 1000
		if limit > 0 {
			page = min(page, limit-len(all))
		}
		l, err := client.ListFiles(ctx, pos[0], prefix, after, page)
		if err != nil {
			return c.fail(err)
		}
		all = append(all, l.Files...)
		if !l.More || len(l.Files) == 0 || (limit > 0 && len(all) >= limit) {
			break
		}
		after = l.Files[len(l.Files)-1].Path
	}
	if f.json {
		return c.printJSON(all)
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PATH\tSIZE\tTYPE\tSHA256\tINDEX")
	for _, fi := range all {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%d\n", fi.Path, fi.Size, fi.ContentType, fi.SHA256, fi.ModifyIndex)
	}
	return errCode(c, tw.Flush())
}

func runFileRm(ctx context.Context, c *cli, args []string) int {
	f := c.newFlags("file rm", "CHANNEL PATH", "Delete a file. It prints the index of the delete.")
	var ifMatch string
	f.StringVar(&ifMatch, "if-match", "", "only if the file's current version has this `ETAG` (sha256)")
	pos, code, ok := f.parse(args, 2, 2)
	if !ok {
		return code
	}
	idx, err := f.client().DeleteFile(ctx, pos[0], pos[1], ifMatch)
	if err != nil {
		return c.fail(err)
	}
	fmt.Fprintln(c.stdout, idx)
	return 0
}

func runFileStat(ctx context.Context, c *cli, args []string) int {
	f := c.newFlags("file stat", "CHANNEL PATH", "Describe a file: size, type, sha256 (its ETag), index.").withJSON()
	pos, code, ok := f.parse(args, 2, 2)
	if !ok {
		return code
	}
	st, err := f.client().StatFile(ctx, pos[0], pos[1])
	if err != nil {
		return c.fail(err)
	}
	if f.json {
		return c.printJSON(st)
	}
	fmt.Fprintf(c.stdout, "size %d\ntype %s\nsha256 %s\nindex %d\n", st.Size, st.ContentType, st.ETag, st.Index)
	return 0
}

func errCode(c *cli, err error) int {
	if err != nil {
		return c.fail(err)
	}
	return 0
}

// progress prints a transfer's bytes, rate and ETA on one stderr line,
// rewritten at most every 200 ms, from the first second on: a quick
// transfer prints nothing.
type progress struct {
	w     io.Writer
	verb  string
	total int64 // -1: unknown
	start time.Time

	mu      sync.Mutex
	n       int64
	last    time.Time
	printed bool
	ended   bool
}

func newProgress(w io.Writer, verb string, total int64) *progress {
	now := time.Now()
	return &progress{w: w, verb: verb, total: total, start: now, last: now}
}

func (p *progress) add(n int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.n += n
	now := time.Now()
	if now.Sub(p.start) < time.Second || now.Sub(p.last) < 200*time.Millisecond || p.ended {
		return
	}
	p.last = now
	p.print(now)
}

func (p *progress) print(now time.Time) {
	secs := now.Sub(p.start).Seconds()
	rate := float64(p.n) / max(secs, 0.001)
	line := fmt.Sprintf("\r%s %s", p.verb, human(p.n))
	if p.total >= 0 {
		line += " of " + human(p.total)
		if rate > 0 && p.total > p.n {
			line += fmt.Sprintf(", ETA %s", time.Duration(float64(p.total-p.n)/rate*float64(time.Second)).Round(time.Second))
		}
	}
	line += fmt.Sprintf(", %s/s   ", human(int64(rate)))
	fmt.Fprint(p.w, line)
	p.printed = true
}

// done ends the line if one was printed.
func (p *progress) done() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ended {
		return
	}
	p.ended = true
	if p.printed {
		p.print(time.Now())
		fmt.Fprintln(p.w)
	}
}

func human(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// countingReader reports what passes through it to a progress line.
type countingReader struct {
	r io.Reader
	p *progress
}

func (c *countingReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.p.add(int64(n))
	return n, err
}
