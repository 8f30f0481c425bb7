package chunk

import (
	"container/list"
	"sync"
)

// leafCache keeps the leaf hashes of recently put or read chunks, each
// list checked against its id when it entered, so a verified read checks
// each block against its leaf before it delivers it, without hashing the
// whole chunk first. A chunk's leaves are a function of its id: an entry
// never goes stale (a corrupt file under the id is caught by them, not
// hidden), so the cache is only bounded, never invalidated.
type leafCache struct {
	mu  sync.Mutex
	max int
	ll  *list.List // front: most recently used; values *leafEntry
	m   map[ID]*list.Element
}

type leafEntry struct {
	id     ID
	leaves []Digest
}

func newLeafCache(max int) *leafCache {
	return &leafCache{max: max, ll: list.New(), m: map[ID]*list.Element{}}
}

func (c *leafCache) get(id ID) ([]Digest, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[id]
	if !ok {
		return nil, false
	}
	c.ll.MoveToFront(e)
	return e.Value.(*leafEntry).leaves, true
}

func (c *leafCache) add(id ID, leaves []Digest) {
	if c.max <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.m[id]; ok {
		c.ll.MoveToFront(e)
		return
	}
	c.m[id] = c.ll.PushFront(&leafEntry{id: id, leaves: leaves})
	for c.ll.Len() > c.max {
		old := c.ll.Back()
		c.ll.Remove(old)
		delete(c.m, old.Value.(*leafEntry).id)
	}
}
