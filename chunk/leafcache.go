package chunk

import (
	"container/list"
	"sync"
)

// leafCache keeps the block sums (leaf hashes and CRC-32Cs, blocksum.go)
// of recently put or read chunks, each taken from bytes checked against the
// id when it entered, so a verified read checks each block before it
// delivers it, without hashing the whole chunk first. A chunk's sums are a
// function of its id: an entry never goes stale (a corrupt file under the id is caught by them, not
// hidden), so the cache is only bounded, never invalidated.
type leafCache struct {
	mu  sync.Mutex
	max int
	ll  *list.List // front: most recently used; values *leafEntry
	m   map[ID]*list.Element
}

type leafEntry struct {
	id   ID
	sums blockSums
}

func newLeafCache(max int) *leafCache {
	return &leafCache{max: max, ll: list.New(), m: map[ID]*list.Element{}}
}

func (c *leafCache) get(id ID) (blockSums, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[id]
	if !ok {
		return blockSums{}, false
	}
	c.ll.MoveToFront(e)
	return e.Value.(*leafEntry).sums, true
}

func (c *leafCache) add(id ID, sums blockSums) {
	if c.max <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.m[id]; ok {
		c.ll.MoveToFront(e)
		return
	}
	c.m[id] = c.ll.PushFront(&leafEntry{id: id, sums: sums})
	for c.ll.Len() > c.max {
		old := c.ll.Back()
		c.ll.Remove(old)
		delete(c.m, old.Value.(*leafEntry).id)
	}
}
