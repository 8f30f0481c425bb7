package main

import (
	"context"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/shardnet/shardnet/api"
)

var nodeCommands = map[string]command{
	"get":    {"describe a node: state, replicas left, what cannot move", runNodeGet},
	"drain":  {"move every replica off a node (-cancel stops)", runNodeDrain},
	"leave":  {"make a node that holds no replica leave the cluster", runNodeLeave},
	"remove": {"forget a dead or left node for good", runNodeRemove},
}

// runNode: shardnet node get|drain|leave|remove
func runNode(ctx context.Context, c *cli, args []string) int {
	return subcommands(ctx, c, "node", nodeCommands, args)
}

func runNodeGet(ctx context.Context, c *cli, args []string) int {
	f := c.newFlags("node get", "ID", "Describe a node: its state, the channels still placed on it, whether a drain is done, and the replicas that cannot be moved, with why.").withJSON()
	pos, code, ok := f.parse(args, 1, 1)
	if !ok {
		return code
	}
	nd, err := f.client().Node(ctx, pos[0])
	if err != nil {
		return c.fail(err)
	}
	if f.json {
		return c.printJSON(nd)
	}
	c.printNode(nd)
	return 0
}

func (c *cli) printNode(nd api.NodeDetail) {
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	for _, row := range [][2]string{
		{"Node", nd.ID}, {"Role", nd.Role}, {"Zone", orDash(nd.Zone)}, {"State", nd.State},
		{"Meta voter", fmt.Sprint(nd.MetaVoter)}, {"Replicas left", fmt.Sprint(nd.ReplicasLeft)},
		{"Channels", orDash(strings.Join(nd.Channels, ", "))}, {"Drained", fmt.Sprint(nd.Drained)},
	} {
		fmt.Fprintf(tw, "%s:\t%s\n", row[0], row[1])
	}
	for _, b := range nd.Blocked {
		fmt.Fprintf(tw, "Cannot move:\t%s: %s\n", b.Channel, oneLine(b.Reason))
	}
	_ = tw.Flush()
}

func runNodeDrain(ctx context.Context, c *cli, args []string) int {
	f := c.newFlags("node drain", "ID",
		"Drain a node: it takes no new replica and the meta leader moves every replica off it, a few at a time (-repair-per-node, -repair-max), under load. It waits and prints the replicas left until the node is drained; then `shardnet node leave ID` takes it out.").withJSON()
	cancel := f.Bool("cancel", false, "stop the drain: the node takes replicas again (those already moved stay where they are)")
	wait := f.Duration("wait", 30*time.Minute, "wait up to this long for the drain to finish (0: start it and return)")
	pos, code, ok := f.parse(args, 1, 1)
	if !ok {
		return code
	}
	client := f.client()
	id := pos[0]
	var nd api.NodeDetail
	var err error
	if *cancel {
		nd, err = client.CancelDrain(ctx, id)
	} else {
		nd, err = client.DrainNode(ctx, id)
	}
	if err != nil {
		return c.fail(err)
	}
	if !*cancel && *wait > 0 {
		ctx, stop := context.WithTimeout(ctx, *wait)
		defer stop()
		left := -1
		for !nd.Drained {
			if nd.ReplicasLeft != left {
				left = nd.ReplicasLeft
				fmt.Fprintf(c.stderr, "%s: %d replicas left\n", id, left)
				for _, b := range nd.Blocked {
					fmt.Fprintf(c.stderr, "  cannot move %s: %s\n", b.Channel, oneLine(b.Reason))
				}
			}
			select {
			case <-ctx.Done():
				return c.fail(fmt.Errorf("node %s not drained after %s: %d replicas left", id, *wait, nd.ReplicasLeft))
			case <-time.After(time.Second):
			}
			if nd, err = client.Node(ctx, id); err != nil {
				return c.fail(err)
			}
			if nd.State != "draining" {
				return c.fail(fmt.Errorf("node %s is %s: the drain stopped", id, nd.State))
			}
		}
	}
	if f.json {
		return c.printJSON(nd)
	}
	c.printNode(nd)
	return 0
}

// leaveRetryFor bounds how long `node leave` sends a leave again.
const leaveRetryFor = time.Minute

func runNodeLeave(ctx context.Context, c *cli, args []string) int {
	f := c.newFlags("node leave", "[ID]",
		"Make a node leave the cluster gracefully: it must hold no replica (drain it first); it leaves gossip, its process stops, and the registry shows it left. Without ID: the node you talk to.")
	pos, code, ok := f.parse(args, 0, 1)
	if !ok {
		return code
	}
	client := f.client()
	var id string
	if len(pos) == 1 {
		id = pos[0]
	} else {
		st, err := client.Status(ctx)
		if err != nil {
			return c.fail(err)
		}
		id = st.NodeID
	}
	// A leave is idempotent: one the meta leader did not record in time
	// (503 not_ready) or whose answer was lost (503 timeout) is sent
	// again, for up to leaveRetryFor.
	until := time.Now().Add(leaveRetryFor)
	for {
		err := client.LeaveNode(ctx, id)
		if err == nil {
			break
		}
		if !(api.IsRetryable(err) || api.IsTimeout(err)) || time.Now().After(until) {
			return c.fail(err)
		}
		fmt.Fprintf(c.stderr, "%s: %s; sending the leave again\n", id, oneLine(err.Error()))
		select {
		case <-ctx.Done():
			return c.fail(err)
		case <-time.After(time.Second):
		}
	}
	fmt.Fprintf(c.stdout, "Node %s is leaving.\n", id)
	return 0
}

func runNodeRemove(ctx context.Context, c *cli, args []string) int {
	f := c.newFlags("node remove", "ID",
		"Forget a dead or left node for good: the replicas still placed on it are placed elsewhere, its meta vote is removed (refused when the meta group's quorum needs it), and the registry drops it. A live node is refused.").withJSON()
	pos, code, ok := f.parse(args, 1, 1)
	if !ok {
		return code
	}
	out, err := f.client().RemoveNode(ctx, pos[0])
	if err != nil {
		return c.fail(err)
	}
	if f.json {
		return c.printJSON(out)
	}
	fmt.Fprintf(c.stdout, "Node %s removed; %d replicas placed elsewhere (%s); meta vote removed: %v.\n", out.ID, len(out.Moved), orDash(strings.Join(out.Moved, ", ")), out.MetaVoteRemoved)
	return 0
}
