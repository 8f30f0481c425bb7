package main

import (
	"context"
	"fmt"
	"text/tabwriter"
)

// runMembers: shardnet members [-json]
func runMembers(ctx context.Context, c *cli, args []string) int {
	f := c.newFlags("members", "", "List the cluster's nodes: role, zone, state, addresses, replicas hosted and the command version each supports.").withJSON()
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
	fmt.Fprintln(tw, "ID\tROLE\tZONE\tSTATE\tCLUSTER ADDR\tHTTP ADDR\tREPLICAS\tVERSION")
	for _, n := range nodes {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\n",
			n.ID, n.Role, orDash(n.Zone), n.State, orDash(n.ClusterAddr), orDash(n.HTTPAddr), n.Usage.Replicas, n.SupportedVersion)
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
