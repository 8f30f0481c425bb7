package main

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
)

// devStateFile, in a dev dir kept with -data-dir, holds what a later run of
// shardnet dev must reuse for the nodes to find their data usable: the
// ports their Raft configurations and gossip name them by, the operator
// token and the keys.
const devStateFile = "dev.json"

type devState struct {
	Format       int    `json:"format"`
	Token        string `json:"token"`
	ClusterKey   []byte `json:"cluster_key"`
	GossipKey    []byte `json:"gossip_key"`
	GossipPorts  []int  `json:"gossip_ports"`
	ClusterPorts []int  `json:"cluster_ports"`
}

// loadDevState reads dir's dev.json, or returns an empty state when there
// is none. A state for another number of nodes is refused: the nodes'
// data would not match.
func loadDevState(dir string, nodes int) (devState, error) {
	b, err := os.ReadFile(filepath.Join(dir, devStateFile))
	if errors.Is(err, os.ErrNotExist) {
		return devState{Format: 1}, nil
	}
	if err != nil {
		return devState{}, fmt.Errorf("read the dev state: %w", err)
	}
	var st devState
	if err := json.Unmarshal(b, &st); err != nil || st.Format != 1 {
		return devState{}, fmt.Errorf("%s is not a dev state this release knows (format %d, %v): remove the dir to start afresh", filepath.Join(dir, devStateFile), st.Format, err)
	}
	if len(st.GossipPorts) != nodes || len(st.ClusterPorts) != nodes {
		return devState{}, fmt.Errorf("%s is a dev cluster of %d nodes, not %d: give the same -core and -resource, or another -data-dir", dir, len(st.GossipPorts), nodes)
	}
	for i := range nodes {
		for _, p := range []int{st.GossipPorts[i], st.ClusterPorts[i]} {
			if !portFree(p) {
				return devState{}, fmt.Errorf("port %d, which this dev cluster's nodes know each other by, is in use: stop what holds it (another shardnet dev?)", p)
			}
		}
	}
	return st, nil
}

// fill draws what the state does not hold yet.
func (st *devState) fill(nodes int) error {
	if st.Token == "" {
		var b [12]byte
		_, _ = rand.Read(b[:])
		st.Token = hex.EncodeToString(b[:])
	}
	// Keys of their own, never derived from the token (docs/security.md
	// "Secrets").
	for _, k := range []*[]byte{&st.ClusterKey, &st.GossipKey} {
		if len(*k) == 0 {
			*k = make([]byte, 32)
			_, _ = rand.Read(*k)
		}
	}
	for len(st.GossipPorts) < nodes {
		g, err := freeLoopbackPort()
		if err != nil {
			return err
		}
		c, err := freeLoopbackPort()
		if err != nil {
			return err
		}
		st.GossipPorts = append(st.GossipPorts, g)
		st.ClusterPorts = append(st.ClusterPorts, c)
	}
	return nil
}

// save writes the state (0600: it holds the token and keys).
func (st devState) save(dir string) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create the dev dir: %w", err)
	}
	tmp := filepath.Join(dir, devStateFile+".tmp")
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("write the dev state: %w", err)
	}
	return os.Rename(tmp, filepath.Join(dir, devStateFile))
}

// portFree reports whether a loopback TCP and UDP port can be bound.
func portFree(port int) bool {
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return false
	}
	l.Close()
	u, err := net.ListenPacket("udp", addr)
	if err != nil {
		return false
	}
	u.Close()
	return true
}
