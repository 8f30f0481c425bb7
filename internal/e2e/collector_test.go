package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/shardnet/shardnet/api"
	"github.com/shardnet/shardnet/chunk"
	"github.com/shardnet/shardnet/cluster"
	"github.com/shardnet/shardnet/internal/testcluster"
)

// gcGrace is the collector's grace period in these tests; rounds are run
// by the tests (the nodes' own every hour only).
const gcGrace = 2 * time.Second

// pacedReader hands out data at rate bytes per second, calling at (if
// set) once half is out.
type pacedReader struct {
	r    *bytes.Reader
	rate int
	at   func()
	n    int
}

func (p *pacedReader) Read(b []byte) (int, error) {
	if len(b) > 256<<10 {
		b = b[:256<<10]
	}
	n, err := p.r.Read(b)
	time.Sleep(time.Duration(n) * time.Second / time.Duration(p.rate)) // a slow client
	prev := p.n
	p.n += n
	if half := int(p.r.Size() / 2); prev < half && p.n >= half && p.at != nil {
		p.at()
	}
	return n, err
}

// collectAll runs a collection round on every running node of idx.
func collectAll(t *testing.T, c *testcluster.Cluster, idx ...int) {
	t.Helper()
	for _, i := range idx {
		if _, err := c.Nodes[i].Agent().Node.CollectChunks(ctxT(t)); err != nil {
			t.Fatalf("collection on %s: %v", c.Nodes[i].Name, err)
		}
	}
}

// holding returns the nodes of idx whose store holds id.
func holding(c *testcluster.Cluster, id chunk.ID, idx ...int) []string {
	var hs []string
	for _, i := range idx {
		if c.Nodes[i].Agent().Node.Chunks().Has(id) {
			hs = append(hs, c.Nodes[i].Name)
		}
	}
	return hs
}

// TestFilesCollector: a deleted file's chunks are collected on every
// replica once the grace period passed, not before; a chunk another file
// (in the same channel or another) references stays; the chunks of an
// upload still sending, older than the grace period, stay on every
// replica; a node cut off from the other two collects nothing.
func TestFilesCollector(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{Core: 3, ChunkGCInterval: time.Hour, ChunkGCGrace: gcGrace})
	c.CreateChannel("one", 3)
	c.CreateChannel("two", 3)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	all := []int{0, 1, 2}
	put := func(ch, path string, data []byte) {
		t.Helper()
		if _, err := c.Client(0).PutFile(ctx, ch, path, bytes.NewReader(data), int64(len(data)), api.PutFileOptions{}); err != nil {
			t.Fatalf("put %s/%s: %v", ch, path, err)
		}
	}
	a := randomBytes(11, 12*mib) // chunks a0 a1 a2
	b := append(append([]byte{}, a[:4*mib]...), randomBytes(12, 4*mib)...)
	aIDs, bIDs := chunkIDs(a), chunkIDs(b)
	put("one", "a.bin", a)
	put("one", "b.bin", b)         // shares a0
	put("two", "c.bin", a[8*mib:]) // a2, in another channel
	if _, err := c.Client(0).DeleteFile(ctx, "one", "a.bin", ""); err != nil {
		t.Fatal(err)
	}

	// Within the grace period nothing goes.
	collectAll(t, c, all...)
	if hs := holding(c, aIDs[1], all...); len(hs) != 3 {
		t.Fatalf("a chunk of the deleted file went within the grace period: held by %v", hs)
	}

	// An upload that lasts longer than the grace period, with a chunk in
	// less (a replica leases an upload's chunks while they keep coming),
	// while rounds run on every node.
	p := randomBytes(13, 16*mib)
	done := make(chan error, 1)
	go func() {
		_, err := c.Client(0).PutFile(ctx, "one", "p.bin", &pacedReader{r: bytes.NewReader(p), rate: 3 * mib}, int64(len(p)), api.PutFileOptions{})
		done <- err
	}()
	start := time.Now()
	var uploadErr error
rounds:
	for {
		collectAll(t, c, all...)
		select {
		case uploadErr = <-done:
			break rounds
		case <-time.After(200 * time.Millisecond):
		}
	}
	if uploadErr != nil {
		t.Fatalf("paced upload: %v", uploadErr)
	}
	if d := time.Since(start); d < 2*gcGrace {
		t.Fatalf("the paced upload took %v, not longer than the grace period: the test proves nothing", d)
	}
	for _, id := range chunkIDs(p) {
		if hs := holding(c, id, all...); len(hs) != 3 {
			t.Fatalf("a chunk of the upload that was in progress is held by %v only", hs)
		}
	}
	// The deleted file's own chunk is gone everywhere; the shared ones stay.
	c.WaitFor(20*time.Second, func() error {
		collectAll(t, c, all...)
		if hs := holding(c, aIDs[1], all...); len(hs) > 0 {
			return fmt.Errorf("the deleted file's chunk is still on %v", hs)
		}
		return nil
	})
	for _, id := range []chunk.ID{aIDs[0], aIDs[2], bIDs[1]} {
		if hs := holding(c, id, all...); len(hs) != 3 {
			t.Fatalf("chunk %s, still referenced, is held by %v only", id, hs)
		}
	}
	if _, got := getAll(t, c.Client(1), "two", "c.bin", api.GetFileOptions{}); !bytes.Equal(got, a[8*mib:]) {
		t.Fatal("c.bin differs after collection")
	}

	// Cut off: core1 alone may not collect b.bin's chunks, however old.
	if _, err := c.Client(0).DeleteFile(ctx, "one", "b.bin", ""); err != nil {
		t.Fatal(err)
	}
	deleted := time.Now()
	c.Stop(1)
	c.Stop(2)
	c.WaitFor(10*time.Second, func() error {
		if time.Since(deleted) < 2*gcGrace {
			return errors.New("within the grace period")
		}
		return nil
	})
	_, err := c.Nodes[0].Agent().Node.CollectChunks(ctx)
	if !errors.Is(err, cluster.ErrCollectSkipped) {
		t.Fatalf("collection on a node cut off from its leaders: %v, want ErrCollectSkipped", err)
	}
	for _, id := range bIDs {
		if hs := holding(c, id, 0); len(hs) != 1 {
			t.Fatalf("chunk %s collected by a node cut off from its leaders", id)
		}
	}
}

// TestFilesCollectAbandonedUpload: kill -9 of the node receiving an upload,
// in the middle: no manifest, and the chunks it had sent to the replicas
// are collected there once the grace period passed.
func TestFilesCollectAbandonedUpload(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{Core: 3, Resource: 1, ChunkGCInterval: time.Hour, ChunkGCGrace: gcGrace})
	ch := c.CreateChannel("drop", 3)
	var replicas []int
	entry := -1
	placed := map[int]bool{}
	for _, r := range ch.Placement {
		replicas = append(replicas, c.Index(r.NodeID))
		placed[c.Index(r.NodeID)] = true
	}
	for i := range c.Nodes {
		if !placed[i] {
			entry = i
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	data := randomBytes(21, 24*mib)
	body := &pacedReader{r: bytes.NewReader(data), rate: 16 * mib, at: func() { go c.Kill(entry) }}
	if _, err := c.Client(entry).PutFile(ctx, "drop", "x.bin", body, int64(len(data)), api.PutFileOptions{}); err == nil {
		t.Fatal("an upload through a node killed midway succeeded")
	}
	held := 0
	for _, i := range replicas {
		held += int(c.Nodes[i].Agent().Node.Chunks().Count())
	}
	if held == 0 {
		t.Fatal("no chunk reached a replica before the kill: the test proves nothing")
	}
	ls, err := c.Client(replicas[0]).ListFiles(ctx, "drop", "", "", 0)
	if err != nil || len(ls.Files) != 0 {
		t.Fatalf("files after the receiving node was killed: %+v, %v (want none)", ls, err)
	}
	c.WaitFor(30*time.Second, func() error {
		collectAll(t, c, replicas...)
		for _, i := range replicas {
			if k := c.Nodes[i].Agent().Node.Chunks().Count(); k != 0 {
				return fmt.Errorf("%s still holds %d chunks", c.Nodes[i].Name, k)
			}
		}
		return nil
	})

}
