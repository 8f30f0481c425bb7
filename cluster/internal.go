package cluster

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strconv"

	"github.com/shardnet/shardnet/shard"
)

// The HTTP endpoints nodes of the previous version call (route.go's
// compatibility note: remove with it); this version asks the same with
// route calls (rcReplicaInfo, rcSnapshot).

// InternalPrefix is the path prefix of node-to-node calls. They are served
// only on streams of the cluster port, whose peers are nodes of the
// cluster CA (or proved the cluster key, under -insecure), never on the
// public HTTP port.
const InternalPrefix = "/internal/"

// InternalHandler serves node-to-node calls: GET /internal/replicas/{gid}
// answers this node's view of one of its replicas, GET
// /internal/snapshot/{gid} streams its state (a repair, hashcheck.go).
func (n *Node) InternalHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /internal/replicas/{gid}", func(w http.ResponseWriter, r *http.Request) {
		rep, ok := n.replicaOf(w, r)
		if !ok {
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(rep.Info())
	})
	mux.HandleFunc("GET /internal/snapshot/{gid}", n.serveSnapshot)
	// No longer asked by this version (a node whose meta copy trails
	// catches up with a meta read index, metaread.go); kept for nodes of
	// the previous version during a rolling upgrade.
	mux.HandleFunc("GET /internal/channels/{name}", func(w http.ResponseWriter, r *http.Request) {
		ch, ok := n.meta.fsm.Channel(r.PathValue("name"))
		if !ok {
			http.Error(w, "no such channel", http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(ch)
	})
	return mux
}

// replicaOf finds the local replica a /internal/.../{gid} call names, or
// answers the error itself.
func (n *Node) replicaOf(w http.ResponseWriter, r *http.Request) (*shard.Replica, bool) {
	gid, err := strconv.ParseUint(r.PathValue("gid"), 10, 64)
	if err != nil {
		http.Error(w, "bad group id", http.StatusBadRequest)
		return nil, false
	}
	rep, ok := n.shards.Replica(gid)
	if !ok {
		http.Error(w, "not hosted", http.StatusNotFound)
	}
	return rep, ok
}

// serveSnapshot streams this node's replica's state, once it has applied
// the index in ?min (GET /internal/snapshot/{gid}, for RepairReplica on a
// node of the previous version). A replica marked corrupt refuses.
func (n *Node) serveSnapshot(w http.ResponseWriter, r *http.Request) {
	rep, ok := n.replicaOf(w, r)
	if !ok {
		return
	}
	minIndex, err := strconv.ParseUint(r.URL.Query().Get("min"), 10, 64)
	if err != nil {
		http.Error(w, "bad min index", http.StatusBadRequest)
		return
	}
	if rep.Corrupt() != nil {
		http.Error(w, "this replica is marked corrupt", http.StatusServiceUnavailable)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), internalCallLimit)
	err = rep.FSM().WaitApplied(ctx, minIndex)
	cancel()
	if err != nil {
		http.Error(w, "not applied that far: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	snap, err := rep.FSM().Snapshot()
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	defer snap.Release()
	w.Header().Set("Content-Type", "application/octet-stream")
	if err := snap.Persist(&writerSink{w: w}); err != nil {
		// The stream is cut short: its trailer's checksum fails the rebuild.
		n.log.Warn("snapshot for a repair failed", "group", rep.GroupID, "error", err)
	}
}

// writerSink is a raft.SnapshotSink writing to an HTTP answer.
type writerSink struct{ w io.Writer }

func (s *writerSink) Write(p []byte) (int, error) { return s.w.Write(p) }
func (s *writerSink) Close() error                { return nil }
func (s *writerSink) Cancel() error               { return nil }
func (s *writerSink) ID() string                  { return "repair" }
