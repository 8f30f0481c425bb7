package chaos

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/shardnet/shardnet/api"
)

// Listing is one replica's whole channel, read at one applied index.
type Listing struct {
	Index uint64 // the replica's applied index (every page read at it)
	Items []api.KV
	Hash  string // of every key, value, create and modify index, in key order
}

// ReadListing reads the whole channel from the node behind cl at level,
// page by page; the pages must all be read at the same applied index,
// which holds once writes have stopped and the replica caught up.
func ReadListing(ctx context.Context, cl *api.Client, channel string, level api.Consistency) (Listing, error) {
	var l Listing
	after := ""
	for page := 0; ; page++ {
		resp, err := cl.List(ctx, channel, "", after, 1000, level)
		if err != nil {
			return l, fmt.Errorf("list %s via %s: %w", channel, cl.Addr(), err)
		}
		if page > 0 && resp.Index != l.Index {
			return l, fmt.Errorf("list %s via %s: applied index moved from %d to %d between pages", channel, cl.Addr(), l.Index, resp.Index)
		}
		l.Index = resp.Index
		l.Items = append(l.Items, resp.Items...)
		if resp.Next == "" {
			break
		}
		after = resp.Next
	}
	h := sha256.New()
	var num [8]byte
	for _, kv := range l.Items {
		for _, b := range [][]byte{[]byte(kv.Key), kv.Value} {
			binary.BigEndian.PutUint64(num[:], uint64(len(b)))
			h.Write(num[:])
			h.Write(b)
		}
		binary.BigEndian.PutUint64(num[:], kv.CreateIndex)
		h.Write(num[:])
		binary.BigEndian.PutUint64(num[:], kv.ModifyIndex)
		h.Write(num[:])
	}
	l.Hash = hex.EncodeToString(h.Sum(nil))[:16]
	return l, nil
}

// Converge waits (up to timeout) until every node's replica has applied the
// leader's applied index, read with a linearizable listing, and then
// requires their stale listings, read from each replica itself, to be
// identical. It returns the agreed listing. A difference between replicas
// at the same applied index is reported at once, with the keys that differ.
func Converge(clients []*api.Client, channel string, timeout time.Duration) (Listing, error) {
	deadline := time.Now().Add(timeout)
	var lastErr error
	for {
		l, err := convergeOnce(clients, channel)
		if err == nil {
			return l, nil
		}
		if de := (*divergence)(nil); errors.As(err, &de) {
			return l, de
		}
		lastErr = err
		if time.Now().After(deadline) {
			return l, fmt.Errorf("replicas did not converge within %v: %w", timeout, lastErr)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

type divergence struct{ msg string }

func (d *divergence) Error() string { return d.msg }

func convergeOnce(clients []*api.Client, channel string) (Listing, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var leader Listing
	var err error
	for _, cl := range clients { // any node: it forwards to the leader
		if leader, err = ReadListing(ctx, cl, channel, api.Linearizable); err == nil {
			break
		}
	}
	if err != nil {
		return leader, fmt.Errorf("leader's listing: %w", err)
	}
	listings := make([]Listing, len(clients))
	for i, cl := range clients {
		l, err := ReadListing(ctx, cl, channel, api.Stale)
		if err != nil {
			return leader, fmt.Errorf("node %d: %w", i, err)
		}
		if l.Index != leader.Index {
			return leader, fmt.Errorf("node %d applied %d, the leader %d", i, l.Index, leader.Index)
		}
		listings[i] = l
	}
	var diffs []string
	for i, l := range listings {
		if l.Hash != leader.Hash {
			diffs = append(diffs, fmt.Sprintf("node %d (hash %s, %d keys) differs from the leader (hash %s, %d keys) at applied index %d: %s",
				i, l.Hash, len(l.Items), leader.Hash, len(leader.Items), l.Index, diffItems(leader.Items, l.Items)))
		}
	}
	if len(diffs) > 0 {
		return leader, &divergence{"replicas diverged: " + strings.Join(diffs, "; ")}
	}
	return leader, nil
}

// diffItems describes up to 5 keys on which a and b differ.
func diffItems(a, b []api.KV) string {
	am, bm := map[string]api.KV{}, map[string]api.KV{}
	var keys []string
	for _, kv := range a {
		am[kv.Key] = kv
		keys = append(keys, kv.Key)
	}
	for _, kv := range b {
		bm[kv.Key] = kv
		if _, ok := am[kv.Key]; !ok {
			keys = append(keys, kv.Key)
		}
	}
	slices.Sort(keys)
	var out []string
	show := func(kv api.KV, ok bool) string {
		if !ok {
			return "absent"
		}
		return fmt.Sprintf("%q@%d/%d", kv.Value, kv.CreateIndex, kv.ModifyIndex)
	}
	for _, k := range keys {
		x, xok := am[k]
		y, yok := bm[k]
		if xok == yok && string(x.Value) == string(y.Value) && x.CreateIndex == y.CreateIndex && x.ModifyIndex == y.ModifyIndex {
			continue
		}
		out = append(out, fmt.Sprintf("%s: %s vs %s", k, show(x, xok), show(y, yok)))
		if len(out) == 5 {
			break
		}
	}
	return strings.Join(out, ", ")
}

// RecordFinalReads adds the final state of keys, read with one
// linearizable listing through cl after the workload stopped, to the
// history as one get per key: a write acknowledged during the run and lost
// afterwards shows up as a read that cannot be linearized.
func RecordFinalReads(ctx context.Context, rec *Recorder, cl *api.Client, channel string, keys []string) error {
	proc := rec.NewProcess()
	call := rec.Now()
	l, err := ReadListing(ctx, cl, channel, api.Linearizable)
	ret := rec.Now()
	if err != nil {
		return err
	}
	byKey := map[string]api.KV{}
	for _, kv := range l.Items {
		byKey[kv.Key] = kv
	}
	for _, k := range keys {
		out := Output{Status: StatusOK}
		if kv, ok := byKey[k]; ok {
			out.Found, out.Value, out.Index = true, string(kv.Value), kv.ModifyIndex
		}
		rec.Add(proc, Input{Kind: OpGet, Key: k}, out, call, ret, "final linearizable listing")
	}
	return nil
}
