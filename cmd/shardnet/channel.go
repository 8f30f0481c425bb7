package main

import (
	"context"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/shardnet/shardnet/api"
)

var channelCommands = map[string]command{
	"create":   {"create a channel", runChannelCreate},
	"ls":       {"list channels", runChannelList},
	"get":      {"describe a channel: placement, leader, voters, applied indexes", runChannelGet},
	"rm":       {"delete a channel and its data", runChannelRemove},
	"repair":   {"rebuild a replica a hash check marked corrupt from the leader's state", runChannelRepair},
	"token":    {"issue, list and revoke a channel's tokens", runChannelToken},
	"sign":     {"print a link to a key that works without a token until it expires", runChannelSign},
	"settings": {"set a channel's public prefixes and CORS", runChannelSettings},
	"backup":   {"write a backup of a channel to a file", runChannelBackup},
	"restore":  {"create a channel from a backup file", runChannelRestore},
	"recover":  {"re-form a channel that lost a majority of its replicas from a survivor", runChannelRecover},
	"scale":    {"change a channel's replica count, quota or chunk size and wait until its group converges", runChannelScale},
}

// runChannel: shardnet channel create|ls|get|rm|repair|token|sign|settings|backup|restore|recover|scale
func runChannel(ctx context.Context, c *cli, args []string) int {
	return subcommands(ctx, c, "channel", channelCommands, args)
}

func runChannelCreate(ctx context.Context, c *cli, args []string) int {
	f := c.newFlags("channel create", "NAME",
		"Create a channel (NAME: 1 to 63 of a-z, 0-9 and -). It prints the placement and, once, the channel token.").withJSON()
	var req api.CreateChannelRequest
	var zones, nodes listFlag
	f.IntVar(&req.Replicas, "replicas", 0, "replicas, 1 to 7 (default 3, or one per -nodes entry)")
	f.BoolVar(&req.Dedicated, "dedicated", false, "place on nodes no other channel uses")
	f.Var(&zones, "zones", "only place in these zones (comma-separated)")
	f.Var(&nodes, "nodes", "pin to these node ids (comma-separated); the first one stands first for the first election, so it leads when it is up")
	f.Uint64Var(&req.QuotaBytes, "quota", 0, "quota in bytes (0: none)")
	var chunkSize sizeFlag
	f.Var(&chunkSize, "chunk-size", "chunk size of the channel's files: 64KiB to 64MiB, a multiple of 64KiB (default 4MiB)")
	wait := f.Duration("wait", 5*time.Second, "wait up to this long for the channel's first leader before printing (0: print at once)")
	pos, code, ok := f.parse(args, 1, 1)
	if !ok {
		return code
	}
	req.Name, req.Zones, req.Nodes, req.ChunkSize = pos[0], zones, nodes, uint64(chunkSize)
	client := f.client()
	ch, err := client.CreateChannel(ctx, req)
	if err != nil {
		return c.fail(err)
	}
	if ch.Leader == "" && *wait > 0 {
		ch = awaitFirstLeader(ctx, client, ch, *wait)
	}
	if f.json {
		return c.printJSON(ch)
	}
	c.printChannel(ch)
	if ch.Token != "" {
		fmt.Fprintf(c.stdout, "\nToken: %s\n(shown once: keep it)\n", ch.Token)
	}
	return 0
}

// awaitFirstLeader polls a channel just created until it has a leader or
// wait is over, and returns what it last saw (the create answer if nothing
// better): a new channel elects within a fraction of a second, and printing
// it before then shows "Leader: -" and "Health: no_leader". The token is
// only in the create answer, so it is carried over.
func awaitFirstLeader(ctx context.Context, client *api.Client, created api.Channel, wait time.Duration) api.Channel {
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	last := created
	for {
		select {
		case <-ctx.Done():
			return last
		case <-tick.C:
		}
		ch, err := client.Channel(ctx, created.Name)
		if err != nil {
			continue
		}
		ch.Token = created.Token
		last = ch
		if ch.Leader != "" {
			return ch
		}
	}
}

func runChannelList(ctx context.Context, c *cli, args []string) int {
	f := c.newFlags("channel ls", "", "List every channel.").withJSON()
	if _, code, ok := f.parse(args, 0, 0); !ok {
		return code
	}
	chs, err := f.client().Channels(ctx)
	if err != nil {
		return c.fail(err)
	}
	if f.json {
		return c.printJSON(chs)
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tGROUP\tREPLICAS\tLEADER\tHEALTH\tKEYS\tBYTES")
	for _, ch := range chs {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%s\t%d\t%d\n",
			ch.Name, ch.GroupID, ch.Replicas, orDash(ch.Leader), orDash(ch.Health), ch.Usage.Keys, ch.Usage.Bytes)
	}
	if err := tw.Flush(); err != nil {
		return c.fail(err)
	}
	return 0
}

func runChannelGet(ctx context.Context, c *cli, args []string) int {
	f := c.newFlags("channel get", "NAME", "Describe a channel: its placement, leader, voters and each replica's applied index.").withJSON()
	pos, code, ok := f.parse(args, 1, 1)
	if !ok {
		return code
	}
	ch, err := f.client().Channel(ctx, pos[0])
	if err != nil {
		return c.fail(err)
	}
	if f.json {
		return c.printJSON(ch)
	}
	c.printChannel(ch)
	return 0
}

func (c *cli) printChannel(ch api.Channel) {
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	rows := [][2]string{
		{"Name", ch.Name}, {"Group", fmt.Sprint(ch.GroupID)}, {"Replicas", fmt.Sprint(ch.Replicas)},
		{"Leader", orDash(ch.Leader)}, {"Voters", orDash(strings.Join(ch.Voters, ", "))},
		{"Health", orDash(ch.Health)}, {"Usage", fmt.Sprintf("%d keys, %d bytes", ch.Usage.Keys, ch.Usage.Bytes)},
	}
	if len(ch.NonVoters) > 0 {
		rows = append(rows, [2]string{"Non-voters", strings.Join(ch.NonVoters, ", ")})
	}
	if ch.Progress != "" {
		rows = append(rows, [2]string{"Progress", ch.Progress})
	}
	if ch.Dedicated {
		rows = append(rows, [2]string{"Dedicated", "yes"})
	}
	if len(ch.Zones) > 0 {
		rows = append(rows, [2]string{"Zones", strings.Join(ch.Zones, ", ")})
	}
	if ch.QuotaBytes > 0 {
		rows = append(rows, [2]string{"Quota", fmt.Sprintf("%d bytes", ch.QuotaBytes)})
	}
	if ch.ChunkSize > 0 {
		rows = append(rows, [2]string{"Chunk size", fmt.Sprintf("%d bytes", ch.ChunkSize)})
	}
	if st := ch.Settings; st != nil && len(st.PublicPrefixes) > 0 {
		rows = append(rows, [2]string{"Public", strings.Join(st.PublicPrefixes, ", ")})
	}
	if st := ch.Settings; st != nil && st.CORS != nil {
		rows = append(rows, [2]string{"CORS", strings.Join(st.CORS.AllowedOrigins, ", ")})
	}
	for _, r := range rows {
		fmt.Fprintf(tw, "%s:\t%s\n", r[0], r[1])
	}
	_ = tw.Flush()
	fmt.Fprintln(c.stdout)
	tw = tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tSERVER\tROLE\tVOTER\tAPPLIED\tHEALTHY")
	for _, r := range ch.Placement {
		role := orDash(r.State)
		if r.NodeID == ch.Leader {
			role = "leader"
		}
		healthy := fmt.Sprint(r.Healthy)
		if r.HashMismatch {
			healthy = fmt.Sprintf("false (hash mismatch at %d: shardnet channel repair %s -node %s)", r.HashMismatchIndex, ch.Name, r.NodeID)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%v\t%d\t%s\n", r.NodeID, orDash(r.ServerID), role, r.Voter, r.Applied, healthy)
	}
	_ = tw.Flush()
}

func runChannelRepair(ctx context.Context, c *cli, args []string) int {
	f := c.newFlags("channel repair", "NAME -node NODE",
		"Rebuild NODE's replica of channel NAME, which a hash check marked corrupt (hash_mismatch in `channel get`), from the leader's state; it serves again afterwards.")
	node := f.String("node", "", "the node whose replica to rebuild (required)")
	pos, code, ok := f.parse(args, 1, 1)
	if !ok {
		return code
	}
	if *node == "" {
		return c.usageError("channel repair: -node is required")
	}
	res, err := f.client().RepairReplica(ctx, pos[0], *node)
	if err != nil {
		return c.fail(err)
	}
	fmt.Fprintf(c.stdout, "Replica of %s on %s rebuilt at index %d.\n", pos[0], res.Node, res.Applied)
	return 0
}

func runChannelRemove(ctx context.Context, c *cli, args []string) int {
	f := c.newFlags("channel rm", "NAME", "Delete a channel and all its data.")
	pos, code, ok := f.parse(args, 1, 1)
	if !ok {
		return code
	}
	if err := f.client().DeleteChannel(ctx, pos[0]); err != nil {
		return c.fail(err)
	}
	fmt.Fprintf(c.stdout, "Channel %s deleted.\n", pos[0])
	return 0
}
