package shard

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/hashicorp/raft"

	"github.com/shardnet/shardnet/fsm"
)

// Replicas that disagree are noticed (etcd's corruption check; shard/DESIGN.md
// "Replicas that disagree"). Every Config.HashCheckInterval the leader of
// each group proposes an fsm.HashCheck entry; applying it at index I makes
// every replica hash its state as of I, off the apply path (fsm). Each
// replica then compares its hash with its peers' hashes at I (the cluster
// layer asks them: Config.CompareHash) and hands the outcome to
// Replica.HashVerdict. A replica whose hash differs from the one a majority
// of the group's voters computed marks itself corrupt: the mark is written
// to its directory (it survives restarts), logged at error once, counted,
// and from then on the replica serves no read and takes no write
// (ErrReplicaCorrupt) and hands away any leadership it gets, until an
// operator repairs it (Replica.Repair, docs/operations.md).

// DefaultHashCheckInterval is how often a leader proposes a hash check of
// each group it leads, unless Config.HashCheckInterval says otherwise.
const DefaultHashCheckInterval = 5 * time.Minute

const (
	// corruptFile marks a corrupt replica in its dir: a corruptRecord.
	corruptFile   = "CORRUPT"
	corruptFormat = 1
	// hashCheckParallel bounds the hash checks a node proposes at once.
	hashCheckParallel = 8
)

// Corruption is why a replica was marked corrupt.
type Corruption struct {
	Index    uint64    `json:"index"`    // the hash check's log index
	Hash     uint64    `json:"hash"`     // this replica's hash of its state at Index
	Majority uint64    `json:"majority"` // the hash a majority of the voters computed
	Agree    int       `json:"agree"`    // how many voters computed Majority
	At       time.Time `json:"at"`
}

// corruptRecord is the content of corruptFile.
type corruptRecord struct {
	Format int `json:"format"`
	Corruption
}

// HashVerdict is the outcome of comparing a replica's hash at Index with
// its peers'.
type HashVerdict struct {
	Index    uint64
	Hash     uint64 // this replica's
	Voters   int    // voters in the group's configuration
	Answers  int    // voters whose hash at Index is known, this one included
	Majority uint64 // the hash more than half of Voters computed; valid when Decided
	Agree    int    // how many computed Majority
	Decided  bool
	// Disagree lists the server ids of the replicas whose hash differs
	// from Majority.
	Disagree []raft.ServerID
}

// HashVerdict records the outcome of a hash comparison: a replica whose
// hash differs from the majority's is marked corrupt; the peers that
// differ are remembered so that leadership is never handed to them.
func (r *Replica) HashVerdict(v HashVerdict) {
	if r.repairedPast(v.Index) {
		return // about the state a repair replaced
	}
	switch {
	case !v.Decided:
		r.m.metrics.hashCompares.WithLabelValues("undecided").Inc()
		r.m.log.Warn("replica hashes compared without a majority", "channel", r.Channel, "group", r.GroupID,
			"index", v.Index, "voters", v.Voters, "answers", v.Answers)
		return
	case v.Hash != v.Majority:
		r.m.metrics.hashCompares.WithLabelValues("mismatch").Inc()
		r.markCorrupt(Corruption{Index: v.Index, Hash: v.Hash, Majority: v.Majority, Agree: v.Agree, At: time.Now()})
	default:
		r.m.metrics.hashCompares.WithLabelValues("agree").Inc()
	}
	if old := r.disagreeing.Swap(&v.Disagree); len(v.Disagree) > 0 && (old == nil || !slices.Equal(*old, v.Disagree)) {
		r.m.log.Warn("peers' state differs from the majority's", "channel", r.Channel, "group", r.GroupID,
			"index", v.Index, "peers", v.Disagree)
	}
}

// markCorrupt marks the replica corrupt, once.
func (r *Replica) markCorrupt(c Corruption) {
	r.corruptMu.Lock()
	defer r.corruptMu.Unlock()
	if r.corrupt.Load() != nil || c.Index <= r.repaired {
		return
	}
	if err := writeFileSync(r.m.fs, filepath.Join(r.m.replicaDir(r.GroupID), corruptFile), corruptRecord{corruptFormat, c}); err != nil {
		// Still refuse reads in this process.
		r.m.log.Error("cannot record the corrupt mark on disk", "channel", r.Channel, "group", r.GroupID, "error", err)
	}
	r.corrupt.Store(&c)
	r.m.metrics.hashMismatches.Inc()
	r.m.log.Error("this replica's state differs from the majority of its group: it serves no reads until repaired",
		"channel", r.Channel, "group", r.GroupID, "index", c.Index,
		"hash", fmt.Sprintf("%016x", c.Hash), "majority_hash", fmt.Sprintf("%016x", c.Majority), "agree", c.Agree)
	r.handOff()
}

// repairedPast says a repair rebuilt the replica at or after index.
func (r *Replica) repairedPast(index uint64) bool {
	r.corruptMu.Lock()
	defer r.corruptMu.Unlock()
	return index <= r.repaired
}

// Corrupt returns why the replica was marked corrupt, or nil.
func (r *Replica) Corrupt() *Corruption { return r.corrupt.Load() }

// handOff makes a corrupt leader hand its leadership to another replica:
// a leader answers writes (a transaction's gets, CAS outcomes) from its own
// state.
func (r *Replica) handOff() {
	if r.raft.State() != raft.Leader || r.stopped.Load() {
		return
	}
	go func() {
		if err := r.wait(context.Background(), r.raft.LeadershipTransfer()); err != nil {
			r.m.log.Warn("a corrupt leader could not hand its leadership over", "channel", r.Channel, "group", r.GroupID, "error", err)
		}
	}()
}

// errIfCorrupt is the refusal of a corrupt replica, or nil.
func (r *Replica) errIfCorrupt() error {
	if c := r.corrupt.Load(); c != nil {
		return fmt.Errorf("%w: group %d (hash check at index %d)", ErrReplicaCorrupt, r.GroupID, c.Index)
	}
	return nil
}

// disagrees says the latest comparison found the replica id in a state
// other than the majority's.
func (r *Replica) disagrees(id raft.ServerID) bool {
	d := r.disagreeing.Load()
	return d != nil && slices.Contains(*d, id)
}

// loadCorrupt reads a replica's corrupt mark, if any.
func loadCorrupt(fs vfs.FS, dir string) (*Corruption, error) {
	b, err := readFile(fs, filepath.Join(dir, corruptFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var rec corruptRecord
	if err := json.Unmarshal(b, &rec); err != nil {
		return nil, fmt.Errorf("decode %s: %w", corruptFile, err)
	}
	if rec.Format != corruptFormat {
		return nil, fmt.Errorf("%s: unknown format %d", corruptFile, rec.Format)
	}
	return &rec.Corruption, nil
}

// Peers returns the voters of the group other than this replica.
func (r *Replica) Peers() (peers []raft.Server, voters int) {
	f := r.raft.GetConfiguration()
	if f.Error() != nil {
		return nil, 0
	}
	for _, s := range f.Configuration().Servers {
		if s.Suffrage != raft.Voter {
			continue
		}
		voters++
		if s.ID != r.serverID {
			peers = append(peers, s)
		}
	}
	return peers, voters
}

// onHash is the fsm's report of a replica's hash: hand it to the cluster
// layer to compare.
func (m *Manager) onHash(gid, index, hash uint64) {
	if m.cfg.CompareHash == nil {
		return
	}
	if r, ok := m.Replica(gid); ok && !r.stopped.Load() {
		m.cfg.CompareHash(r, index, hash)
	}
}

// hashCheckLoop proposes a hash check of every group this node leads, each
// once every Config.HashCheckInterval, spread over the interval by group
// id. A corrupt leader proposes none and hands its leadership away.
func (m *Manager) hashCheckLoop() {
	defer m.loops.Done()
	every := m.cfg.HashCheckInterval
	tick := min(every/8, time.Second)
	t := time.NewTicker(tick)
	defer t.Stop()
	next := map[uint64]time.Time{}
	sem := make(chan struct{}, hashCheckParallel)
	var wg sync.WaitGroup
	defer wg.Wait()
	told := false
	for {
		select {
		case <-m.stop:
			return
		case <-t.C:
		}
		now := time.Now()
		led := map[uint64]bool{}
		for _, r := range m.Replicas() {
			if r.raft.State() != raft.Leader {
				continue
			}
			led[r.GroupID] = true
			if r.Corrupt() != nil {
				r.handOff()
				continue
			}
			due, ok := next[r.GroupID]
			if !ok {
				// First seen leading: a place in the interval that
				// depends on the group, so groups do not all check at once.
				next[r.GroupID] = now.Add(time.Duration(r.GroupID*0x9e3779b97f4a7c15%uint64(every)) % every)
				continue
			}
			if now.Before(due) {
				continue
			}
			if err := fsm.CheckVersion(fsm.EntryVersion(hashCheckEntry), m.clusterVersion()); err != nil {
				// Older nodes would skip the check and answer no hash:
				// none until every node is upgraded.
				if !told {
					m.log.Info("no hash checks until every node is upgraded", "channel", r.Channel, "group", r.GroupID, "reason", err)
					told = true
				}
				next[r.GroupID] = now.Add(every)
				continue
			}
			select {
			case sem <- struct{}{}:
			case <-m.stop:
				return
			}
			next[r.GroupID] = now.Add(every)
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				m.proposeHashCheck(r, every)
			}()
		}
		for gid := range next {
			if !led[gid] {
				delete(next, gid) // a new leadership starts a new schedule
			}
		}
	}
}

// clusterVersion is the cluster version (Config.ClusterVersion).
func (m *Manager) clusterVersion() int {
	if m.cfg.ClusterVersion == nil {
		return fsm.Version
	}
	return m.cfg.ClusterVersion()
}

var hashCheckEntry = func() []byte {
	b, err := fsm.Encode(&fsm.HashCheck{})
	if err != nil {
		panic(err)
	}
	return b
}()

func (m *Manager) proposeHashCheck(r *Replica, every time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), min(every, 10*time.Second))
	defer cancel()
	if _, err := r.Propose(ctx, hashCheckEntry); err != nil {
		m.log.Debug("could not propose a hash check", "channel", r.Channel, "group", r.GroupID, "error", err)
		return
	}
	m.metrics.hashChecks.Inc()
}

// Repair rebuilds a replica marked corrupt from the snapshot stream of a
// sound replica's state (fsm.Channel.Rebuild: a stream behind this
// replica's applied index is refused with fsm.ErrSnapshotBehind and
// changes nothing) and then clears the mark: the replica serves again.
func (r *Replica) Repair(rc io.ReadCloser) error {
	r.corruptMu.Lock()
	defer r.corruptMu.Unlock()
	if r.corrupt.Load() == nil {
		rc.Close()
		return fmt.Errorf("%w: group %d", ErrNotCorrupt, r.GroupID)
	}
	if err := r.fsm.Rebuild(rc); err != nil {
		return fmt.Errorf("shard: repair group %d: %w", r.GroupID, err)
	}
	dir := r.m.replicaDir(r.GroupID)
	if err := r.m.fs.Remove(filepath.Join(dir, corruptFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("shard: repair group %d: %w", r.GroupID, err)
	}
	if err := syncDir(r.m.fs, dir); err != nil {
		return fmt.Errorf("shard: repair group %d: %w", r.GroupID, err)
	}
	r.repaired = r.fsm.Applied()
	r.corrupt.Store(nil)
	r.m.log.Info("replica rebuilt from a sound replica's state; it serves again",
		"channel", r.Channel, "group", r.GroupID, "applied", r.fsm.Applied())
	return nil
}
