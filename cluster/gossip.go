package cluster

import (
	"encoding/json"
	"fmt"
	"net"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/memberlist"
)

// nodeMeta is what a node tells the others through gossip. It is advice:
// the meta leader turns it into registry entries; nobody acts on it alone
// except the one-time meta bootstrap.
type nodeMeta struct {
	ID          string `json:"id"`
	ServerID    string `json:"sid"`
	Role        string `json:"role"`
	Zone        string `json:"zone,omitempty"`
	ClusterAddr string `json:"cl"`
	HTTPAddr    string `json:"http"`
	DiskBytes   uint64 `json:"disk,omitempty"`
	MaxReplicas int    `json:"maxr,omitempty"`
	Operator    string `json:"op,omitempty"`
	ServeData   bool   `json:"sd,omitempty"`
	DiskFree    uint64 `json:"free,omitempty"` // the data dir's file system
	DataBytes   uint64 `json:"used,omitempty"` // the data dir
	Stake       uint64 `json:"stake,omitempty"`
	ClusterID   string `json:"cid,omitempty"`  // set once the node's meta FSM knows it
	MetaIndex   uint64 `json:"midx,omitempty"` // the node's meta log last index, for promotion
	HasState    bool   `json:"hs,omitempty"`   // has meta Raft state: never bootstrap with it
	// Version is the highest command version the node supports
	// (fsm.Version); nodes of version 1 do not send it.
	Version int `json:"ver,omitempty"`
	// Leaving is set once the node agreed to leave the cluster (node
	// leave, drain.go): the member is left, not alive or dead, until a
	// restart clears it. A graceful shutdown does not set it: a restart
	// is not a leave.
	Leaving bool `json:"lv,omitempty"`
	// Fence are server ids a meta recovery fenced, comma-separated
	// (metafence.go; a string keeps nodeMeta comparable): a node that
	// finds its own there stops its meta group.
	Fence string `json:"fence,omitempty"`
}

// member is one gossip member as this node last heard of it.
type member struct {
	meta       nodeMeta
	gossipAddr string
	state      memberlist.NodeStateType
}

// gossip wraps memberlist: it publishes our nodeMeta and keeps the latest
// view of every member, poking the node when something changes.
type gossip struct {
	ml      *memberlist.Memberlist
	log     hclog.Logger
	keys    *keyring // nil: gossip is not encrypted
	addrStr string   // our gossip address; memberlist's LocalNode() races with UpdateNode

	mu      sync.Mutex
	self    nodeMeta
	members map[string]member
	poke    chan struct{}
}

func newGossip(cfg *Config, self nodeMeta, poke chan struct{}) (*gossip, error) {
	g := &gossip{log: cfg.Logger.Named("gossip"), self: self, members: map[string]member{}, poke: poke}
	var mc *memberlist.Config
	if cfg.LocalGossip {
		mc = memberlist.DefaultLocalConfig()
	} else {
		mc = memberlist.DefaultLANConfig()
	}
	mc.Name = cfg.Name
	mc.BindAddr = cfg.BindAddr
	mc.BindPort = cfg.GossipPort
	mc.AdvertiseAddr = cfg.Advertise
	mc.AdvertisePort = cfg.GossipPort
	mc.Delegate = g
	mc.Events = g
	mc.Logger = g.log.StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true, ForceLevel: hclog.Debug})
	// Gossip has its own keys, never derived from the cluster key or a
	// token, so that they can be rotated while the cluster runs (keyring.go).
	keys, err := openKeyring(cfg.DataDir, cfg.GossipKey, g.log)
	if err != nil {
		return nil, err
	}
	if keys != nil {
		g.keys = keys
		mc.Keyring = keys.kr
		// Both default to true; said here because the trust model
		// (docs/security.md "Gossip port") relies on them: a message that
		// is not encrypted with an installed key is dropped.
		mc.GossipVerifyIncoming, mc.GossipVerifyOutgoing = true, true
	} else {
		g.log.Warn("no gossip key: gossip is neither encrypted nor authenticated; anyone who reaches the gossip port can join it (-encrypt-file, $SHARDNET_GOSSIP_KEY)")
	}
	if cfg.tweakGossip != nil {
		cfg.tweakGossip(mc)
	}
	ml, err := memberlist.Create(mc)
	if err != nil {
		return nil, fmt.Errorf("cluster: start gossip on %s:%d: %w", cfg.BindAddr, cfg.GossipPort, err)
	}
	g.ml = ml
	n := ml.LocalNode()
	g.addrStr = net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port)))
	return g, nil
}

// addr is the gossip address peers join.
func (g *gossip) addr() string { return g.addrStr }

func (g *gossip) join(addrs []string) error {
	if len(addrs) == 0 {
		return nil
	}
	_, err := g.ml.Join(addrs)
	if err != nil {
		return fmt.Errorf("cluster: join %v: %w", addrs, err)
	}
	return nil
}

// update changes our advertised meta and gossips it if it changed.
func (g *gossip) update(f func(*nodeMeta)) {
	g.mu.Lock()
	old := g.self
	f(&g.self)
	changed := old != g.self
	g.mu.Unlock()
	if changed {
		if err := g.ml.UpdateNode(2 * time.Second); err != nil {
			g.log.Debug("gossip update", "error", err)
		}
	}
}

// pushTo exchanges the full gossip state with the member at addr over
// TCP (memberlist's Join does so with a member it already knows), so that
// a change of this node's metadata reaches that member now, not with the
// broadcasts' odds or at the next periodic sync.
func (g *gossip) pushTo(addr string) error {
	if _, err := g.ml.Join([]string{addr}); err != nil {
		return fmt.Errorf("cluster: gossip push to %s: %w", addr, err)
	}
	return nil
}

// snapshot returns every member we know, sorted by id.
func (g *gossip) snapshot() []member {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make([]member, 0, len(g.members))
	for _, m := range g.members {
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].meta.ID < out[j].meta.ID })
	return out
}

// GossipMembers is memberlist's state of each gossip member this node
// knows (alive, suspect; dead and left members are not listed), itself
// included: for tests and debugging.
func (n *Node) GossipMembers() map[string]string {
	out := map[string]string{}
	for _, m := range n.gossip.ml.Members() {
		out[m.Name] = map[memberlist.NodeStateType]string{
			memberlist.StateAlive: "alive", memberlist.StateSuspect: "suspect",
			memberlist.StateDead: "dead", memberlist.StateLeft: "left",
		}[m.State]
	}
	return out
}

func (g *gossip) leave() {
	if err := g.ml.Leave(2 * time.Second); err != nil {
		g.log.Debug("gossip leave", "error", err)
	}
	_ = g.ml.Shutdown()
}

func (g *gossip) shutdown() { _ = g.ml.Shutdown() }

// --- memberlist.Delegate ---

func (g *gossip) NodeMeta(limit int) []byte {
	g.mu.Lock()
	b, _ := json.Marshal(g.self)
	g.mu.Unlock()
	if len(b) > limit {
		g.log.Error("gossip metadata too large", "bytes", len(b), "limit", limit)
		return nil
	}
	return b
}

func (g *gossip) NotifyMsg([]byte)                           {}
func (g *gossip) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (g *gossip) LocalState(join bool) []byte                { return nil }
func (g *gossip) MergeRemoteState(buf []byte, join bool)     {}

// --- memberlist.EventDelegate ---

// The state of a member is the event's, not n.State: memberlist keeps a
// member's state in its own nodeState and never sets Node.State, so every
// member read as alive whatever happened to it. A leave event is a member
// memberlist declared dead, or one that shut down gracefully: both are
// absence (a restart is not a leave). A member that announced it leaves
// the cluster (nodeMeta.Leaving) is left, whatever the event.
func (g *gossip) NotifyJoin(n *memberlist.Node)   { g.record(n, memberlist.StateAlive) }
func (g *gossip) NotifyLeave(n *memberlist.Node)  { g.record(n, memberlist.StateDead) }
func (g *gossip) NotifyUpdate(n *memberlist.Node) { g.record(n, memberlist.StateAlive) }

func (g *gossip) record(n *memberlist.Node, state memberlist.NodeStateType) {
	var meta nodeMeta
	if err := json.Unmarshal(n.Meta, &meta); err != nil || meta.ID == "" {
		g.log.Warn("ignoring gossip member with bad metadata", "member", n.Name)
		return
	}
	if meta.ID != n.Name {
		// Every node gossips under its own id. Metadata under another
		// id would let one member speak for another in the registry;
		// memberlist itself keeps one address per name.
		g.log.Warn("ignoring gossip member whose metadata names another node", "member", n.Name, "claims", meta.ID)
		return
	}
	if meta.Leaving {
		state = memberlist.StateLeft
	}
	g.mu.Lock()
	g.members[meta.ID] = member{meta: meta, gossipAddr: net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port))), state: state}
	g.mu.Unlock()
	select {
	case g.poke <- struct{}{}:
	default:
	}
}
