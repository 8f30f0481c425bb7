package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/shardnet/shardnet/api"
	"github.com/shardnet/shardnet/chunk"
	"github.com/shardnet/shardnet/fsm"
	"github.com/shardnet/shardnet/internal/testcluster"
)

// Files that survive (issue "Files in channels", items 1, 2 and 7):
// resumable uploads across a restart of their node, backups that hold the
// collector, and a channel's own chunk size.

// waitVersion waits until every node's copy of the meta state runs at
// least version v (the meta leader raises it once every node reports it).
func waitVersion(t *testing.T, c *testcluster.Cluster, v int) {
	t.Helper()
	c.WaitFor(30*time.Second, func() error {
		for _, nd := range c.Nodes {
			if a := nd.Agent(); a != nil && a.Node.Meta().ClusterVersion() < v {
				return fmt.Errorf("%s runs cluster version %d", nd.Name, a.Node.Meta().ClusterVersion())
			}
		}
		return nil
	})
}

// uploadRecords lists the upload records in node i's data dir.
func uploadRecords(t *testing.T, c *testcluster.Cluster, i int) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(c.Nodes[i].Dir, "uploads"))
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// TestFilesResumableUploadSurvivesRestart: the node holding a resumable
// upload is killed (as kill -9 would) and started again; the client finds
// the upload at the offset it was last told, a piece at another offset is
// still refused, and the upload finishes: the file reads back whole
// through every node, and the upload's record is gone.
func TestFilesResumableUploadSurvivesRestart(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{Core: 3})
	c.CreateChannel("durable", 3)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	data := randomBytes(21, 10*mib+7)
	const via = 1
	cl := c.Client(via)
	up, err := cl.CreateUpload(ctx, "durable", api.UploadRequest{Path: "d/big.bin", Size: int64(len(data)), ContentType: "application/x-test", SHA256: hexSum(data)})
	if err != nil {
		t.Fatal(err)
	}
	if recs := uploadRecords(t, c, via); len(recs) != 1 || recs[0] != up.ID {
		t.Fatalf("the created upload's record: %v", recs)
	}
	st, err := cl.AppendUpload(ctx, "durable", up.ID, 0, bytes.NewReader(data[:9*mib]), 9*mib)
	if err != nil || st.Offset != 8*mib || st.File != nil {
		t.Fatalf("first piece: %+v, %v", st, err)
	}

	c.Kill(via)
	c.Start(via)
	c.WaitFor(30*time.Second, func() error {
		st, err = cl.UploadStatus(ctx, "durable", up.ID)
		return err
	})
	if st.Offset != 8*mib || st.Size != int64(len(data)) || st.Path != "d/big.bin" {
		t.Fatalf("status after the restart: %+v", st)
	}
	if _, err := cl.AppendUpload(ctx, "durable", up.ID, 0, bytes.NewReader(data[:10]), 10); api.AsError(err) == nil || api.AsError(err).Status != http.StatusConflict {
		t.Fatalf("a piece at the wrong offset after the restart: %v", err)
	}
	// The restarted node's replica and meta copy may need a moment: a
	// request that stored nothing is sent again from the offset.
	c.WaitFor(30*time.Second, func() error {
		cur, err := cl.UploadStatus(ctx, "durable", up.ID)
		if err != nil {
			return err
		}
		st, err = cl.AppendUpload(ctx, "durable", up.ID, cur.Offset, bytes.NewReader(data[cur.Offset:]), int64(len(data))-cur.Offset)
		if err != nil {
			return err
		}
		if st.File == nil || st.File.Size != int64(len(data)) || st.File.SHA256 != hexSum(data) {
			t.Fatalf("last piece after the restart: %+v", st)
		}
		return nil
	})
	for i := range c.Nodes {
		resp, got := getAll(t, c.Client(i), "durable", "d/big.bin", api.GetFileOptions{})
		if !bytes.Equal(got, data) || resp.Header.Get("Content-Type") != "application/x-test" {
			t.Fatalf("the file reads back different through node %d (%d bytes, %s)", i, len(got), resp.Header.Get("Content-Type"))
		}
	}
	if recs := uploadRecords(t, c, via); len(recs) != 0 {
		t.Fatalf("a finished upload left its record: %v", recs)
	}
	if _, err := cl.UploadStatus(ctx, "durable", up.ID); api.AsError(err) == nil || api.AsError(err).Status != http.StatusNotFound {
		t.Fatalf("a finished upload is still open: %v", err)
	}
}

// TestFilesUploadPinsSurviveRestart: the chunks of an open upload stay
// pinned on its node, and leased on its replicas, across restarts. The
// upload runs in pieces, so that its first chunk grows older than the
// collector's grace period while the upload stays active. Its node is
// killed and started again, and a collection round there, which would
// delete that chunk (old, referenced by no manifest) were the pin not
// taken again from the upload's record, leaves it. Then another replica
// is killed and started again (its leases, in memory, are gone): the
// upload's next request, an empty one, leases the chunks there again, and
// a round there leaves them too. The upload then finishes.
func TestFilesUploadPinsSurviveRestart(t *testing.T) {
	const grace = 10 * time.Second
	c := testcluster.New(t, testcluster.Options{Core: 3, ChunkGCInterval: time.Hour, ChunkGCGrace: grace})
	gid := c.CreateChannel("pinned", 3).GroupID
	waitVersion(t, c, fsm.Version)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	data := randomBytes(25, 13*mib+7)
	ids := chunkIDs(data)
	const via = 1
	cl := c.Client(via)
	up, err := cl.CreateUpload(ctx, "pinned", api.UploadRequest{Path: "p.bin", Size: int64(len(data))})
	if err != nil {
		t.Fatal(err)
	}
	for i, end := range []int{5 * mib, 9 * mib, 13 * mib} {
		if i > 0 {
			time.Sleep(grace * 2 / 3) // a slow client: ages the first chunk, renews the upload
		}
		off := i * 4 * mib
		st, err := cl.AppendUpload(ctx, "pinned", up.ID, int64(off), bytes.NewReader(data[off:end]), int64(end-off))
		if err != nil || st.Offset != int64(off+4*mib) {
			t.Fatalf("piece %d: %+v, %v", i, st, err)
		}
	}
	lastAck := time.Now()
	if info, err := c.Nodes[via].Agent().Node.Chunks().Stat(ids[0]); err != nil || time.Since(info.ModTime) <= grace {
		t.Fatalf("the first chunk is not older than the grace period (%v, %v): the test proves nothing", info.ModTime, err)
	}

	c.Kill(via)
	c.Start(via)
	node := c.Nodes[via].Agent().Node
	var roundAt time.Time
	c.WaitFor(30*time.Second, func() error {
		roundAt = time.Now()
		_, err := node.CollectChunks(ctx)
		if err != nil {
			t.Logf("collection round on the restarted node: %v", err)
		}
		return err
	})
	if !node.Chunks().Has(ids[0]) {
		if roundAt.Sub(lastAck) > grace {
			t.Skipf("the restarted node took its first collection round %v after the upload's last request, past its idle time: the premise was not reached", roundAt.Sub(lastAck))
		}
		t.Fatal("the restarted node collected the first chunk of an upload still open")
	}

	const replica = 2
	c.Kill(replica)
	c.Start(replica)
	other := c.Nodes[replica].Agent().Node
	c.WaitFor(30*time.Second, func() error {
		if _, ok := other.Shards().Replica(gid); !ok {
			return fmt.Errorf("the replica on %s is not open yet", c.Nodes[replica].Name)
		}
		return nil
	})
	var leasedAt time.Time
	c.WaitFor(30*time.Second, func() error {
		leasedAt = time.Now()
		st, err := cl.AppendUpload(ctx, "pinned", up.ID, 12*mib, bytes.NewReader(nil), 0)
		if err == nil && st.Offset != 12*mib {
			t.Fatalf("an empty request moved the upload: %+v", st)
		}
		return err
	})
	c.WaitFor(30*time.Second, func() error {
		roundAt = time.Now()
		_, err := other.CollectChunks(ctx)
		if err != nil {
			t.Logf("collection round on the restarted replica: %v", err)
		}
		return err
	})
	if !other.Chunks().Has(ids[0]) {
		if roundAt.Sub(leasedAt) > grace {
			t.Skipf("the restarted replica took its first collection round %v after the upload's last request: the premise was not reached", roundAt.Sub(leasedAt))
		}
		t.Fatal("a restarted replica collected the first chunk of an upload still open")
	}
	c.WaitFor(30*time.Second, func() error {
		cur, err := cl.UploadStatus(ctx, "pinned", up.ID)
		if e := api.AsError(err); e != nil && e.Status == http.StatusNotFound && time.Since(leasedAt) > grace {
			t.Skipf("the upload expired (idle %v, its idle time %v) while the restarted replica's collection round ran: the premise was not reached", time.Since(leasedAt), grace)
		}
		if err != nil {
			return err
		}
		st, err := cl.AppendUpload(ctx, "pinned", up.ID, cur.Offset, bytes.NewReader(data[cur.Offset:]), int64(len(data))-cur.Offset)
		if err != nil {
			return err
		}
		if st.File == nil || st.File.Size != int64(len(data)) {
			t.Fatalf("last piece after the restart: %+v", st)
		}
		return nil
	})
	if _, got := getAll(t, c.Client(0), "pinned", "p.bin", api.GetFileOptions{}); !bytes.Equal(got, data) {
		t.Fatal("the file reads back different")
	}
}

// TestFilesExpiredUploadCollected: an upload left idle past its idle time
// (the collector's grace period) expires, across a restart of its node as
// well: its record goes, and its chunks, which no manifest references, are
// collected on every replica.
func TestFilesExpiredUploadCollected(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{Core: 3, ChunkGCInterval: time.Hour, ChunkGCGrace: gcGrace})
	c.CreateChannel("expire", 3)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	all := []int{0, 1, 2}
	data := randomBytes(22, 9*mib)
	ids := chunkIDs(data)
	cl := c.Client(0)
	up, err := cl.CreateUpload(ctx, "expire", api.UploadRequest{Path: "gone.bin", Size: int64(len(data))})
	if err != nil {
		t.Fatal(err)
	}
	if st, err := cl.AppendUpload(ctx, "expire", up.ID, 0, bytes.NewReader(data[:6*mib]), 6*mib); err != nil || st.Offset != 4*mib {
		t.Fatalf("first piece: %+v, %v", st, err)
	}
	if hs := holding(c, ids[0], all...); len(hs) != 3 {
		t.Fatalf("the upload's chunk is held by %v only", hs)
	}
	// Within the idle time nothing goes.
	collectAll(t, c, all...)
	if hs := holding(c, ids[0], all...); len(hs) != 3 {
		t.Fatalf("an open upload's chunk went: held by %v", hs)
	}
	c.Kill(0)
	c.Start(0)
	c.WaitFor(30*time.Second, func() error {
		for _, i := range all {
			if _, err := c.Nodes[i].Agent().Node.CollectChunks(ctx); err != nil {
				return err
			}
		}
		if hs := holding(c, ids[0], all...); len(hs) > 0 {
			return fmt.Errorf("the expired upload's chunk is still on %v", hs)
		}
		return nil
	})
	if recs := uploadRecords(t, c, 0); len(recs) != 0 {
		t.Fatalf("an expired upload left its record: %v", recs)
	}
	if _, err := c.Client(0).UploadStatus(ctx, "expire", up.ID); api.AsError(err) == nil || api.AsError(err).Status != http.StatusNotFound {
		t.Fatalf("an expired upload is still open: %v", err)
	}
}

// TestBackupHoldsCollection: a backup taken (its snapshot read) before a
// file is deleted still carries that file's chunks although every
// replica's collector runs, past the grace period, while the backup
// streams; once the backup ends, the next rounds collect them.
func TestBackupHoldsCollection(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{Core: 3, ChunkGCInterval: time.Hour, ChunkGCGrace: gcGrace})
	c.CreateChannel("held", 3)
	waitVersion(t, c, fsm.Version)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	all := []int{0, 1, 2}
	data := randomBytes(23, 10*mib)
	ids := chunkIDs(data)
	cl := c.Client(0)
	if _, err := cl.PutFile(ctx, "held", "doomed.bin", bytes.NewReader(data), int64(len(data)), api.PutFileOptions{}); err != nil {
		t.Fatal(err)
	}
	// On the channel's leader: a backup's linearizable read is served
	// there without a call (which would carry no client here).
	node := c.Nodes[c.Index(c.WaitLeader("held"))].Agent().Node
	h, rc, err := node.Backup(ctx, "held")
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if _, err := cl.DeleteFile(ctx, "held", "doomed.bin", ""); err != nil {
		t.Fatal(err)
	}
	time.Sleep(gcGrace + 500*time.Millisecond) // the chunks are older than the grace period
	held := 0
	for _, i := range all {
		st, err := c.Nodes[i].Agent().Node.CollectChunks(ctx)
		if err != nil {
			t.Fatalf("collection on %s: %v", c.Nodes[i].Name, err)
		}
		held += st.Held
	}
	for _, id := range ids {
		if hs := holding(c, id, all...); len(hs) != 3 {
			t.Fatalf("a chunk of a file the running backup carries went from %d replicas (held by %v); rounds held %d", 3-len(hs), hs, held)
		}
	}
	if held == 0 {
		t.Fatal("no round said a backup held it")
	}
	sum := sha256.New()
	if _, _, err := fsm.WriteBackupChunks(sum, h, rc, rc.(fsm.ChunkSource)); err != nil {
		t.Fatalf("the backup could not send the deleted file's chunks: %v", err)
	}
	rc.Close()
	// The hold ends with the backup: the deleted file's chunks go.
	c.WaitFor(20*time.Second, func() error {
		collectAll(t, c, all...)
		for _, id := range ids {
			if hs := holding(c, id, all...); len(hs) > 0 {
				return fmt.Errorf("chunk %s is still on %v after the backup ended", id, hs)
			}
		}
		return nil
	})
}

// TestFilesChunkSizePerChannel: a channel created with 1 MiB chunks
// stores a 3.5 MiB file as 4 chunks of 1 MiB, and Range reads across their
// edges come back right; a chunk size changed later applies to new files
// only; sizes outside the bounds are refused.
func TestFilesChunkSizePerChannel(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{Core: 3})
	waitVersion(t, c, fsm.Version)
	ctx := ctxT(t)
	cl := c.Client(0)
	ch, err := cl.CreateChannel(ctx, api.CreateChannelRequest{Name: "small", Replicas: 3, ChunkSize: mib})
	if err != nil || ch.ChunkSize != mib {
		t.Fatalf("create with 1 MiB chunks: %+v, %v", ch, err)
	}
	c.WaitLeader("small")
	for _, bad := range []uint64{1000, 32 << 10, mib + 1, 128 * mib} {
		_, err := cl.CreateChannel(ctx, api.CreateChannelRequest{Name: "bad", ChunkSize: bad})
		if e := api.AsError(err); e == nil || e.Status != http.StatusBadRequest {
			t.Fatalf("a chunk size of %d: %v", bad, err)
		}
		_, err = cl.ChangeChannel(ctx, "small", api.ChangeChannelRequest{ChunkSize: &bad})
		if e := api.AsError(err); e == nil || e.Status != http.StatusBadRequest {
			t.Fatalf("a change to a chunk size of %d: %v", bad, err)
		}
	}

	data := randomBytes(24, 3*mib+mib/2)
	put, err := cl.PutFile(ctx, "small", "a.bin", bytes.NewReader(data), int64(len(data)), api.PutFileOptions{})
	if err != nil || put.Chunks != 4 {
		t.Fatalf("a 3.5 MiB file in 1 MiB chunks: %+v, %v", put, err)
	}
	list, err := cl.ListFiles(ctx, "small", "", "", 10)
	if err != nil || len(list.Files) != 1 || list.Files[0].ChunkSize != mib || list.Files[0].Chunks != 4 {
		t.Fatalf("listing: %+v, %v", list, err)
	}
	for i := 0; i < 4; i++ {
		id := chunk.Sum(data[i*mib : min((i+1)*mib, len(data))])
		if hs := holding(c, id, 0, 1, 2); len(hs) != 3 {
			t.Fatalf("chunk %d (1 MiB) is held by %v", i, hs)
		}
	}
	for _, r := range [][2]int{
		{mib - 10, mib + 10},             // across the first edge
		{2*mib - 1, 2 * mib},             // the last byte of one chunk, the first of the next
		{0, 3 * mib},                     // three whole chunks
		{mib - 65536 - 1, 3*mib + 65536}, // blocks and chunks
		{3*mib - 1, len(data) - 1},       // into the short last chunk
		{len(data) - 1, len(data) - 1},   // the last byte
	} {
		for _, i := range []int{1, 2} {
			resp, got := getAll(t, c.Client(i), "small", "a.bin", api.GetFileOptions{Range: fmt.Sprintf("bytes=%d-%d", r[0], r[1])})
			if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(got, data[r[0]:r[1]+1]) {
				t.Fatalf("range %d-%d through node %d: %d, %d bytes, equal %v", r[0], r[1], i, resp.StatusCode, len(got), bytes.Equal(got, data[r[0]:r[1]+1]))
			}
		}
	}

	// 2 MiB from now on: a new file takes it, the old one keeps its own.
	two := uint64(2 * mib)
	if ch, err := cl.ChangeChannel(ctx, "small", api.ChangeChannelRequest{ChunkSize: &two}); err != nil || ch.ChunkSize != two {
		t.Fatalf("change to 2 MiB chunks: %+v, %v", ch, err)
	}
	c.WaitFor(10*time.Second, func() error {
		for i := range c.Nodes {
			if rec, _ := c.Nodes[i].Agent().Node.Meta().Channel("small"); rec.ChunkSize != two {
				return fmt.Errorf("%s has chunk size %d", c.Nodes[i].Name, rec.ChunkSize)
			}
		}
		return nil
	})
	// Through another node, as a resumable upload: it takes the setting too.
	up, err := c.Client(2).CreateUpload(ctx, "small", api.UploadRequest{Path: "b.bin", Size: int64(len(data))})
	if err != nil {
		t.Fatal(err)
	}
	st, err := c.Client(2).AppendUpload(ctx, "small", up.ID, 0, bytes.NewReader(data[:3*mib]), 3*mib)
	if err != nil || st.Offset != 2*mib {
		t.Fatalf("a piece of 3 MiB in 2 MiB chunks: %+v, %v", st, err)
	}
	if st, err = c.Client(2).AppendUpload(ctx, "small", up.ID, 2*mib, bytes.NewReader(data[2*mib:]), int64(len(data)-2*mib)); err != nil || st.File == nil || st.File.Chunks != 2 {
		t.Fatalf("the rest: %+v, %v", st, err)
	}
	list, err = cl.ListFiles(ctx, "small", "", "", 10)
	if err != nil || len(list.Files) != 2 || list.Files[0].ChunkSize != mib || list.Files[1].ChunkSize != two {
		t.Fatalf("listing after the change: %+v, %v", list, err)
	}
	for _, path := range []string{"a.bin", "b.bin"} {
		resp, got := getAll(t, c.Client(1), "small", path, api.GetFileOptions{Range: fmt.Sprintf("bytes=%d-", mib+1)})
		if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(got, data[mib+1:]) {
			t.Fatalf("%s from 1 MiB+1: %d, %d bytes", path, resp.StatusCode, len(got))
		}
	}
}
