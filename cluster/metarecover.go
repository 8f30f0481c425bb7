package cluster

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/boltdb/bolt"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb"

	"github.com/shardnet/shardnet/fsm"
	"github.com/shardnet/shardnet/shard"
)

// Quorum-loss recovery of the meta group (docs/operations.md "Recovering
// the meta group", cluster/DESIGN.md "Recovering the meta group"). A meta
// group that lost a majority of its voters has no leader to take a
// command, so the recovery runs offline, on a stopped survivor, as
// Consul's peers.json does: RecoverMeta rewrites the survivor's meta Raft
// state with hashicorp/raft's RecoverCluster (every entry of its log is
// applied, committed or not, and a snapshot holding the new configuration
// replaces the log), so that on start it elects itself. The lost voters
// are fenced:
//
//   - they are left out of the new configuration, and every node's voter
//     check refuses the meta RPCs of a node that is no voter
//     (shard.VoterCheck): the survivor never adopts a returning node's term
//     or log;
//   - their server ids are written to <data-dir>/meta/fence.json; the
//     survivor installs them in its transport before its meta group starts
//     (transport.Node.SetFence: refused in every group, by server id, so a
//     node wiped and rejoined under a new incarnation passes while its old
//     incarnation does not), and its meta leader commits them
//     (fsm.FenceServers) so that every node refuses them, now and later;
//   - the leader never adds a fenced id back to the meta group, and every
//     node gossips the fenced ids: a returning node that finds its own id
//     there stops its meta group, logs so, reports it in /v1/status and
//     serves nothing (its meta copy is never current, metaCurrent).
//
// What fencing cannot do: two lost voters that come back together with
// their old data while the survivors are out of their reach still form a
// majority of the OLD configuration between them. Nothing of the recovery
// reaches them; only the operator can keep them away (wipe their data dirs
// first), as with every offline recovery (Consul, etcd).

// fenceFile is the survivor's record of a meta recovery, in the meta dir.
const fenceFile = "fence.json"

// metaFence is the content of fenceFile.
type metaFence struct {
	Format int      `json:"format"`
	Fenced []string `json:"fenced"`
	Voters []string `json:"voters"`
	Index  uint64   `json:"index"` // the recovered log's last index
	Term   uint64   `json:"term"`
	At     string   `json:"at"`
}

// MetaRecoverOptions drive RecoverMeta.
type MetaRecoverOptions struct {
	DataDir string
	// Voters are the node ids of the survivors; empty is this node alone.
	// Each must run the same recovery with the same Voters.
	Voters []string
	// Confirm must be set for anything to change; without it RecoverMeta
	// prints what it found and what it would do.
	Confirm bool
	Out     io.Writer
	Logger  hclog.Logger
}

// ErrMetaRecoverUnconfirmed is what RecoverMeta returns after printing its
// plan when MetaRecoverOptions.Confirm is not set.
var ErrMetaRecoverUnconfirmed = errors.New("cluster: not confirmed: nothing changed")

// RecoverMeta recovers the meta group of the stopped node whose data dir is
// o.DataDir (above).
func RecoverMeta(o MetaRecoverOptions) error {
	if o.Out == nil {
		o.Out = io.Discard
	}
	if o.Logger == nil {
		o.Logger = hclog.NewNullLogger()
	}
	metaDir := filepath.Join(o.DataDir, "meta")
	dbPath := filepath.Join(metaDir, "raft.db")
	if _, err := os.Stat(dbPath); err != nil {
		return fmt.Errorf("cluster: no meta state in %s: %w", o.DataDir, err)
	}
	b, err := os.ReadFile(filepath.Join(o.DataDir, "node.json"))
	if err != nil {
		return fmt.Errorf("cluster: read the node's identity: %w", err)
	}
	var id identity
	if err := json.Unmarshal(b, &id); err != nil {
		return fmt.Errorf("cluster: read the node's identity: %w", err)
	}
	self := shard.ServerIDFor(id.NodeID, id.Incarnation)
	// A running node holds bolt's lock on its meta log: wait for it
	// briefly, then refuse.
	store, err := raftboltdb.New(raftboltdb.Options{Path: dbPath, BoltOptions: &bolt.Options{Timeout: time.Second}})
	if err != nil {
		if errors.Is(err, bolt.ErrTimeout) {
			return fmt.Errorf("cluster: %s is locked: node %s is running; stop it first", dbPath, id.NodeID)
		}
		return fmt.Errorf("cluster: open the meta log: %w", err)
	}
	defer store.Close()
	logger := o.Logger.Named("meta").Named("raft")
	snaps, err := shard.NewSnapshotStore(vfs.Default, metaDir, 2, logger)
	if err != nil {
		return fmt.Errorf("cluster: meta snapshots: %w", err)
	}
	conf := metaTiming(shard.RaftTiming{}).RaftConfig(self, logger)
	_, trans := raft.NewInmemTransport("")
	defer trans.Close()

	// What there is.
	term, err := store.GetUint64([]byte("CurrentTerm"))
	if err != nil && !errors.Is(err, raftboltdb.ErrKeyNotFound) {
		return fmt.Errorf("cluster: read the current term: %w", err)
	}
	lastIndex, lastTerm, err := lastEntry(store, snaps)
	if err != nil {
		return err
	}
	current, err := raft.GetConfiguration(metaTiming(shard.RaftTiming{}).RaftConfig(self, logger), fsm.NewMeta(), store, store, snaps, trans)
	if err != nil {
		return fmt.Errorf("cluster: read the meta configuration: %w", err)
	}
	fmt.Fprintf(o.Out, "Node %s (server id %s), data dir %s\n", id.NodeID, self, o.DataDir)
	fmt.Fprintf(o.Out, "Meta log: last index %d, last term %d; current term %d\n", lastIndex, lastTerm, term)
	fmt.Fprintln(o.Out, "Meta configuration:")
	for _, s := range current.Servers {
		fmt.Fprintf(o.Out, "  %-8s %s at %s\n", strings.ToLower(s.Suffrage.String()), s.ID, s.Address)
	}

	// What it becomes.
	voters := o.Voters
	if len(voters) == 0 {
		voters = []string{id.NodeID}
	}
	if !slices.Contains(voters, id.NodeID) {
		return fmt.Errorf("cluster: -voters %v leaves out this node (%s): run the recovery on a survivor", voters, id.NodeID)
	}
	next, fenced, err := recoveredConfiguration(current, voters, self)
	if err != nil {
		return err
	}
	fmt.Fprintln(o.Out, "Recovered configuration:")
	for _, s := range next.Servers {
		fmt.Fprintf(o.Out, "  %-8s %s at %s\n", strings.ToLower(s.Suffrage.String()), s.ID, s.Address)
	}
	fmt.Fprintf(o.Out, "Fenced (removed for good, refused by every node): %v\n", fenced)
	fmt.Fprintf(o.Out, "Every entry of this node's meta log up to index %d becomes committed, including\n"+
		"an uncommitted tail the lost voters may never have had: meta writes that were answered\n"+
		"503 outcome_unknown may appear, and meta writes only the lost voters had are gone.\n", lastIndex)
	if len(voters) > 1 {
		fmt.Fprintf(o.Out, "Run the same command, with the same -voters, on each of %v before starting any of them.\n", voters)
	}
	if !o.Confirm {
		fmt.Fprintln(o.Out, "Nothing changed: add -i-understand-data-loss to recover.")
		return ErrMetaRecoverUnconfirmed
	}

	// The fence first: a node that starts with the new configuration must
	// already refuse the old ids. An earlier recovery's ids stay fenced.
	prev, err := loadFence(o.DataDir)
	if err != nil {
		return err
	}
	if prev != nil {
		for _, id := range prev.Fenced {
			if !slices.Contains(fenced, id) && raft.ServerID(id) != self {
				fenced = append(fenced, id)
			}
		}
		slices.Sort(fenced)
	}
	fence := metaFence{Format: 1, Fenced: fenced, Voters: voters, Index: lastIndex, Term: lastTerm,
		At: time.Now().UTC().Format(time.RFC3339)}
	if err := writeFence(metaDir, fence); err != nil {
		return err
	}
	if err := raft.RecoverCluster(conf, fsm.NewMeta(), store, store, snaps, trans, next); err != nil {
		return fmt.Errorf("cluster: recover the meta group: %w", err)
	}
	fmt.Fprintf(o.Out, "Recovered: the meta group is %v at index %d. Start the node(s); it elects itself.\n", voters, lastIndex)
	fmt.Fprintln(o.Out, "Lost nodes that come back with their old data are refused: wipe their data dirs and let them rejoin.")
	return nil
}

// lastEntry returns the index and term of the last entry of the meta log,
// or of the latest snapshot when the log holds nothing above it.
func lastEntry(logs raft.LogStore, snaps raft.SnapshotStore) (uint64, uint64, error) {
	var index, term uint64
	if list, err := snaps.List(); err != nil {
		return 0, 0, fmt.Errorf("cluster: list meta snapshots: %w", err)
	} else if len(list) > 0 {
		index, term = list[0].Index, list[0].Term
	}
	last, err := logs.LastIndex()
	if err != nil {
		return 0, 0, fmt.Errorf("cluster: read the meta log: %w", err)
	}
	if last > index {
		var l raft.Log
		if err := logs.GetLog(last, &l); err != nil {
			return 0, 0, fmt.Errorf("cluster: read meta entry %d: %w", last, err)
		}
		index, term = l.Index, l.Term
	}
	return index, term, nil
}

// recoveredConfiguration is current with voters (node ids) as its only
// voters and its non-voters kept; it returns the server ids of the voters
// it leaves out. Every voter must be in current, this node (self) included.
func recoveredConfiguration(current raft.Configuration, voters []string, self raft.ServerID) (raft.Configuration, []string, error) {
	var next raft.Configuration
	var fenced []string
	found := map[string]bool{}
	for _, s := range current.Servers {
		node := shard.NodeOf(s.ID)
		switch {
		case slices.Contains(voters, node):
			if node == shard.NodeOf(self) && s.ID != self {
				return next, nil, fmt.Errorf("cluster: the configuration holds %s, not this node's server id %s", s.ID, self)
			}
			s.Suffrage = raft.Voter
			next.Servers = append(next.Servers, s)
			found[node] = true
		case s.Suffrage == raft.Voter:
			fenced = append(fenced, string(s.ID))
		default:
			next.Servers = append(next.Servers, s) // a non-voter, not lost
		}
	}
	for _, v := range voters {
		if !found[v] {
			return next, nil, fmt.Errorf("cluster: node %s is not in the meta configuration", v)
		}
	}
	slices.Sort(fenced)
	return next, fenced, nil
}

func writeFence(dir string, f metaFence) error {
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	path := filepath.Join(dir, fenceFile)
	if err := writeFileAtomic(path, b, 0o644); err != nil {
		return fmt.Errorf("cluster: write %s: %w", path, err)
	}
	return nil
}

// loadFence reads the fence a meta recovery left in this node's data dir
// (none: nil).
func loadFence(dataDir string) (*metaFence, error) {
	path := filepath.Join(dataDir, "meta", fenceFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	} else if err != nil {
		return nil, fmt.Errorf("cluster: read %s: %w", path, err)
	}
	var f metaFence
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("cluster: read %s: %w", path, err)
	}
	if f.Format != 1 {
		return nil, fmt.Errorf("cluster: %s: unknown format %d", path, f.Format)
	}
	return &f, nil
}
