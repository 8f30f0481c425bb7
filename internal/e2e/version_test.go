package e2e

import (
	"fmt"
	"testing"
	"time"

	"github.com/shardnet/shardnet/fsm"
	"github.com/shardnet/shardnet/internal/testcluster"
)

// TestClusterVersionIsRaised: in a cluster whose nodes all run this binary,
// the meta leader raises the cluster version to this binary's, and every
// node shows it in GET /v1/status, with each node's supported version in
// GET /v1/nodes.
func TestClusterVersionIsRaised(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{Core: 3})
	ctx := ctxT(t)
	c.WaitFor(10*time.Second, func() error {
		for i := range c.Nodes {
			st, err := c.Client(i).Status(ctx)
			if err != nil {
				return err
			}
			if st.ClusterVersion != fsm.Version || st.SupportedVersion != fsm.Version {
				return fmt.Errorf("%s: cluster version %d, supported %d; want both %d", c.Nodes[i].Name, st.ClusterVersion, st.SupportedVersion, fsm.Version)
			}
		}
		return nil
	})
	nodes, err := c.Client(0).Nodes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(nodes) != 3 {
		t.Fatalf("%d nodes", len(nodes))
	}
	for _, nd := range nodes {
		if nd.SupportedVersion != fsm.Version {
			t.Fatalf("node %s supports version %d, want %d", nd.ID, nd.SupportedVersion, fsm.Version)
		}
	}
}
