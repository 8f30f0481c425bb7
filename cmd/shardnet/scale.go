package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/shardnet/shardnet/api"
)

// runChannelScale: shardnet channel scale NAME -replicas N [-quota B]
// [-chunk-size S]. It
// commits the new placement, then follows the group until its voters are
// that placement (or -timeout passes), printing each change it sees.
func runChannelScale(ctx context.Context, c *cli, args []string) int {
	f := c.newFlags("channel scale", "NAME -replicas N",
		"Change channel NAME's replica count (1 to 7; odd counts recommended), quota or chunk size (of the files uploaded from now on), and wait until its group has converged to the new placement.").withJSON()
	replicas := f.Int("replicas", 0, "the new replica count")
	quota := f.Int64("quota", -1, "the new quota in bytes (0: none; -1: unchanged)")
	var chunkSize sizeFlag
	f.Var(&chunkSize, "chunk-size", "the chunk size of files uploaded from now on: 64KiB to 64MiB, a multiple of 64KiB (unset: unchanged)")
	timeout := f.Duration("timeout", 2*time.Minute, "how long to wait for the group to converge (0: do not wait)")
	pos, code, ok := f.parse(args, 1, 1)
	if !ok {
		return code
	}
	var req api.ChangeChannelRequest
	if *replicas != 0 {
		req.Replicas = replicas
	}
	if *quota >= 0 {
		q := uint64(*quota)
		req.QuotaBytes = &q
	}
	if chunkSize != 0 {
		cs := uint64(chunkSize)
		req.ChunkSize = &cs
	}
	if req.Replicas == nil && req.QuotaBytes == nil && req.ChunkSize == nil {
		return c.usageError("channel scale: give -replicas, -quota or -chunk-size")
	}
	client := f.client()
	ch, err := client.ChangeChannel(ctx, pos[0], req)
	if err != nil {
		return c.fail(err)
	}
	if !f.json {
		fmt.Fprintf(c.stdout, "Placement: %s\n", placementNodes(ch))
	}
	if *timeout > 0 && req.Replicas != nil {
		ch, err = awaitConverged(ctx, client, ch.Name, *timeout, func(ch api.Channel) {
			if !f.json {
				fmt.Fprintf(c.stdout, "  voters: %s  non-voters: %s  (%s)\n",
					orDash(strings.Join(ch.Voters, ", ")), orDash(strings.Join(ch.NonVoters, ", ")), ch.Progress)
			}
		})
		if err != nil {
			return c.fail(err)
		}
	}
	if f.json {
		return c.printJSON(ch)
	}
	c.printChannel(ch)
	return 0
}

func placementNodes(ch api.Channel) string {
	ids := make([]string, len(ch.Placement))
	for i, r := range ch.Placement {
		ids[i] = r.NodeID
	}
	return strings.Join(ids, ", ")
}

// awaitConverged polls channel until its progress is converged, calling
// show whenever its voters or non-voters change.
func awaitConverged(ctx context.Context, client *api.Client, name string, wait time.Duration, show func(api.Channel)) (api.Channel, error) {
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	var last api.Channel
	seen := ""
	for {
		ch, err := client.Channel(ctx, name)
		if err == nil {
			last = ch
			if now := strings.Join(ch.Voters, ",") + "|" + strings.Join(ch.NonVoters, ","); now != seen {
				seen = now
				show(ch)
			}
			if ch.Progress == api.ProgressConverged {
				return ch, nil
			}
		}
		select {
		case <-ctx.Done():
			return last, fmt.Errorf("channel %s has not converged to its placement after %s (voters %v, non-voters %v): its leader keeps on; `shardnet channel get %s` shows where it is",
				name, wait, last.Voters, last.NonVoters, name)
		case <-tick.C:
		}
	}
}
