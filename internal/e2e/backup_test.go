package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/shardnet/shardnet/api"
	"github.com/shardnet/shardnet/fsm"
	"github.com/shardnet/shardnet/internal/testcluster"
)

// listAll reads every key of channel through client, linearizably.
func listAll(t *testing.T, cl *api.Client, channel string) map[string]api.KV {
	t.Helper()
	out := map[string]api.KV{}
	after := ""
	for {
		page, err := cl.List(ctxT(t), channel, "", after, 1000, api.Linearizable)
		if err != nil {
			t.Fatalf("list %s: %v", channel, err)
		}
		for _, kv := range page.Items {
			out[kv.Key] = kv
		}
		if page.Next == "" {
			return out
		}
		after = page.Next
	}
}

// TestBackupUnderWritesAndRestore: a backup taken while writes go on holds
// every write acknowledged before it began, and a channel restored from it
// holds exactly the source's state at the backup's index: every key with
// its value and its create and modify index. Its replicas all get that
// state (two of them through the leader's snapshot), and its new writes
// get indexes above the backup's, so cas with a restored modify index
// works and no index goes backwards. The backup is taken through a node
// that hosts no replica of the channel (the stream crosses a route call).
func TestBackupUnderWritesAndRestore(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{Core: 3, Resource: 1})
	src := c.CreateChannel("src", 3)
	ctx := ctxT(t)
	cl := c.Client(0)
	for i := range 300 {
		// Every tenth key written twice: create and modify differ.
		key := fmt.Sprintf("base/%03d", i)
		if _, err := cl.Put(ctx, "src", key, bytes.Repeat([]byte{byte(i)}, 100+i), api.PutOptions{}); err != nil {
			t.Fatal(err)
		}
		if i%10 == 0 {
			if _, err := cl.Put(ctx, "src", key, []byte("again"), api.PutOptions{}); err != nil {
				t.Fatal(err)
			}
		}
	}

	// Writes of new keys go on through the backup.
	type acked struct {
		key   string
		index uint64
		at    time.Time
	}
	var (
		mu    sync.Mutex
		acks  []acked
		wg    sync.WaitGroup
		stop  = make(chan struct{})
		wrote = make(chan struct{}, 1)
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			key := fmt.Sprintf("load/%05d", i)
			idx, err := c.Client(i%3).Put(context.Background(), "src", key, []byte("x"), api.PutOptions{})
			if err != nil {
				continue // not acknowledged: it may or may not be in
			}
			mu.Lock()
			acks = append(acks, acked{key, idx, time.Now()})
			mu.Unlock()
			select {
			case wrote <- struct{}{}:
			default:
			}
		}
	}()
	<-wrote

	via := -1 // a node without a replica of src
	for i, nd := range c.Nodes {
		if !slices.ContainsFunc(src.Placement, func(r api.Replica) bool { return r.NodeID == nd.Name }) {
			via = i
		}
	}
	if via < 0 {
		t.Fatalf("placement %v covers every node", src.Placement)
	}
	began := time.Now()
	body, hdrIndex, err := c.Client(via).Backup(ctx, "src")
	if err != nil {
		t.Fatalf("backup: %v", err)
	}
	var file bytes.Buffer
	if _, err := io.Copy(&file, body); err != nil {
		t.Fatalf("backup stream: %v", err)
	}
	body.Close()
	time.Sleep(100 * time.Millisecond) // a few writes after the backup too
	close(stop)
	wg.Wait()

	br, err := fsm.OpenBackup(bytes.NewReader(file.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(io.Discard, br); err != nil {
		t.Fatalf("the backup does not check out: %v", err)
	}
	index := br.Header.Index
	if index == 0 || index != hdrIndex || br.Header.Channel != "src" || br.Header.Replicas != 3 {
		t.Fatalf("header %+v, X-Shardnet-Index %d", br.Header, hdrIndex)
	}
	mu.Lock()
	for _, a := range acks {
		if a.at.Before(began) && a.index > index {
			t.Errorf("write of %s acknowledged at index %d before the backup began; the backup is at %d", a.key, a.index, index)
		}
	}
	nAcks := len(acks)
	mu.Unlock()
	t.Logf("backup at index %d, %d bytes, %d writes acknowledged meanwhile", index, file.Len(), nAcks)

	res, err := c.Client(1).Restore(ctx, "dst", 0, bytes.NewReader(file.Bytes()), int64(file.Len()))
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	if res.Index != index || res.From != "src" || res.Channel.Name != "dst" {
		t.Fatalf("restore answered %+v", res)
	}

	// The restored channel holds the source's keys at the backup's index.
	want := map[string]api.KV{}
	for k, kv := range listAll(t, cl, "src") {
		if kv.ModifyIndex <= index { // no key is modified after its creation in the load
			want[k] = kv
		}
	}
	got := listAll(t, c.Client(2), "dst")
	if len(got) != len(want) {
		t.Errorf("restored %d keys, the source had %d at index %d", len(got), len(want), index)
	}
	for k, w := range want {
		g, ok := got[k]
		if !ok {
			t.Errorf("key %s missing from the restored channel", k)
			continue
		}
		if g.CreateIndex != w.CreateIndex || g.ModifyIndex != w.ModifyIndex || !bytes.Equal(g.Value, w.Value) {
			t.Errorf("key %s: restored create %d modify %d value %q, source create %d modify %d value %q",
				k, g.CreateIndex, g.ModifyIndex, g.Value, w.CreateIndex, w.ModifyIndex, w.Value)
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	// Every replica of the restored channel gets the state.
	dst, err := cl.Channel(ctx, "dst")
	if err != nil {
		t.Fatal(err)
	}
	c.WaitFor(20*time.Second, func() error {
		for _, r := range dst.Placement {
			rep := replicaOf(t, c, c.Index(r.NodeID), "dst")
			if rep.FSM().Applied() < index {
				return fmt.Errorf("replica on %s applied %d, the backup is at %d", r.NodeID, rep.FSM().Applied(), index)
			}
			if e, ok, _ := rep.FSM().Get([]byte("base/007")); !ok || e.ModifyIndex != want["base/007"].ModifyIndex {
				return fmt.Errorf("replica on %s lacks base/007 as restored", r.NodeID)
			}
		}
		return nil
	})

	// New writes get higher indexes than any restored one.
	idx, err := cl.Put(ctx, "dst", "new", []byte("n"), api.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if idx <= index {
		t.Fatalf("a write to the restored channel got index %d, at or below the backup's %d", idx, index)
	}
	old := want["base/010"]
	idx2, err := cl.Put(ctx, "dst", "base/010", []byte("cas"), api.PutOptions{CAS: &old.ModifyIndex})
	if err != nil {
		t.Fatalf("cas with the restored modify index %d: %v", old.ModifyIndex, err)
	}
	if idx2 <= idx {
		t.Fatalf("indexes went backwards: %d after %d", idx2, idx)
	}
	if _, err := cl.Put(ctx, "dst", "base/011", []byte("x"), api.PutOptions{CAS: &index}); !api.IsConflict(err) {
		t.Fatalf("cas of a restored key with another index than its modify index: %v, want 409", err)
	}
}

// TestDamagedBackupIsRefused: a truncated or bit-flipped backup is refused
// with 400 invalid_backup, and no channel exists afterwards.
func TestDamagedBackupIsRefused(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{Core: 3})
	c.CreateChannel("src", 3)
	ctx := ctxT(t)
	cl := c.Client(0)
	for i := range 50 {
		if _, err := cl.Put(ctx, "src", fmt.Sprintf("k%02d", i), bytes.Repeat([]byte("v"), 1000), api.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	body, _, err := cl.Backup(ctx, "src")
	if err != nil {
		t.Fatal(err)
	}
	file, err := io.ReadAll(body)
	body.Close()
	if err != nil {
		t.Fatal(err)
	}
	flipped := bytes.Clone(file)
	flipped[len(flipped)/2] ^= 0x01
	for name, b := range map[string][]byte{
		"truncated":         file[:len(file)-1],
		"cut in half":       file[:len(file)/2],
		"bit-flipped":       flipped,
		"not a backup":      []byte(`{"name":"x"}`),
		"trailer truncated": file[:len(file)-20],
	} {
		t.Run(name, func(t *testing.T) {
			_, err := c.Client(1).Restore(ctx, "bad", 0, bytes.NewReader(b), int64(len(b)))
			var e *api.Error
			if !errors.As(err, &e) || e.Status != http.StatusBadRequest || e.Code != api.CodeInvalidBackup {
				t.Fatalf("restore of a %s backup: %v, want 400 %s", name, err, api.CodeInvalidBackup)
			}
			for i := range c.Nodes {
				if _, err := c.Client(i).Channel(ctx, "bad"); !api.IsNotFound(err) {
					t.Fatalf("after the refused restore, channel bad through %s: %v", c.Nodes[i].Name, err)
				}
			}
		})
	}
	// The sound file restores.
	if _, err := c.Client(2).Restore(ctx, "good", 1, bytes.NewReader(file), int64(len(file))); err != nil {
		t.Fatalf("restore of the sound backup: %v", err)
	}
	if v, _, err := c.Client(0).Get(ctx, "good", "k42", api.GetOptions{}); err != nil || len(v) != 1000 {
		t.Fatalf("restored k42: %d bytes, %v", len(v), err)
	}
}
