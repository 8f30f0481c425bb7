package e2e

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/shardnet/shardnet/api"
	"github.com/shardnet/shardnet/fsm"
	"github.com/shardnet/shardnet/internal/testcluster"
)

// TestBackupWithFilesRestoresElsewhere: a backup of a channel with keys
// and files (some sharing chunks, one over the 4 MiB chunk size, an empty
// one) carries the chunks, so that a restore into another cluster, whose
// chunk stores hold none of them, needs nothing else: every file downloads
// byte-identical from every node, and the new channel's replicas hold
// every chunk when the restore answers. The backup is taken through a node
// without a replica (its chunks come from the replicas). A bit flipped
// inside the chunk section is refused with 400 invalid_backup and creates
// nothing.
func TestBackupWithFilesRestoresElsewhere(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{Core: 3, Resource: 1})
	src := c.CreateChannel("src", 3)
	ctx := ctxT(t)
	cl := c.Client(0)
	for i := range 20 {
		if _, err := cl.Put(ctx, "src", fmt.Sprintf("k%02d", i), []byte(fmt.Sprintf("value %d", i)), api.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	big := randomBytes(7, 9*mib+123) // three chunks
	files := map[string][]byte{
		"media/big.bin":   big,
		"media/copy.bin":  big,                                                   // every chunk shared
		"media/head.bin":  append(bytes.Clone(big[:4*mib]), []byte("a tail")...), // the first chunk shared
		"notes/small.txt": []byte("a small file of the backup with files, unique enough to find"),
		"empty":           nil,
	}
	for path, data := range files {
		if _, err := cl.PutFile(ctx, "src", path, bytes.NewReader(data), int64(len(data)), api.PutFileOptions{}); err != nil {
			t.Fatalf("put %s: %v", path, err)
		}
	}
	// big's 3 chunks, head's tail, small, empty.
	const distinct = 6

	via := -1
	for i, nd := range c.Nodes {
		if !slices.ContainsFunc(src.Placement, func(r api.Replica) bool { return r.NodeID == nd.Name }) {
			via = i
		}
	}
	if via < 0 {
		t.Fatalf("placement %v covers every node", src.Placement)
	}
	body, _, err := c.Client(via).Backup(ctx, "src")
	if err != nil {
		t.Fatalf("backup: %v", err)
	}
	file, err := io.ReadAll(body)
	body.Close()
	if err != nil {
		t.Fatalf("backup stream: %v", err)
	}
	if v := binary.BigEndian.Uint32(file[8:]); v != 2 {
		t.Fatalf("backup format version %d, want 2", v)
	}
	if len(file) < len(big) {
		t.Fatalf("backup of %d bytes: it cannot hold the files' chunks", len(file))
	}
	t.Logf("backup of %d bytes", len(file))

	// Another cluster: its chunk stores hold nothing of src.
	c2 := testcluster.New(t, testcluster.Options{Core: 3})
	cl2 := c2.Client(1)
	c2.WaitFor(30*time.Second, func() error {
		// A new cluster runs version 1 until its nodes' versions are in.
		for i := range c2.Nodes {
			st, err := c2.Client(i).Status(ctx)
			if err != nil {
				return err
			}
			if st.ClusterVersion < fsm.Version {
				return fmt.Errorf("node %s sees cluster version %d", c2.Nodes[i].Name, st.ClusterVersion)
			}
		}
		return nil
	})

	at := bytes.Index(file, files["notes/small.txt"])
	if at < 0 {
		t.Fatal("the small file's bytes are not in the backup")
	}
	flipped := bytes.Clone(file)
	flipped[at+5] ^= 0x01
	_, err = cl2.Restore(ctx, "bad", 0, bytes.NewReader(flipped), int64(len(flipped)))
	var e *api.Error
	if !errors.As(err, &e) || e.Status != http.StatusBadRequest || e.Code != api.CodeInvalidBackup {
		t.Fatalf("restore with a bit flipped in a chunk: %v, want 400 %s", err, api.CodeInvalidBackup)
	}
	for i := range c2.Nodes {
		if _, err := c2.Client(i).Channel(ctx, "bad"); !api.IsNotFound(err) {
			t.Fatalf("after the refused restore, channel bad through %s: %v", c2.Nodes[i].Name, err)
		}
	}

	res, err := cl2.Restore(ctx, "dst", 3, bytes.NewReader(file), int64(len(file)))
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	t.Logf("restored at index %d", res.Index)
	// A majority must hold every chunk when the restore answers; here
	// every replica is healthy, so all do.
	for i, nd := range c2.Nodes {
		st, err := c2.Client(i).Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if st.Chunks != distinct {
			t.Errorf("node %s holds %d chunks after the restore, want %d", nd.Name, st.Chunks, distinct)
		}
	}
	for path, data := range files {
		for j := range c2.Nodes {
			_, got := getAll(t, c2.Client(j), "dst", path, api.GetFileOptions{})
			if !bytes.Equal(got, data) {
				t.Fatalf("%s through %s: %d bytes, sha %s; want %d bytes, sha %s", path, c2.Nodes[j].Name, len(got), hexSum(got), len(data), hexSum(data))
			}
		}
	}
	if v, _, err := cl2.Get(ctx, "dst", "k07", api.GetOptions{}); err != nil || string(v) != "value 7" {
		t.Fatalf("restored k07: %q, %v", v, err)
	}
}
