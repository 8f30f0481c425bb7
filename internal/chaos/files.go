package chaos

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/shardnet/shardnet/api"
)

// Files: the model of model.go checks a channel's file manifests too
// (issue "Files in channels"). A path is a key and a version of a file is
// a value: every upload's bytes begin with a name unique in the history
// ("f<client>-<seq>\n"), so the file's sha256, its ETag, names one upload.
// The operations map onto the model's:
//
//   - PUT, unconditional: OpPut. With If-None-Match: * or If-Match: an
//     ETag the client saw: OpPutIf (412 precondition_failed is its
//     StatusFailed, decided in the channel's log like a CAS).
//   - DELETE, with or without If-Match: OpDelete (404 file_not_found and
//     412 are decided in the log and carry the entry's index).
//   - GET and HEAD (stat): OpGet, the value named by the ETag and the
//     modify index from X-Shardnet-Index. A GET also checks its bytes:
//     they must hash to the ETag and begin with the name of the upload
//     that ETag belongs to (Recorder.Problem otherwise), whatever the
//     order of operations.
//
// A HEAD answer has no body, so a 404 does not say whether the file or the
// channel was missing: a stat that fails is dropped (it tells nothing),
// and absence is observed through GETs and deletes.

// ETags maps the ETag (sha256 in hex) of every upload's content to its
// name; a client registers an upload before it sends it. Safe for
// concurrent use.
type ETags struct {
	mu    sync.Mutex
	names map[string]string
}

// NewETags returns an empty registry.
func NewETags() *ETags { return &ETags{names: map[string]string{}} }

func (e *ETags) add(etag, name string) {
	e.mu.Lock()
	e.names[etag] = name
	e.mu.Unlock()
}

// Name is the name of the upload whose content has etag; an ETag no
// client uploaded gets a name no write wrote, which Check reports.
func (e *ETags) Name(etag string) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	if n, ok := e.names[etag]; ok {
		return n
	}
	return "etag:" + etag
}

// fileSeen is a version of a file as a client last saw it.
type fileSeen struct{ name, etag string }

// FileClient is one logical client of the file workload: one operation at
// a time on the files of a channel, through any node, each recorded in the
// history.
type FileClient struct {
	ID      int
	Channel string
	Nodes   []*api.Client
	Rec     *Recorder
	Stats   *Stats
	ETags   *ETags

	// StaleReads is a deliberate bug, for tests that the checker catches
	// one: stats and gets are sent with consistency=stale but recorded as
	// linearizable.
	StaleReads bool

	rng  *rand.Rand
	proc int
	seq  int
	last map[string]fileSeen // path → the version last seen; absent: not there or not known
}

// NewFileClient returns client id of channel's files, recording into rec;
// seed makes the sizes and contents of its uploads.
func NewFileClient(id int, channel string, nodes []*api.Client, rec *Recorder, stats *Stats, etags *ETags, seed uint64) *FileClient {
	return &FileClient{ID: id, Channel: channel, Nodes: nodes, Rec: rec, Stats: stats, ETags: etags,
		rng: rand.New(rand.NewPCG(seed, uint64(id))), proc: rec.NewProcess(), last: map[string]fileSeen{}}
}

// content makes the bytes of the next upload, and its name and ETag:
// mostly up to 64 KiB (one chunk), one in twenty just over one 4 MiB
// chunk, so that manifests of two chunks are checked as well.
func (c *FileClient) content() (name string, body []byte, etag string) {
	c.seq++
	name = fmt.Sprintf("f%d-%d", c.ID, c.seq)
	size := c.rng.IntN(64 << 10)
	if c.rng.IntN(20) == 0 {
		size = 4<<20 + c.rng.IntN(64<<10)
	}
	body = make([]byte, len(name)+1+size)
	copy(body, name+"\n")
	// The name makes the content unique; the rest is random only so
	// that no two uploads share a chunk (equal chunks are stored once).
	var seed [32]byte
	for i := range seed {
		seed[i] = byte(c.rng.Uint32())
	}
	_, _ = rand.NewChaCha8(seed).Read(body[len(name)+1:])
	sum := sha256.Sum256(body)
	etag = hex.EncodeToString(sum[:])
	c.ETags.add(etag, name)
	return name, body, etag
}

// PutMode is an upload's condition.
type PutMode uint8

// Upload conditions.
const (
	PutPlain   PutMode = iota // no condition
	PutCreate                 // If-None-Match: *
	PutReplace                // If-Match: the version this client last saw (If-None-Match: * if it saw none)
)

// Put uploads a fresh version of path through node.
func (c *FileClient) Put(ctx context.Context, node int, path string, mode PutMode) Status {
	name, body, etag := c.content()
	in := Input{Kind: OpPut, Key: path, Value: name}
	opts := api.PutFileOptions{SHA256: etag, ContentType: "application/octet-stream"}
	switch seen, ok := c.last[path]; {
	case mode == PutReplace && ok:
		in.Kind, in.Expect = OpPutIf, seen.name
		opts.IfMatch = seen.etag
	case mode != PutPlain:
		in.Kind, in.ExpectAbsent = OpPutIf, true
		opts.IfNoneMatch = true
	}
	call := c.Rec.Now()
	res, err := c.Nodes[node].PutFile(ctx, c.Channel, path, bytes.NewReader(body), int64(len(body)), opts)
	ret := c.Rec.Now()
	out := Output{}
	switch {
	case err == nil:
		out.Status, out.Index = StatusOK, res.Index
		if res.SHA256 != etag {
			c.Rec.Problem(fmt.Sprintf("the upload of %s as %s answered sha256 %s, its content's is %s", name, path, res.SHA256, etag))
		}
		c.last[path] = fileSeen{name, etag}
	case in.Kind == OpPutIf && isCode(err, api.CodePreconditionFailed):
		out.Status = StatusFailed
	}
	return c.finish(node, in, out, err, call, ret)
}

// Delete deletes path through node; with ifMatch, only the version this
// client last saw (unconditionally if it saw none).
func (c *FileClient) Delete(ctx context.Context, node int, path string, ifMatch bool) Status {
	in := Input{Kind: OpDelete, Key: path}
	var match string
	if seen, ok := c.last[path]; ok && ifMatch {
		in.Expect, match = seen.name, seen.etag
	}
	call := c.Rec.Now()
	index, err := c.Nodes[node].DeleteFile(ctx, c.Channel, path, match)
	ret := c.Rec.Now()
	out := Output{Index: index}
	switch {
	case err == nil:
		out.Status = StatusOK
		delete(c.last, path)
	case isCode(err, api.CodeFileNotFound):
		out.Status, out.Index = StatusFailed, api.AsError(err).Index
		delete(c.last, path)
	case in.Expect != "" && isCode(err, api.CodePreconditionFailed):
		out.Status, out.Index, out.Precondition = StatusFailed, api.AsError(err).Index, true
	}
	return c.finish(node, in, out, err, call, ret)
}

// finish records a write whose definite outcome (OK or Failed) out holds;
// otherwise err says whether it may have been applied (mayBeApplied).
func (c *FileClient) finish(node int, in Input, out Output, err error, call, ret int64) Status {
	var why string
	if err != nil && out.Status == StatusOK { // no definite outcome
		c.Rec.Attempt(true, call, ret, false)
		var applied bool
		applied, why = mayBeApplied(err)
		if !applied {
			c.Stats.count(in.Kind, "refused", err)
			if in.Value != "" {
				c.Rec.Refused(in.Value, why)
			}
			return StatusFailed
		}
		out.Status = StatusUnknown
	} else {
		c.Rec.Attempt(true, call, ret, true)
	}
	c.Stats.count(in.Kind, out.Status.String(), err)
	meta := fmt.Sprintf("node %d", node)
	if why != "" {
		meta += ": " + why
	}
	c.Rec.Add(c.proc, in, out, call, ret, meta)
	if out.Status == StatusUnknown {
		c.proc = c.Rec.NewProcess() // as Client.finishWrite
	}
	return out.Status
}

// Get downloads path through node at level ("" linearizable) and checks
// its bytes against its ETag.
func (c *FileClient) Get(ctx context.Context, node int, path string, level api.Consistency) Status {
	sent := level
	if c.StaleReads {
		sent = api.Stale
	}
	call := c.Rec.Now()
	resp, err := c.Nodes[node].GetFile(ctx, c.Channel, path, api.GetFileOptions{Consistency: sent})
	var body []byte
	if err == nil {
		body, err = io.ReadAll(io.LimitReader(resp.Body, 8<<20))
		resp.Body.Close()
	}
	ret := c.Rec.Now()
	var out Output
	switch {
	case err == nil:
		etag := strings.Trim(resp.Header.Get("Etag"), `"`)
		index, _ := strconv.ParseUint(resp.Header.Get(api.HeaderIndex), 10, 64)
		name := c.ETags.Name(etag)
		sum := sha256.Sum256(body)
		if got := hex.EncodeToString(sum[:]); got != etag {
			c.Rec.Problem(fmt.Sprintf("a get of %s through node %d returned %d bytes hashing to %s under the ETag %s (%s)", path, node, len(body), got, etag, name))
		} else if first, _, _ := bytes.Cut(body, []byte("\n")); string(first) != name {
			c.Rec.Problem(fmt.Sprintf("a get of %s through node %d returned the content of %q under the ETag of %s", path, node, first, name))
		}
		out = Output{Status: StatusOK, Found: true, Value: name, Index: index}
		c.last[path] = fileSeen{name, etag}
	case isCode(err, api.CodeFileNotFound):
		out = Output{Status: StatusOK}
		delete(c.last, path)
	default:
		return c.dropRead(err, call, ret)
	}
	return c.addRead(node, path, level, "get", out, call, ret)
}

// Stat reads path's ETag and modify index through node (HEAD) at level.
func (c *FileClient) Stat(ctx context.Context, node int, path string, level api.Consistency) Status {
	sent := level
	if c.StaleReads {
		sent = api.Stale
	}
	call := c.Rec.Now()
	st, err := c.Nodes[node].StatFileAt(ctx, c.Channel, path, sent)
	ret := c.Rec.Now()
	if err != nil {
		return c.dropRead(err, call, ret) // a HEAD's 404 does not say what is missing
	}
	name := c.ETags.Name(st.ETag)
	c.last[path] = fileSeen{name, st.ETag}
	return c.addRead(node, path, level, "stat", Output{Status: StatusOK, Found: true, Value: name, Index: st.Index}, call, ret)
}

func (c *FileClient) dropRead(err error, call, ret int64) Status {
	c.Stats.count(OpGet, "dropped", err)
	c.Rec.Attempt(false, call, ret, false)
	return StatusUnknown
}

func (c *FileClient) addRead(node int, path string, level api.Consistency, how string, out Output, call, ret int64) Status {
	c.Rec.Attempt(false, call, ret, true)
	c.Stats.count(OpGet, "ok", nil)
	c.Rec.Add(c.proc, Input{Kind: OpGet, Key: path}, out, call, ret,
		fmt.Sprintf("%s, node %d %s", how, node, orDefault(string(level), "linearizable")))
	return StatusOK
}

// FileWorkload runs Clients concurrent file clients on Paths of Channel
// until its context ends.
type FileWorkload struct {
	Channel string
	Paths   []string
	Clients int
	Nodes   []*api.Client
	Rec     *Recorder
	Stats   *Stats
	ETags   *ETags
	Seed    uint64
	// OpTimeout bounds each operation (an upload that hits it has an
	// unknown outcome). Default 10 s: a two-chunk upload crosses a slowed
	// disk three times.
	OpTimeout time.Duration
	// Think is the most a client pauses between operations (uniform).
	Think time.Duration
}

// Run drives the clients until ctx ends and the operations in flight
// finish.
func (w *FileWorkload) Run(ctx context.Context) {
	if w.OpTimeout == 0 {
		w.OpTimeout = 10 * time.Second
	}
	var wg sync.WaitGroup
	for i := range w.Clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.client(ctx, i)
		}()
	}
	wg.Wait()
}

func (w *FileWorkload) client(ctx context.Context, id int) {
	rng := rand.New(rand.NewPCG(w.Seed, uint64(id)))
	c := NewFileClient(id, w.Channel, w.Nodes, w.Rec, w.Stats, w.ETags, w.Seed^0x66696c6573)
	for ctx.Err() == nil {
		path := w.Paths[rng.IntN(len(w.Paths))]
		node := rng.IntN(len(w.Nodes))
		octx, cancel := context.WithTimeout(context.Background(), w.OpTimeout)
		switch p := rng.IntN(100); {
		case p < 25:
			c.Get(octx, node, path, "")
		case p < 35:
			c.Stat(octx, node, path, "")
		case p < 58:
			c.Put(octx, node, path, PutPlain)
		case p < 70:
			c.Put(octx, node, path, PutCreate)
		case p < 85:
			c.Put(octx, node, path, PutReplace)
		case p < 93:
			c.Delete(octx, node, path, false)
		default:
			c.Delete(octx, node, path, true)
		}
		cancel()
		if w.Think > 0 {
			select {
			case <-ctx.Done():
			case <-time.After(time.Duration(rng.Int64N(int64(w.Think)))):
			}
		}
	}
}

// RecordFinalFiles adds the final state of paths, read with one
// linearizable listing through cl after the workload stopped, to the
// history as one get per path (as RecordFinalReads does for keys).
func RecordFinalFiles(ctx context.Context, rec *Recorder, cl *api.Client, channel string, paths []string, etags *ETags) error {
	proc := rec.NewProcess()
	call := rec.Now()
	l, err := cl.ListFiles(ctx, channel, "", "", 1000)
	ret := rec.Now()
	if err != nil {
		return fmt.Errorf("list files of %s via %s: %w", channel, cl.Addr(), err)
	}
	byPath := map[string]api.FileInfo{}
	for _, f := range l.Files {
		byPath[f.Path] = f
	}
	for _, p := range paths {
		out := Output{Status: StatusOK}
		if f, ok := byPath[p]; ok {
			out.Found, out.Value, out.Index = true, etags.Name(f.SHA256), f.ModifyIndex
		}
		rec.Add(proc, Input{Kind: OpGet, Key: p}, out, call, ret, "final linearizable file listing")
	}
	return nil
}

// ConvergeFiles waits (up to timeout) until every node's replica lists the
// same manifests as a linearizable listing, then downloads every file
// through every node and checks its bytes against its sha256: after the
// faults, each manifest's chunks must still be served whole (from a
// majority of the replicas, or fetched from them).
func ConvergeFiles(clients []*api.Client, channel string, timeout time.Duration) (api.FileList, error) {
	deadline := time.Now().Add(timeout)
	var want api.FileList
	var lastErr error
	for {
		var err error
		if want, err = convergeFilesOnce(clients, channel); err == nil {
			break
		}
		lastErr = err
		if time.Now().After(deadline) {
			return want, fmt.Errorf("file manifests did not converge within %v: %w", timeout, lastErr)
		}
		time.Sleep(100 * time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for i, cl := range clients {
		for _, f := range want.Files {
			resp, err := cl.GetFile(ctx, channel, f.Path, api.GetFileOptions{Consistency: api.Stale})
			if err != nil {
				return want, fmt.Errorf("node %d: get %s: %w", i, f.Path, err)
			}
			h := sha256.New()
			n, err := io.Copy(h, resp.Body)
			resp.Body.Close()
			if err != nil {
				return want, fmt.Errorf("node %d: get %s after %d bytes: %w", i, f.Path, n, err)
			}
			if got := hex.EncodeToString(h.Sum(nil)); got != f.SHA256 || uint64(n) != f.Size {
				return want, fmt.Errorf("node %d: %s is %d bytes with sha256 %s, its manifest says %d bytes, %s", i, f.Path, n, got, f.Size, f.SHA256)
			}
		}
	}
	return want, nil
}

func convergeFilesOnce(clients []*api.Client, channel string) (api.FileList, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var want api.FileList
	var err error
	for _, cl := range clients { // any node: it forwards to the leader
		if want, err = cl.ListFiles(ctx, channel, "", "", 1000); err == nil {
			break
		}
	}
	if err != nil {
		return want, fmt.Errorf("linearizable listing: %w", err)
	}
	for i, cl := range clients {
		got, err := cl.ListFilesAt(ctx, channel, "", "", 1000, api.Stale)
		if err != nil {
			return want, fmt.Errorf("node %d: %w", i, err)
		}
		if d := diffFiles(want.Files, got.Files); d != "" {
			return want, fmt.Errorf("node %d lists other manifests than the leader: %s", i, d)
		}
	}
	return want, nil
}

// diffFiles describes the first difference between two listings ("" if
// none): path, sha256 and modify index.
func diffFiles(a, b []api.FileInfo) string {
	if len(a) != len(b) {
		return fmt.Sprintf("%d files against %d", len(a), len(b))
	}
	for i := range a {
		if a[i].Path != b[i].Path || a[i].SHA256 != b[i].SHA256 || a[i].ModifyIndex != b[i].ModifyIndex {
			return fmt.Sprintf("%s %.12s@%d against %s %.12s@%d", a[i].Path, a[i].SHA256, a[i].ModifyIndex, b[i].Path, b[i].SHA256, b[i].ModifyIndex)
		}
	}
	return ""
}
