package testcluster

import (
	"net"
	"strconv"
	"time"

	"github.com/shardnet/shardnet/shard/logstore"
	"github.com/shardnet/shardnet/transport"
)

// Network faults between nodes, through the fault hook of each node's
// cluster transport (Options.Faults). They cut or slow the cluster port:
// Raft traffic of every group (the meta group too) and forwarded requests.
// They do NOT touch gossip (memberlist has its own UDP and TCP port) nor the
// HTTP API, so partitioned nodes still see each other alive in gossip and
// clients still reach every node. Rules survive a node's restart.
//
// Disk faults (SlowDisk) go through the logstore.SlowFS under each node's
// Raft log store; they survive restarts too.

// ClusterAddr is node i's cluster (Raft) address; it is stable across
// restarts.
func (c *Cluster) ClusterAddr(i int) string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(c.Nodes[i].clusterPort))
}

func (c *Cluster) faults(i int) *transport.Faults {
	c.t.Helper()
	f := c.Nodes[i].faults
	if f == nil {
		c.t.Fatalf("testcluster: network faults need Options.Faults")
	}
	return f
}

// Cut blocks all traffic between nodes i and j, in both directions: each
// refuses to send to the other (its sessions to the other are closed and
// its dials refused), and since each node only sends on sessions it dialed
// itself, nothing crosses.
func (c *Cluster) Cut(i, j int) {
	c.t.Helper()
	c.faults(i).Block(c.ClusterAddr(j))
	c.faults(j).Block(c.ClusterAddr(i))
}

// Partition replaces every network rule with a partition into the given
// groups of node indexes: nodes in different groups cannot talk. Nodes in no
// group form one more group together. Disk delays stay.
func (c *Cluster) Partition(groups ...[]int) {
	c.t.Helper()
	c.healNetwork()
	side := make([]int, len(c.Nodes))
	for i := range side {
		side[i] = -1
	}
	for g, members := range groups {
		for _, i := range members {
			side[i] = g
		}
	}
	for i := range c.Nodes {
		for j := i + 1; j < len(c.Nodes); j++ {
			if side[i] != side[j] {
				c.Cut(i, j)
			}
		}
	}
}

// Isolate replaces every network rule with a partition that cuts node i off from
// all others.
func (c *Cluster) Isolate(i int) {
	c.t.Helper()
	c.Partition([]int{i})
}

// Delay adds d to the requests nodes i and j send each other (each node
// holds its writes to the other for d), on top of other rules; 0 removes it.
func (c *Cluster) Delay(i, j int, d time.Duration) {
	c.t.Helper()
	c.faults(i).Delay(c.ClusterAddr(j), d)
	c.faults(j).Delay(c.ClusterAddr(i), d)
}

// SlowDisk adds d to every fsync of node i's Raft log store (its WAL, so
// every append it acknowledges), until Heal or SlowDisk(i, 0). The delay
// survives a restart. The meta group's store and the FSM state are not
// slowed.
func (c *Cluster) SlowDisk(i int, d time.Duration) {
	c.t.Helper()
	c.disk(i).SetSyncDelay(d)
}

func (c *Cluster) disk(i int) *logstore.SlowFS {
	c.t.Helper()
	fs := c.Nodes[i].disk
	if fs == nil {
		c.t.Fatalf("testcluster: disk faults need Options.Faults")
	}
	return fs
}

// Freeze makes node i stop answering on its cluster port without closing a
// connection, as SIGSTOP of its process would look to its peers: Raft
// RPCs, node-to-node calls and forwarded requests to it get no answer and
// no error until Thaw (or Heal, or Partition, which start from a healed
// network). Its own groups, gossip and HTTP API keep running.
func (c *Cluster) Freeze(i int) {
	c.t.Helper()
	c.faults(i).Freeze()
}

// Thaw undoes Freeze.
func (c *Cluster) Thaw(i int) {
	c.t.Helper()
	c.faults(i).Thaw()
}

// Heal removes every network rule and every disk delay on every node.
func (c *Cluster) Heal() {
	c.t.Helper()
	c.healNetwork()
	for i := range c.Nodes {
		c.disk(i).SetSyncDelay(0)
	}
}

func (c *Cluster) healNetwork() {
	c.t.Helper()
	for i := range c.Nodes {
		c.faults(i).Heal()
	}
}
