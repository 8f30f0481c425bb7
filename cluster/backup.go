package cluster

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/shardnet/shardnet/api"
	"github.com/shardnet/shardnet/fsm"
	"github.com/shardnet/shardnet/shard"
)

// Backup and restore of a channel (docs/operations.md "Backup and
// restore").
//
// A backup is a snapshot of a replica's state machine taken once that
// replica has applied a linearizable read index taken when the backup
// began (readable, as any linearizable read: the leader, or a follower
// that caught up with the leader's read index), so it holds every write
// acknowledged before. It streams from a pebble snapshot through the route
// call's flow-controlled body: neither node holds it in memory.
//
// A restore is received by one node (the entry node), which streams the
// upload to a file under its data dir while checking the backup's SHA-256,
// and only once the file is sound asks the meta leader to create the
// channel (CreateRestoredChannel: the record names that node and file).
// The first replica of the placement fetches the file (rcRestoreFetch)
// and starts its group from it (shard.Manager.Seed: a raft snapshot at the
// backup's index, so the log continues above it); the others start empty
// and get the leader's snapshot. The entry node waits for the channel to
// serve a linearizable read at or above the backup's index, then deletes
// the file; if it does not within restoreServeLimit, it deletes the channel
// again, so a failed restore leaves nothing behind.

// ErrRestoreFailed: the restored channel did not start serving; it was
// deleted again.
var ErrRestoreFailed = errors.New("cluster: the restored channel did not start")

// ErrUploadGone: the node named as holding an uploaded backup does not
// have it (any more): its restore ended.
var ErrUploadGone = errors.New("cluster: the uploaded backup is gone")

const (
	// restoreServeLimit bounds the wait for a restored channel to serve.
	restoreServeLimit = 10 * time.Minute
	restoresDir       = "restores"
	// staleUpload is how long an upload file may go unmodified before a
	// later restore on the node removes it: a restore writes its file
	// as the upload arrives and removes it within restoreServeLimit of
	// the end, so an older one was left by a crash.
	staleUpload = time.Hour
)

// Backup returns the header and the snapshot stream of a backup of
// channel, as of a linearizable read index taken now: from a local replica
// or through a call to a node that has one. The caller closes the stream
// and writes the file (fsm.WriteBackupChunks: the stream is the
// fsm.ChunkSource of the chunks its files need, backupchunks.go); the
// header's Index is set.
func (n *Node) Backup(ctx context.Context, channel string) (fsm.BackupHeader, io.ReadCloser, error) {
	var h fsm.BackupHeader
	var rc io.ReadCloser
	// Before the snapshot: the chunks it references stay until the backup
	// has sent them (backupholds.go). Nodes before version 5 know no holds.
	release := func() {}
	if n.meta.fsm.ClusterVersion() >= holdVersion {
		var err error
		if release, err = n.holdCollection(ctx, channel); err != nil {
			return h, nil, err
		}
	}
	err := n.route.do(ctx, "backup", func(ctx context.Context) (err error) {
		h, rc, err = n.backupHere(ctx, channel)
		return err
	}, func(ctx context.Context, re *shard.RedirectError) (err error) {
		h, rc, err = n.route.backup(ctx, re, channel)
		return readFailed(err, re)
	})
	if err != nil {
		release()
		return h, nil, err
	}
	return h, &backupStream{ReadCloser: rc, n: n, ctx: ctx, channel: channel, release: release}, nil
}

func (n *Node) backupHere(ctx context.Context, channel string) (fsm.BackupHeader, io.ReadCloser, error) {
	rep, err := n.readable(ctx, channel, shard.Linearizable)
	if err != nil {
		return fsm.BackupHeader{}, nil, err
	}
	snap, err := rep.FSM().Snapshot()
	if err != nil {
		return fsm.BackupHeader{}, nil, err
	}
	h := fsm.BackupHeader{
		Channel: rep.Channel, GroupID: rep.GroupID, ClusterID: n.meta.fsm.ClusterID(), Node: n.cfg.Name,
		Term: rep.Raft().CurrentTerm(), Created: time.Now().UTC().Format(time.RFC3339),
	}
	if ch, ok := n.meta.fsm.Channel(channel); ok {
		h.Replicas, h.QuotaBytes, h.Settings, h.CreateIndex = ch.Replicas, ch.QuotaBytes, ch.Settings, ch.CreateIndex
		h.ChunkSize = ch.ChunkSize
	}
	pr, pw := io.Pipe()
	go func() {
		defer snap.Release()
		// A reader that goes away fails the pipe's writes: Persist ends.
		pw.CloseWithError(snap.Persist(&writerSink{w: pw}))
	}()
	var first [28]byte
	if _, err := io.ReadFull(pr, first[:]); err != nil {
		pr.CloseWithError(err)
		return fsm.BackupHeader{}, nil, fmt.Errorf("cluster: backup of %q: %w", channel, err)
	}
	if h.Index, err = fsm.SnapshotStreamIndex(first[:]); err != nil {
		pr.CloseWithError(err)
		return fsm.BackupHeader{}, nil, err
	}
	n.log.Info("backup", "channel", channel, "index", h.Index)
	return h, readCloser{io.MultiReader(bytes.NewReader(first[:]), pr), pr}, nil
}

type readCloser struct {
	io.Reader
	io.Closer
}

// backup (rcBackup): head the channel name; answer head the JSON of the
// fsm.BackupHeader, body the snapshot stream. The call may last as long
// as maxCallTimeout: the stream moves within it.
func (r *router) backup(ctx context.Context, re *shard.RedirectError, channel string) (fsm.BackupHeader, io.ReadCloser, error) {
	ans, err := r.longCall(ctx, "backup", re.Addr, rcBackup, []byte(channel))
	if err != nil {
		return fsm.BackupHeader{}, nil, err
	}
	var h fsm.BackupHeader
	if err := json.Unmarshal(ans.head, &h); err != nil || ans.body == nil {
		if ans.body != nil {
			_ = ans.body.Close()
		}
		return fsm.BackupHeader{}, nil, fmt.Errorf("cluster: backup from %s: malformed answer (%v)", re.NodeID, err)
	}
	return h, ans.body, nil
}

// longCall makes a call whose answer body may take up to maxCallTimeout
// to move, unless ctx ends first.
func (r *router) longCall(ctx context.Context, call, addr string, op byte, head []byte) (*callAnswer, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, maxCallTimeout)
		// The body outlives this function: the context ends with it.
		ans, err := r.call(ctx, addr, op, head, nil)
		r.count(call, err)
		if err != nil {
			cancel()
			return nil, err
		}
		if ans.body == nil {
			cancel()
			return ans, nil
		}
		ans.body = &cancelOnClose{ReadCloser: ans.body, cancel: cancel}
		return ans, nil
	}
	ans, err := r.call(ctx, addr, op, head, nil)
	r.count(call, err)
	return ans, err
}

type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (c *cancelOnClose) Close() error {
	err := c.ReadCloser.Close()
	c.cancel()
	return err
}

func (r *router) serveBackup(ctx context.Context, head []byte, _ io.Reader) ([]byte, func(io.Writer) error, error) {
	h, rc, err := r.n.backupHere(ctx, string(head))
	if err != nil {
		return nil, nil, err
	}
	b, err := json.Marshal(h)
	if err != nil {
		rc.Close()
		return nil, nil, err
	}
	return b, func(w io.Writer) error {
		defer rc.Close()
		_, err := io.Copy(w, rc)
		return err
	}, nil
}

// RestoreChannel creates channel name from the backup read from body
// (module doc above). replicas 0 takes the backup's; quota and settings
// come from the backup. A backup that is not sound is refused
// (fsm.ErrBadBackup) before anything is created.
func (n *Node) RestoreChannel(ctx context.Context, name string, replicas int, body io.Reader) (api.Channel, fsm.BackupHeader, error) {
	if !fsm.ValidChannelName(name) {
		return api.Channel{}, fsm.BackupHeader{}, fmt.Errorf("%w: channel name %q must be 1-63 characters of a-z, 0-9 and -", ErrInvalidRequest, name)
	}
	if _, ok := n.meta.fsm.Channel(name); ok {
		return api.Channel{}, fsm.BackupHeader{}, fmt.Errorf("%w: %q", ErrChannelExists, name)
	}
	if err := fsm.CheckVersion(fsm.MetaVersion(&fsm.CreateRestoredChannel{}), n.meta.fsm.ClusterVersion()); err != nil {
		return api.Channel{}, fsm.BackupHeader{}, err
	}
	br, err := fsm.OpenBackup(body)
	if err != nil {
		return api.Channel{}, fsm.BackupHeader{}, err
	}
	defer br.Close()
	h := br.Header
	sp, err := n.spoolChunks(br) // backupchunks.go
	if err != nil {
		return api.Channel{}, h, err
	}
	defer sp.remove()
	id, _, size, err := n.storeUpload(br)
	if err != nil {
		return api.Channel{}, h, err
	}
	defer n.removeUpload(id)
	if err := sp.finish(); err != nil {
		return api.Channel{}, h, err
	}
	if replicas == 0 {
		replicas = h.Replicas
	}
	req := api.CreateChannelRequest{Name: name, Replicas: replicas, QuotaBytes: h.QuotaBytes}
	if fsm.ValidateChunkSize(h.ChunkSize) == nil && n.meta.fsm.ClusterVersion() >= fsm.MetaVersion(&fsm.SetChannelChunkSize{}) {
		// The backup's files keep theirs (their manifests say it); new
		// ones take the channel's, as before the backup.
		req.ChunkSize = h.ChunkSize
	}
	if h.Index == 0 {
		// Nothing was ever applied: no key, nothing to seed.
		ch, err := n.CreateChannel(ctx, req)
		return ch, h, err
	}
	src := fsm.RestoreSource{Node: n.cfg.Name, ID: id, Index: h.Index, Term: h.Term, Bytes: size}
	n.log.Info("restoring channel", "channel", name, "from", h.Channel, "index", h.Index, "bytes", size, "chunks", sp.count, "chunk_bytes", sp.nbytes)
	ch, err := n.createRestored(ctx, req, src)
	if err != nil {
		return api.Channel{}, h, err
	}
	err = n.awaitRestored(ctx, name, h.Index)
	if err == nil {
		err = n.placeRestoredChunks(ctx, name, sp)
	}
	if err != nil {
		n.log.Error("restored channel did not start; deleting it", "channel", name, "error", err)
		dctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if derr := n.DeleteChannel(dctx, name); derr != nil {
			return api.Channel{}, h, fmt.Errorf("%w: %v; deleting it failed too, delete channel %q: %v", ErrRestoreFailed, err, name, derr)
		}
		return api.Channel{}, h, fmt.Errorf("%w: %v", ErrRestoreFailed, err)
	}
	if s := APISettings(h.Settings); s != nil {
		if err := n.SetChannelSettings(ctx, name, *s); err != nil {
			n.log.Warn("restored channel without its settings", "channel", name, "error", err)
		}
	}
	n.log.Info("channel restored", "channel", name, "index", h.Index)
	return ch, h, nil
}

// storeUpload writes the snapshot stream of br into the restores dir and
// returns its id, path and size once its trailer checked out; on any error
// nothing is left.
func (n *Node) storeUpload(br *fsm.BackupReader) (id, path string, size int64, err error) {
	dir := filepath.Join(n.cfg.DataDir, restoresDir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", "", 0, fmt.Errorf("cluster: restore: %w", err)
	}
	n.removeStaleUploads(dir)
	id = newUploadID()
	path = filepath.Join(dir, id+".snap")
	f, err := os.Create(path + ".tmp")
	if err != nil {
		return "", "", 0, fmt.Errorf("cluster: restore: %w", err)
	}
	fail := func(err error) (string, string, int64, error) {
		f.Close()
		os.Remove(path + ".tmp")
		return "", "", 0, err
	}
	size, err = io.Copy(f, br)
	if err != nil {
		if errors.Is(err, fsm.ErrBadBackup) {
			return fail(err)
		}
		return fail(fmt.Errorf("%w: upload ended after %d bytes: %v", fsm.ErrBadBackup, br.Bytes, err))
	}
	if err := f.Sync(); err != nil {
		return fail(fmt.Errorf("cluster: restore: %w", err))
	}
	if err := f.Close(); err != nil {
		return fail(fmt.Errorf("cluster: restore: %w", err))
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		os.Remove(path + ".tmp")
		return "", "", 0, fmt.Errorf("cluster: restore: %w", err)
	}
	return id, path, size, nil
}

// removeStaleUploads removes the upload files of dir that a crash left.
func (n *Node) removeStaleUploads(dir string) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		info, err := e.Info()
		if err != nil || time.Since(info.ModTime()) < staleUpload {
			continue
		}
		path := filepath.Join(dir, e.Name())
		if err := os.Remove(path); err != nil {
			n.log.Warn("cannot remove a stale uploaded backup", "path", path, "error", err)
		} else {
			n.log.Info("removed a stale uploaded backup", "path", path)
		}
	}
}

// removeUpload removes an upload file, which the seeding replica may have
// removed already (when it holds it).
func (n *Node) removeUpload(id string) {
	path := filepath.Join(n.cfg.DataDir, restoresDir, id+".snap")
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		n.log.Warn("cannot remove an uploaded backup", "path", path, "error", err)
	}
}

func newUploadID() string {
	var rnd [12]byte
	_, _ = rand.Read(rnd[:])
	return hex.EncodeToString(rnd[:])
}

// createRestored creates the channel record of a restore on the meta
// leader.
func (n *Node) createRestored(ctx context.Context, req api.CreateChannelRequest, src fsm.RestoreSource) (api.Channel, error) {
	var ch api.Channel
	err := n.route.do(ctx, "create_restored", func(ctx context.Context) (err error) {
		ch, err = n.createChannelFrom(ctx, req, &src)
		return err
	}, func(ctx context.Context, re *shard.RedirectError) (err error) {
		ch, err = n.route.createRestored(ctx, re, req, src)
		return n.seeMetaWrite(ctx, err)
	})
	return ch, err
}

type createRestoredCall struct {
	Request api.CreateChannelRequest `json:"request"`
	Source  fsm.RestoreSource        `json:"source"`
}

// createRestored (rcCreateRestored): head the JSON of createRestoredCall;
// answer the JSON of the api.Channel created.
func (r *router) createRestored(ctx context.Context, re *shard.RedirectError, req api.CreateChannelRequest, src fsm.RestoreSource) (api.Channel, error) {
	var ch api.Channel
	err := r.leaderJSON(ctx, "create_restored", rcCreateRestored, re, createRestoredCall{Request: req, Source: src}, &ch)
	return ch, err
}

func (r *router) serveCreateRestored(ctx context.Context, head []byte, body io.Reader) ([]byte, func(io.Writer) error, error) {
	return serveJSON("create-restored", func(ctx context.Context, c createRestoredCall) (any, error) {
		return r.n.createChannelFrom(ctx, c.Request, &c.Source)
	})(ctx, head, body)
}

// awaitRestored waits until channel serves a linearizable read at or
// above index: its seeded replica leads (or a follower it sent the
// snapshot to does) and has the backup's state.
func (n *Node) awaitRestored(ctx context.Context, channel string, index uint64) error {
	ctx, cancel := context.WithTimeout(ctx, restoreServeLimit)
	defer cancel()
	var last error
	for {
		rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
		_, _, applied, err := n.Get(rctx, channel, []byte("restore-probe"), shard.Linearizable)
		rcancel()
		if err == nil && applied >= index {
			return nil
		}
		if err != nil {
			last = err
		} else {
			last = fmt.Errorf("applied %d, below the backup's %d", applied, index)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %v)", ctx.Err(), last)
		case <-n.stop:
			return shard.ErrStopped
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// startRestored starts this node's replica of a restored channel: the
// seeding replica from the backup's snapshot, fetched in the background
// from the node that holds it, any other empty (it joins when the leader
// sends it the snapshot). Called by the reconciler for a replica that does
// not run here.
func (n *Node) startRestored(ch fsm.ChannelRecord) {
	var servers []raft.Server
	seeds := false
	for _, r := range ch.Placement {
		nd, ok := n.meta.fsm.Node(r.NodeID)
		if !ok {
			return
		}
		servers = append(servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(r.ServerID), Address: raft.ServerAddress(nd.ClusterAddr)})
		if r.NodeID == n.cfg.Name && r.ServerID == ch.Restore.ServerID {
			seeds = true
		}
	}
	spec := shard.ReplicaSpec{GroupID: ch.GroupID, Channel: ch.Name, MetaIndex: ch.CreateIndex}
	if !seeds {
		if _, err := n.shards.Ensure(spec); err != nil {
			n.log.Error("start replica", "channel", ch.Name, "group", ch.GroupID, "error", err)
		}
		return
	}
	if _, busy := n.seeding.LoadOrStore(ch.GroupID, true); busy {
		return
	}
	select {
	case <-n.stop:
		n.seeding.Delete(ch.GroupID)
		return
	default:
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		defer n.seeding.Delete(ch.GroupID)
		ctx, cancel := context.WithTimeout(context.Background(), maxCallTimeout)
		defer cancel()
		go func() {
			select {
			case <-n.stop:
				cancel()
			case <-ctx.Done():
			}
		}()
		src := *ch.Restore
		body, err := n.fetchRestore(ctx, src)
		if errors.Is(err, ErrUploadGone) {
			// Its restore ended: this replica was placed here again
			// after the group started (or the restore failed and the
			// channel goes away). It joins empty, as any other.
			spec.Peers = nil
			if _, err := n.shards.Ensure(spec); err != nil {
				n.log.Error("start replica", "channel", ch.Name, "group", ch.GroupID, "error", err)
			}
			return
		}
		if err != nil {
			lvl := hclog.Debug
			if _, told := n.seedTold.LoadOrStore(ch.GroupID, true); !told {
				lvl = hclog.Warn
			}
			n.log.Log(lvl, "cannot fetch the backup to seed a restored channel from; retrying", "channel", ch.Name, "node", src.Node, "error", err)
			return
		}
		n.seedTold.Delete(ch.GroupID)
		defer body.Close()
		start := time.Now()
		_, err = n.shards.Seed(spec, shard.Seed{Index: src.Index, Term: 1, Servers: servers, State: body})
		if err != nil {
			n.log.Error("seed restored channel", "channel", ch.Name, "group", ch.GroupID, "error", err)
			return
		}
		n.log.Info("restored channel seeded", "channel", ch.Name, "group", ch.GroupID, "index", src.Index,
			"bytes", src.Bytes, "duration", time.Since(start))
		if src.Node == n.cfg.Name {
			n.removeUpload(src.ID)
		}
		// A recovered channel's old group (recover.go): its replica here
		// was retired for the seed and goes now.
		for _, g := range ch.RetiredGroups {
			if err := n.shards.Remove(g); err != nil {
				n.log.Error("remove a retired replica", "channel", ch.Name, "group", g, "error", err)
			}
			n.seeding.Delete(g)
		}
	}()
}

// fetchRestore opens the uploaded snapshot src names: a local file, or a
// call to the node that holds it.
func (n *Node) fetchRestore(ctx context.Context, src fsm.RestoreSource) (io.ReadCloser, error) {
	if src.Node == n.cfg.Name {
		return n.openUpload(src.ID)
	}
	nd, ok := n.meta.fsm.Node(src.Node)
	if !ok {
		return nil, fmt.Errorf("%w: %q holds the backup", ErrNodeNotFound, src.Node)
	}
	ans, err := n.route.longCall(ctx, "restore_fetch", nd.ClusterAddr, rcRestoreFetch, []byte(src.ID))
	if err != nil {
		return nil, err
	}
	if ans.body == nil {
		return nil, fmt.Errorf("cluster: restore fetch from %s: no body", src.Node)
	}
	return ans.body, nil
}

func (n *Node) openUpload(id string) (*os.File, error) {
	if _, err := hex.DecodeString(id); err != nil || id == "" {
		return nil, fmt.Errorf("%w: restore id %q", ErrInvalidRequest, id)
	}
	f, err := os.Open(filepath.Join(n.cfg.DataDir, restoresDir, id+".snap"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s on node %s", ErrUploadGone, id, n.cfg.Name)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: uploaded backup %s: %v", ErrRepairSource, id, err)
	}
	return f, nil
}

// restoreFetch (rcRestoreFetch): head the restore id; the answer body is
// the uploaded snapshot stream.
func (r *router) serveRestoreFetch(_ context.Context, head []byte, _ io.Reader) ([]byte, func(io.Writer) error, error) {
	f, err := r.n.openUpload(string(head))
	if err != nil {
		return nil, nil, err
	}
	return nil, func(w io.Writer) error {
		defer f.Close()
		_, err := io.Copy(w, f)
		return err
	}, nil
}
