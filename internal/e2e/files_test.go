package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"mime"
	"mime/multipart"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strings"
	"testing"
	"time"

	"github.com/shardnet/shardnet/api"
	"github.com/shardnet/shardnet/chunk"
	"github.com/shardnet/shardnet/internal/testcluster"
)

const mib = 1 << 20

func randomBytes(seed int64, n int) []byte {
	b := make([]byte, n)
	rand.New(rand.NewSource(seed)).Read(b)
	return b
}

func hexSum(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

// filesCluster starts three core nodes and one resource node, and a
// channel of three replicas; it returns the cluster, the channel and the
// index of a node that holds no replica.
func filesCluster(t *testing.T, name string) (*testcluster.Cluster, api.Channel, int) {
	c := testcluster.New(t, testcluster.Options{Core: 3, Resource: 1})
	ch := c.CreateChannel(name, 3)
	placed := map[string]bool{}
	for _, r := range ch.Placement {
		placed[r.NodeID] = true
	}
	outside := -1
	for i, nd := range c.Nodes {
		if !placed[nd.Name] {
			outside = i
		}
	}
	if outside < 0 {
		t.Fatalf("every node holds a replica of %s", name)
	}
	return c, ch, outside
}

func getAll(t *testing.T, cl *api.Client, ch, path string, opts api.GetFileOptions) (*http.Response, []byte) {
	t.Helper()
	resp, err := cl.GetFile(ctxT(t), ch, path, opts)
	if err != nil {
		t.Fatalf("get %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	return resp, b
}

// TestFilesRoundTrip: files of every size around the chunk size go up
// through one node and come back whole through others (a replica and a
// node without one), with Range reads at chunk and block edges, multiple
// ranges, conditional requests, the same content stored once, bad uploads
// refused without a manifest, and listing and deleting.
func TestFilesRoundTrip(t *testing.T) {
	c, _, outside := filesCluster(t, "media")
	ctx := ctxT(t)
	sizes := []int{0, 1, 4*mib - 1, 4 * mib, 4*mib + 1, 20 * mib}
	files := map[string][]byte{}
	for i, size := range sizes {
		data := randomBytes(int64(i), size)
		path := fmt.Sprintf("sizes/f%d.bin", size)
		files[path] = data
		up := c.Client(i % len(c.Nodes))
		res, err := up.PutFile(ctx, "media", path, bytes.NewReader(data), int64(size), api.PutFileOptions{ContentType: "application/octet-stream", SHA256: hexSum(data)})
		if err != nil {
			t.Fatalf("put %d bytes: %v", size, err)
		}
		if res.Size != int64(size) || res.SHA256 != hexSum(data) || res.Chunks != max((size+4*mib-1)/(4*mib), 1) || res.Index == 0 {
			t.Fatalf("put %d bytes answered %+v", size, res)
		}
		for j := range c.Nodes {
			resp, got := getAll(t, c.Client(j), "media", path, api.GetFileOptions{})
			if !bytes.Equal(got, data) {
				t.Fatalf("%d bytes read through %s: %d bytes, sha %s", size, c.Nodes[j].Name, len(got), hexSum(got))
			}
			if resp.Header.Get("Etag") != `"`+hexSum(data)+`"` || resp.Header.Get("Accept-Ranges") != "bytes" ||
				resp.Header.Get("X-Content-Type-Options") != "nosniff" || resp.Header.Get("Content-Security-Policy") == "" {
				t.Fatalf("headers of %s: %v", path, resp.Header)
			}
		}
	}

	// Ranges at the edges of blocks (64 KiB) and chunks (4 MiB), through
	// the node without a replica and through a replica.
	big := files[fmt.Sprintf("sizes/f%d.bin", 20*mib)]
	path := fmt.Sprintf("sizes/f%d.bin", 20*mib)
	for _, node := range []int{outside, (outside + 1) % len(c.Nodes)} {
		for _, r := range [][2]int{{0, 0}, {65535, 65536}, {4*mib - 1, 4 * mib}, {4*mib - 10, 8*mib + 10}, {20*mib - 1, 20*mib - 1}, {3 * 65536, 5*65536 - 1}} {
			resp, got := getAll(t, c.Client(node), "media", path, api.GetFileOptions{Range: fmt.Sprintf("bytes=%d-%d", r[0], r[1])})
			if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(got, big[r[0]:r[1]+1]) {
				t.Fatalf("range %v through %s: status %d, %d bytes", r, c.Nodes[node].Name, resp.StatusCode, len(got))
			}
		}
	}
	// Several ranges: multipart/byteranges.
	resp, body := getAll(t, c.Client(outside), "media", path, api.GetFileOptions{Range: "bytes=10-19,4194300-4194309"})
	mt, params, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if resp.StatusCode != http.StatusPartialContent || mt != "multipart/byteranges" {
		t.Fatalf("two ranges: status %d, type %q", resp.StatusCode, mt)
	}
	mr := multipart.NewReader(bytes.NewReader(body), params["boundary"])
	for _, want := range [][]byte{big[10:20], big[4194300:4194310]} {
		p, err := mr.NextPart()
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(p)
		if !bytes.Equal(got, want) {
			t.Fatalf("a part of a multi-range answer differs")
		}
	}
	// Past the end: 416.
	if _, err := c.Client(0).GetFile(ctx, "media", path, api.GetFileOptions{Range: "bytes=30000000-"}); api.AsError(err) == nil || api.AsError(err).Status != http.StatusRequestedRangeNotSatisfiable {
		t.Fatalf("range past the end: %v", err)
	}
	// If-Range with another version's ETag: the whole file.
	resp, got := getAll(t, c.Client(0), "media", path, api.GetFileOptions{Range: "bytes=0-9", IfRange: `"` + strings.Repeat("0", 64) + `"`})
	if resp.StatusCode != http.StatusOK || len(got) != len(big) {
		t.Fatalf("If-Range of another version: status %d, %d bytes", resp.StatusCode, len(got))
	}
	// If-None-Match with the ETag: 304.
	req, _ := http.NewRequest(http.MethodGet, c.Nodes[0].URL()+"/v1/channels/media/files/"+path, nil)
	req.Header.Set("If-None-Match", `"`+hexSum(big)+`"`)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusNotModified {
		t.Fatalf("If-None-Match: %v, %v", resp, err)
	} else {
		resp.Body.Close()
	}

	// The same content twice is stored once.
	counts := func() []int64 {
		var n []int64
		for _, nd := range c.Nodes {
			n = append(n, nd.Agent().Node.Chunks().Count())
		}
		return n
	}
	before := counts()
	if _, err := c.Client(1).PutFile(ctx, "media", "copy/of-big.bin", bytes.NewReader(big), int64(len(big)), api.PutFileOptions{}); err != nil {
		t.Fatal(err)
	}
	if after := counts(); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Fatalf("chunk counts went from %v to %v for content already stored", before, after)
	}

	// Bad uploads: refused, no manifest.
	wrongSum := strings.Repeat("ab", 32)
	for name, put := range map[string]func() error{
		"dot-dot path": func() error {
			_, err := c.Client(0).PutFile(ctx, "media", "a/../b", strings.NewReader("x"), 1, api.PutFileOptions{})
			return err
		},
		"empty segment": func() error {
			_, err := c.Client(0).PutFile(ctx, "media", "a//b", strings.NewReader("x"), 1, api.PutFileOptions{})
			return err
		},
		"long path": func() error {
			_, err := c.Client(0).PutFile(ctx, "media", strings.Repeat("p", 1025), strings.NewReader("x"), 1, api.PutFileOptions{})
			return err
		},
		"wrong sha256": func() error {
			_, err := c.Client(0).PutFile(ctx, "media", "bad/sum", strings.NewReader("hello"), 5, api.PutFileOptions{SHA256: wrongSum})
			return err
		},
		"wrong md5": func() error {
			req, _ := http.NewRequest(http.MethodPut, c.Nodes[0].URL()+"/v1/channels/media/files/bad/md5", strings.NewReader("hello"))
			req.Header.Set("Content-MD5", "AAAAAAAAAAAAAAAAAAAAAA==")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return err
			}
			resp.Body.Close()
			return &api.Error{Status: resp.StatusCode}
		},
	} {
		err := put()
		if e := api.AsError(err); e == nil || e.Status != http.StatusBadRequest {
			t.Fatalf("%s: %v, want 400", name, err)
		}
	}
	// A body cut short: the client says 10 bytes and sends 5.
	cut := &shortBody{data: []byte("hello")}
	if _, err := c.Client(0).PutFile(ctx, "media", "bad/cut", cut, 10, api.PutFileOptions{}); err == nil {
		t.Fatal("a body cut short was accepted")
	}
	ls, err := c.Client(2).ListFiles(ctx, "media", "bad/", "", 0)
	if err != nil || len(ls.Files) != 0 {
		t.Fatalf("bad uploads left manifests: %+v, %v", ls, err)
	}

	// Conditions.
	small := []byte("version one")
	if _, err := c.Client(0).PutFile(ctx, "media", "cond.txt", bytes.NewReader(small), int64(len(small)), api.PutFileOptions{IfNoneMatch: true, ContentType: "text/plain"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Client(1).PutFile(ctx, "media", "cond.txt", strings.NewReader("v2"), 2, api.PutFileOptions{IfNoneMatch: true}); api.AsError(err) == nil || api.AsError(err).Status != http.StatusPreconditionFailed {
		t.Fatalf("create-only over a file: %v", err)
	}
	if _, err := c.Client(1).PutFile(ctx, "media", "cond.txt", strings.NewReader("v2"), 2, api.PutFileOptions{IfMatch: wrongSum}); api.AsError(err) == nil || api.AsError(err).Status != http.StatusPreconditionFailed {
		t.Fatalf("If-Match another version: %v", err)
	}
	if _, err := c.Client(1).PutFile(ctx, "media", "cond.txt", strings.NewReader("v2"), 2, api.PutFileOptions{IfMatch: hexSum(small)}); err != nil {
		t.Fatalf("If-Match this version: %v", err)
	}
	st, err := c.Client(outside).StatFile(ctx, "media", "cond.txt")
	if err != nil || st.Size != 2 || st.ETag != hexSum([]byte("v2")) {
		t.Fatalf("stat after replace: %+v, %v", st, err)
	}
	// Runnable types are attachments.
	html := []byte("<script>alert(1)</script>")
	if _, err := c.Client(0).PutFile(ctx, "media", "x.html", bytes.NewReader(html), int64(len(html)), api.PutFileOptions{ContentType: "text/html"}); err != nil {
		t.Fatal(err)
	}
	if resp, _ := getAll(t, c.Client(0), "media", "x.html", api.GetFileOptions{}); resp.Header.Get("Content-Disposition") != "attachment" {
		t.Fatalf("text/html served with Content-Disposition %q", resp.Header.Get("Content-Disposition"))
	}

	// Listing, deleting; keys do not list files.
	ls, err = c.Client(outside).ListFiles(ctx, "media", "sizes/", "", 2)
	if err != nil || len(ls.Files) != 2 || !ls.More {
		t.Fatalf("list page: %+v, %v", ls, err)
	}
	if kv, err := c.Client(0).List(ctx, "media", "", "", 0, ""); err != nil || len(kv.Items) != 0 {
		t.Fatalf("KV list shows %+v, %v", kv, err)
	}
	if _, err := c.Client(2).DeleteFile(ctx, "media", "cond.txt", wrongSum); api.AsError(err) == nil || api.AsError(err).Status != http.StatusPreconditionFailed {
		t.Fatalf("delete If-Match another version: %v", err)
	}
	if _, err := c.Client(2).DeleteFile(ctx, "media", "cond.txt", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Client(0).StatFile(ctx, "media", "cond.txt"); api.AsError(err) == nil || api.AsError(err).Status != http.StatusNotFound {
		t.Fatalf("stat after delete: %v", err)
	}

	// Every upload, the refused and cut-off ones too, gave its chunk
	// buffers back to its node's budget (a chunk still travelling to a
	// slow third replica may hold one a moment longer).
	deadline := time.Now().Add(10 * time.Second)
	for i := range c.Nodes {
		for {
			held := testcluster.Metric(t, c.Nodes[i].URL(), "", "shardnet_cluster_upload_buffer_bytes")
			if held == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("node %d holds %v bytes of upload buffers with no upload running", i, held)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// shortBody ends with an error after its data: a client that went away.
type shortBody struct {
	data []byte
	done bool
}

func (b *shortBody) Read(p []byte) (int, error) {
	if b.done {
		return 0, errors.New("client went away")
	}
	b.done = true
	return copy(p, b.data), nil
}

// slowReader hands out data in small pieces, calling at once when half is
// out.
type slowReader struct {
	r    *bytes.Reader
	half int64
	at   func()
	n    int64
}

func (s *slowReader) Read(p []byte) (int, error) {
	if len(p) > 256<<10 {
		p = p[:256<<10]
	}
	n, err := s.r.Read(p)
	prev := s.n
	s.n += int64(n)
	if prev < s.half && s.n >= s.half && s.at != nil {
		s.at()
	}
	return n, err
}

// TestFilesSurviveReplicaLoss: a replica stopped in the middle of an
// upload does not fail it (two of three still hold every chunk); then, on
// a replica missing one chunk file and holding another corrupt, a
// download still returns the right bytes, and that replica gets both
// chunks back from its peers.
func TestFilesSurviveReplicaLoss(t *testing.T) {
	c, ch, _ := filesCluster(t, "vault")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var replicas []int
	for _, r := range ch.Placement {
		replicas = append(replicas, c.Index(r.NodeID))
	}
	entry, victim := replicas[0], replicas[1]
	data := randomBytes(7, 24*mib)
	body := &slowReader{r: bytes.NewReader(data), half: int64(len(data) / 2), at: func() { go c.Stop(victim) }}
	res, err := c.Client(entry).PutFile(ctx, "vault", "big.bin", body, int64(len(data)), api.PutFileOptions{SHA256: hexSum(data)})
	if err != nil {
		t.Fatalf("upload with a replica stopped midway: %v", err)
	}
	if res.Size != int64(len(data)) {
		t.Fatalf("upload answered %+v", res)
	}
	ls, err := c.Client(entry).ListFiles(ctx, "vault", "", "", 0)
	if err != nil || len(ls.Files) != 1 || ls.Files[0].Holders != 2 {
		t.Fatalf("manifest after losing a replica midway: %+v, %v (want 2 holders)", ls, err)
	}
	_, got := getAll(t, c.Client(entry), "vault", "big.bin", api.GetFileOptions{})
	if !bytes.Equal(got, data) {
		t.Fatal("download after the upload differs")
	}

	// Damage the entry node's copy: one chunk gone, another corrupt.
	store := c.Nodes[entry].Agent().Node.Chunks()
	ids := chunkIDs(data)
	if err := store.Delete(ids[1]); err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(store.Dir(), ids[3].String()[:2], ids[3].String())
	raw, err := os.ReadFile(f)
	if err != nil {
		t.Fatal(err)
	}
	raw[100] ^= 0xff
	if err := os.WriteFile(f, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	_, got = getAll(t, c.Client(entry), "vault", "big.bin", api.GetFileOptions{})
	if !bytes.Equal(got, data) {
		t.Fatal("download from a damaged replica differs")
	}
	for _, id := range []chunk.ID{ids[1], ids[3]} {
		if err := store.Verify(id); err != nil {
			t.Fatalf("chunk %s not restored on the damaged replica: %v", id, err)
		}
	}
}

func chunkIDs(data []byte) []chunk.ID {
	var ids []chunk.ID
	for off := 0; off < len(data); off += 4 * mib {
		ids = append(ids, chunk.Sum(data[off:min(off+4*mib, len(data))]))
	}
	return ids
}

// prngReader yields n bytes of a deterministic stream without holding them.
type prngReader struct {
	r    *rand.Rand
	left int64
}

func (p *prngReader) Read(b []byte) (int, error) {
	if p.left == 0 {
		return 0, io.EOF
	}
	if int64(len(b)) > p.left {
		b = b[:p.left]
	}
	n, _ := p.r.Read(b)
	p.left -= int64(n)
	return n, nil
}

// heapPeak samples the Go heap in use until stop is called and returns
// the largest figure seen.
func heapPeak() (stop func() uint64) {
	done := make(chan struct{})
	peak := make(chan uint64, 1)
	go func() {
		var m runtime.MemStats
		var top uint64
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			runtime.ReadMemStats(&m)
			top = max(top, m.HeapInuse)
			select {
			case <-done:
				peak <- top
				return
			case <-t.C:
			}
		}
	}()
	return func() uint64 { close(done); return <-peak }
}

func heapNow() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

// TestFilesLarge: a file of SHARDNET_FILES_MIB MiB (default 256) goes up
// and comes back whole, through streams: the heap of the whole in-process
// cluster (three nodes, the client) stays far below the file's size. It
// logs the throughput and the heap's peak; it asserts no timing.
func TestFilesLarge(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	size := int64(256)
	if v := os.Getenv("SHARDNET_FILES_MIB"); v != "" {
		fmt.Sscan(v, &size)
	}
	size *= mib
	c := testcluster.New(t, testcluster.Options{Core: 3})
	c.CreateChannel("big", 3)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	want := sha256.New()
	if _, err := io.Copy(want, &prngReader{r: rand.New(rand.NewSource(42)), left: size}); err != nil {
		t.Fatal(err)
	}
	sum := hex.EncodeToString(want.Sum(nil))
	// Bulk chunks travel on call streams of their own under per-stream
	// flow control: no heartbeat may be late enough for an election, in
	// the channel's group or the meta group.
	terms := func() string {
		var out []string
		for _, nd := range c.Nodes {
			term, leader, _ := nd.Agent().Node.MetaRaft()
			rep, _ := nd.Agent().Node.Shards().ReplicaByChannel("big")
			info := rep.Info()
			out = append(out, fmt.Sprintf("%s: meta %d/%s, big %d/%s", nd.Name, term, leader, info.Term, info.Leader))
		}
		return strings.Join(out, "; ")
	}
	c.WaitLeader("big")
	before := terms()
	base := heapNow()
	stop := heapPeak()
	start := time.Now()
	res, err := c.Client(1).PutFile(ctx, "big", "large.bin", &prngReader{r: rand.New(rand.NewSource(42)), left: size}, size, api.PutFileOptions{SHA256: sum})
	if err != nil {
		t.Fatal(err)
	}
	up := time.Since(start)
	upPeak := stop()
	if res.SHA256 != sum || res.Size != size {
		t.Fatalf("upload answered %+v", res)
	}
	base2 := heapNow()
	if f := os.Getenv("SHARDNET_FILES_HEAPPROF"); f != "" {
		fh, _ := os.Create(f)
		_ = pprof.WriteHeapProfile(fh)
		fh.Close()
	}
	stop = heapPeak()
	start = time.Now()
	resp, err := c.Client(2).GetFile(ctx, "big", "large.bin", api.GetFileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got := sha256.New()
	n, err := io.Copy(got, resp.Body)
	resp.Body.Close()
	down := time.Since(start)
	downPeak := stop()
	if err != nil || n != size || hex.EncodeToString(got.Sum(nil)) != sum {
		t.Fatalf("download: %d bytes, %v", n, err)
	}
	if after := terms(); after != before {
		t.Fatalf("a leader changed during the transfer:\nbefore %s\nafter  %s", before, after)
	}
	upGrow, downGrow := int64(upPeak)-int64(base), int64(downPeak)-int64(base2)
	t.Logf("%d MiB: upload %.1f MiB/s (heap %d MiB before, peak +%d MiB), download %.1f MiB/s (heap %d MiB before, peak +%d MiB)",
		size/mib, float64(size)/mib/up.Seconds(), base/mib, upGrow/mib, float64(size)/mib/down.Seconds(), base2/mib, downGrow/mib)
	// Pipelines of a few 4 MiB chunks per node, pebble's memtables
	// filling: tens of MiB, never the file.
	if limit := size / 2; size >= 256*mib && (upGrow > limit || downGrow > limit) {
		t.Fatalf("the heap grew by %d / %d MiB for a %d MiB file: something buffers the file", upGrow/mib, downGrow/mib, size/mib)
	}
}

// TestFilesQuota: a channel's quota_bytes counts its files' bytes; an
// upload that would pass it is refused with 507 and the numbers, and
// commits nothing; a delete makes room again.
func TestFilesQuota(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{Core: 1})
	ctx := ctxT(t)
	c.WaitFor(30*time.Second, func() error {
		_, err := c.Client(0).CreateChannel(ctx, api.CreateChannelRequest{Name: "capped", Replicas: 1, QuotaBytes: 10 * mib})
		return err
	})
	c.WaitLeader("capped")
	first := randomBytes(1, 8*mib)
	if _, err := c.Client(0).PutFile(ctx, "capped", "a.bin", bytes.NewReader(first), int64(len(first)), api.PutFileOptions{}); err != nil {
		t.Fatal(err)
	}
	second := randomBytes(2, 4*mib)
	_, err := c.Client(0).PutFile(ctx, "capped", "b.bin", bytes.NewReader(second), int64(len(second)), api.PutFileOptions{})
	e := api.AsError(err)
	if e == nil || e.Status != http.StatusInsufficientStorage || e.Code != api.CodeQuotaExceeded || !strings.Contains(e.Message, fmt.Sprint(10*mib)) {
		t.Fatalf("upload over the quota: %v", err)
	}
	if _, err := c.Client(0).StatFile(ctx, "capped", "b.bin"); api.AsError(err) == nil || api.AsError(err).Status != http.StatusNotFound {
		t.Fatalf("the refused upload left a manifest: %v", err)
	}
	// Keys count against the same quota.
	if _, err := c.Client(0).Put(ctx, "capped", "k", make([]byte, 1<<20), api.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Client(0).Put(ctx, "capped", "k2", make([]byte, 1<<20), api.PutOptions{}); api.AsError(err) == nil || api.AsError(err).Status != http.StatusInsufficientStorage {
		t.Fatalf("a key past the quota the files used: %v", err)
	}
	if _, err := c.Client(0).DeleteFile(ctx, "capped", "a.bin", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Client(0).PutFile(ctx, "capped", "b.bin", bytes.NewReader(second), int64(len(second)), api.PutFileOptions{}); err != nil {
		t.Fatalf("upload after a delete made room: %v", err)
	}
}

// cutReader yields n bytes of data from off, then fails: a connection lost.
type cutReader struct {
	data []byte
	n    int
}

func (c *cutReader) Read(p []byte) (int, error) {
	if c.n == 0 {
		return 0, errors.New("connection lost")
	}
	k := copy(p[:min(len(p), c.n)], c.data)
	c.data, c.n = c.data[k:], c.n-k
	return k, nil
}

// TestFilesResumableUpload: an upload sent in pieces keeps only whole
// chunks; a request cut short leaves the offset at the last chunk stored;
// a request at the wrong offset is refused; the last piece commits the
// file.
func TestFilesResumableUpload(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{Core: 3})
	c.CreateChannel("resume", 3)
	ctx := ctxT(t)
	data := randomBytes(11, 10*mib+5)
	cl := c.Client(1)
	up, err := cl.CreateUpload(ctx, "resume", api.UploadRequest{Path: "r/big.bin", Size: int64(len(data)), ContentType: "application/octet-stream", SHA256: hexSum(data)})
	if err != nil {
		t.Fatal(err)
	}
	// 5 MiB: one whole chunk is kept.
	st, err := cl.AppendUpload(ctx, "resume", up.ID, 0, bytes.NewReader(data[:5*mib]), 5*mib)
	if err != nil || st.Offset != 4*mib || st.File != nil {
		t.Fatalf("first piece: %+v, %v", st, err)
	}
	if _, err := cl.AppendUpload(ctx, "resume", up.ID, 0, bytes.NewReader(data[:10]), 10); api.AsError(err) == nil || api.AsError(err).Status != http.StatusConflict {
		t.Fatalf("a piece at the wrong offset: %v", err)
	}
	// Cut after 5 MiB more: the chunk it completed is kept.
	_, err = cl.AppendUpload(ctx, "resume", up.ID, 4*mib, &cutReader{data: data[4*mib:], n: 5 * mib}, int64(len(data)-4*mib))
	if err == nil {
		t.Fatal("a request cut short succeeded")
	}
	c.WaitFor(10*time.Second, func() error {
		st, err = cl.UploadStatus(ctx, "resume", up.ID)
		if err != nil || st.Offset != 8*mib {
			return fmt.Errorf("status after a cut request: %+v, %v", st, err)
		}
		return nil
	})
	st, err = cl.AppendUpload(ctx, "resume", up.ID, 8*mib, bytes.NewReader(data[8*mib:]), int64(len(data)-8*mib))
	if err != nil || st.File == nil || st.File.Size != int64(len(data)) || st.File.SHA256 != hexSum(data) {
		t.Fatalf("last piece: %+v, %v", st, err)
	}
	_, got := getAll(t, c.Client(2), "resume", "r/big.bin", api.GetFileOptions{})
	if !bytes.Equal(got, data) {
		t.Fatal("the resumed upload reads back different")
	}
	if _, err := cl.UploadStatus(ctx, "resume", up.ID); api.AsError(err) == nil || api.AsError(err).Status != http.StatusNotFound {
		t.Fatalf("a finished upload is still open: %v", err)
	}
}

// TestFilesFrozenReplica: a replica that stops answering without closing
// anything (as under SIGSTOP) costs an upload one grace period, not a call
// timeout per chunk: the two others hold the file.
func TestFilesFrozenReplica(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{Core: 3, Faults: true})
	ch := c.CreateChannel("frozen", 3)
	leader := c.WaitLeader("frozen")
	entry, victim := c.Index(leader), -1
	for _, r := range ch.Placement {
		if i := c.Index(r.NodeID); i != entry {
			victim = i
		}
	}
	data := randomBytes(9, 12*mib)
	c.Freeze(victim)
	defer c.Heal()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Second)
	defer cancel()
	start := time.Now()
	res, err := c.Client(entry).PutFile(ctx, "frozen", "f.bin", bytes.NewReader(data), int64(len(data)), api.PutFileOptions{})
	if err != nil {
		t.Fatalf("upload with a frozen replica: %v", err)
	}
	t.Logf("uploaded %d bytes with a frozen replica in %s", res.Size, time.Since(start).Round(time.Millisecond))
	ls, err := c.Client(entry).ListFiles(ctx, "frozen", "", "", 0)
	if err != nil || len(ls.Files) != 1 || ls.Files[0].Holders != 2 {
		t.Fatalf("manifest: %+v, %v (want 2 holders)", ls, err)
	}
}

// TestFilesChannelWithoutConfiguration: a channel whose replicas never
// recorded their configuration (every configuration entry applied by a
// release without files) gets it recorded by its leader before the first
// manifest, and the upload succeeds.
func TestFilesChannelWithoutConfiguration(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{Core: 3})
	c.CreateChannel("old", 3)
	c.WaitLeader("old")
	for _, nd := range c.Nodes {
		rep, ok := nd.Agent().Node.Shards().ReplicaByChannel("old")
		if !ok {
			t.Fatalf("%s has no replica of old", nd.Name)
		}
		if err := rep.FSM().ForgetConfigurationForTest(); err != nil {
			t.Fatal(err)
		}
	}
	ctx := ctxT(t)
	if _, err := c.Client(0).PutFile(ctx, "old", "a.txt", strings.NewReader("hello"), 5, api.PutFileOptions{}); err != nil {
		t.Fatalf("upload to a channel without a recorded configuration: %v", err)
	}
	c.WaitFor(10*time.Second, func() error {
		for _, nd := range c.Nodes {
			rep, _ := nd.Agent().Node.Shards().ReplicaByChannel("old")
			if conf, ok, err := rep.FSM().Configuration(); err != nil || !ok || len(conf.Voters) != 3 {
				return fmt.Errorf("%s: configuration %+v, %v, %v", nd.Name, conf, ok, err)
			}
		}
		return nil
	})
}

// TestFilesAntiEntropy: a replica missing one chunk and holding another
// corrupt gets both back from its peers in an anti-entropy round, without
// any read.
func TestFilesAntiEntropy(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{Core: 3})
	c.CreateChannel("heal", 3)
	ctx := ctxT(t)
	data := randomBytes(5, 9*mib)
	if _, err := c.Client(0).PutFile(ctx, "heal", "x.bin", bytes.NewReader(data), int64(len(data)), api.PutFileOptions{}); err != nil {
		t.Fatal(err)
	}
	node := c.Nodes[2].Agent().Node
	c.WaitFor(10*time.Second, func() error {
		rep, ok := node.Shards().ReplicaByChannel("heal")
		if !ok {
			return errors.New("no replica of heal on core3")
		}
		if _, found, err := rep.FSM().File("x.bin"); !found || err != nil {
			return fmt.Errorf("core3 has not applied the manifest: %v", err)
		}
		return nil
	})
	store := node.Chunks()
	ids := chunkIDs(data)
	// Lost behind the store's back (the store would refuse to delete it:
	// the replica leases the chunks an upload sent it for a while).
	if err := os.Remove(filepath.Join(store.Dir(), ids[0].String()[:2], ids[0].String())); err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(store.Dir(), ids[2].String()[:2], ids[2].String())
	raw, err := os.ReadFile(f)
	if err != nil {
		t.Fatal(err)
	}
	raw[0] ^= 1
	if err := os.WriteFile(f, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	st, err := node.ScrubChunks(ctx)
	if err != nil || st.Checked != 3 || st.Missing != 1 || st.Corrupt != 1 || st.Restored != 2 || st.Failed != 0 {
		t.Fatalf("anti-entropy round: %+v, %v", st, err)
	}
	for _, id := range ids {
		if err := store.Verify(id); err != nil {
			t.Fatalf("chunk %s after the round: %v", id, err)
		}
	}
	if st, err := node.ScrubChunks(ctx); err != nil || st.Missing+st.Corrupt != 0 || st.Checked != 3 {
		t.Fatalf("second round: %+v, %v", st, err)
	}
}
