package fsm

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/crc64"
)

// The meta group's hash check (as the channels', hashcheck.go): a
// MetaHashCheck entry at index I makes every replica of the meta group hash
// its state as of I, so that the replicas can compare (package cluster).
// The state is small and lives in memory, so the hash is computed inside
// Apply: CRC-64 of the state's snapshot encoding, whose bytes are
// deterministic (encoding/json sorts map keys).

type metaHash struct {
	index, hash uint64
}

// hashNow records the hash of the state as of index. Called under mu.
func (m *Meta) hashNow(index uint64) *metaHash {
	st := m.st
	st.Applied = index
	b, err := json.Marshal(&st)
	if err != nil {
		panic(fmt.Sprintf("fsm: meta: hash the state at %d: %v", index, err))
	}
	h := metaHash{index: index, hash: crc64.Checksum(b, hashTable)}
	if len(m.hashes) == keepHashes {
		m.hashes = append(m.hashes[:0], m.hashes[1:]...)
	}
	m.hashes = append(m.hashes, h)
	return &h
}

// SetOnHash sets the function told of each hash of the meta state a hash
// check makes, from Apply; call it before the meta group starts.
func (m *Meta) SetOnHash(f func(index, hash uint64)) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.onHash = f
}

// HashAt returns the hash of the meta state as of index, once this replica
// has applied it: ErrHashUnknown when it has no hash of that index, or
// ctx's error.
func (m *Meta) HashAt(ctx context.Context, index uint64) (uint64, error) {
	for {
		m.mu.RLock()
		applied, changed := m.applied, m.changed
		var h *metaHash
		for i := range m.hashes {
			if m.hashes[i].index == index {
				h = &m.hashes[i]
			}
		}
		m.mu.RUnlock()
		if h != nil {
			return h.hash, nil
		}
		if applied >= index {
			return 0, fmt.Errorf("meta index %d: %w", index, ErrHashUnknown)
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
}

// SetZoneForTest changes a node's zone in this replica's state only, with no
// log entry, as a bug or a bad restore could. Tests use it to corrupt one
// replica of the meta group. Not for production use.
func (m *Meta) SetZoneForTest(id, zone string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	n, ok := m.st.Nodes[id]
	if ok {
		cp := *n
		cp.Zone = zone
		m.st.Nodes[id] = &cp
	}
	return ok
}
