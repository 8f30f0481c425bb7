package main

import (
	"context"
	"fmt"
	"text/tabwriter"
)

// runMembers: shardnet members [-json]
func runMembers(ctx context.Context, c *cli, args []string) int {
	f := c.newFlags("members", "", "List the cluster's nodes: role, zone, operator, state, whether it hosts data (-serve-data), disk offered and free, replicas and bytes it holds, HTTP address and the command version each supports.").withJSON()
	if _, code, ok := f.parse(args, 0, 0); !ok {
		return code
	}
	nodes, err := f.client().Nodes(ctx)
	if err != nil {
		return c.fail(err)
	}
	if f.json {
		return c.printJSON(nodes)
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tROLE\tZONE\tOPERATOR\tSTATE\tDATA\tDISK\tFREE\tREPLICAS\tUSED\tHTTP ADDR\tVERSION")
	for _, n := range nodes {
		data := "no"
		if n.ServeData {
			data = "yes"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%d\n",
			n.ID, n.Role, orDash(n.Zone), orDash(n.Operator), n.State, data,
			humanBytes(n.Capacity.DiskBytes), humanBytes(n.Capacity.DiskFreeBytes), n.Usage.Replicas, humanBytes(n.Usage.DiskBytes),
			orDash(n.HTTPAddr), n.SupportedVersion)
	}
	if err := tw.Flush(); err != nil {
		return c.fail(err)
	}
	return 0
}

// runStatus: shardnet status [-json]
func runStatus(ctx context.Context, c *cli, args []string) int {
	f := c.newFlags("status", "", "Describe the node you talk to and the meta leader it knows.").withJSON()
	if _, code, ok := f.parse(args, 0, 0); !ok {
		return code
	}
	st, err := f.client().Status(ctx)
	if err != nil {
		return c.fail(err)
	}
	if f.json {
		return c.printJSON(st)
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	leader := orDash(st.MetaLeader)
	if st.MetaLeaderHTTP != "" {
		leader += " (" + st.MetaLeaderHTTP + ")"
	}
	for _, row := range [][2]string{
		{"Node", st.NodeID}, {"Role", st.Role}, {"Zone", orDash(st.Zone)},
		{"Cluster addr", orDash(st.ClusterAddr)}, {"HTTP addr", orDash(st.HTTPAddr)}, {"Cluster id", orDash(st.ClusterID)},
		{"Meta leader", leader}, {"Replicas", fmt.Sprint(st.Replicas)}, {"Version", st.Version},
		{"Cluster version", fmt.Sprintf("%d (this node supports %d)", st.ClusterVersion, st.SupportedVersion)},
	} {
		fmt.Fprintf(tw, "%s:\t%s\n", row[0], row[1])
	}
	if st.Fenced != "" {
		fmt.Fprintf(tw, "FENCED:\t%s\n", st.Fenced)
	}
	if err := tw.Flush(); err != nil {
		return c.fail(err)
	}
	return 0
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// humanBytes prints a byte count in binary units ("-" for 0: not reported).
func humanBytes(b uint64) string {
	if b == 0 {
		return "-"
	}
	const unit = 1024
	if b < unit {
		return fmt.Sprintf("%d B", b)
	}
	div, exp := uint64(unit), 0
	for n := b / unit; n >= unit && exp < 4; n /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(b)/float64(div), "KMGTP"[exp])
}
