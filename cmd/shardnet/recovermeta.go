package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"strings"

	"github.com/shardnet/shardnet/cluster"
)

// recover-meta: the offline quorum-loss recovery of the meta group
// (docs/operations.md "Recovering the meta group", cluster/metarecover.go).

const recoverMetaHelp = `Recover the meta group after it lost a majority of its voters FOR GOOD (two of three
core nodes destroyed): it has no leader and never will, so nothing can be created, placed
or changed. Run this on a STOPPED surviving core node, on its data dir. It refuses while
the node runs.

It prints what it finds (the meta log's last index and term, the meta configuration) and
what it will do; with -i-understand-data-loss it rewrites the node's meta group to the
survivors given by -voters (default: this node alone), so that on start it elects itself
and the cluster serves again. Every entry of this node's meta log becomes committed, its
uncommitted tail included: meta writes answered 503 outcome_unknown may appear, and meta
writes that only the lost nodes had are gone.

The voters left out are fenced: their server ids are refused by every node, in every group,
for good. A lost node that comes back with its old data stops its meta group, says so in
its log and in 'shardnet status', and serves nothing: stop it, wipe its data dir, start it
again, and it rejoins as a new incarnation. Do not start two lost nodes together while the
survivors are unreachable: between them they still hold a majority of the old configuration.

With several survivors (-voters n1,n2), run the same command on each before starting any.`

func runRecoverMeta(_ context.Context, c *cli, args []string) int {
	fs := flag.NewFlagSet("recover-meta", flag.ContinueOnError)
	fs.SetOutput(c.stderr)
	dataDir := fs.String("data-dir", "", "the stopped node's data dir (required)")
	voters := fs.String("voters", "", "comma-separated node ids of the surviving core nodes, this one included (default: this node alone)")
	confirm := fs.Bool("i-understand-data-loss", false, "recover; without it the command prints what it would do and changes nothing")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: shardnet recover-meta -data-dir DIR [-voters n1,n2] [-i-understand-data-loss]\n\n%s\n\nFlags:\n", recoverMetaHelp)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		return c.usageError("unexpected arguments %v (see -h)", fs.Args())
	}
	if *dataDir == "" {
		return c.usageError("-data-dir DIR is required")
	}
	var vs []string
	for _, v := range strings.Split(*voters, ",") {
		if v = strings.TrimSpace(v); v != "" {
			vs = append(vs, v)
		}
	}
	err := cluster.RecoverMeta(cluster.MetaRecoverOptions{DataDir: *dataDir, Voters: vs, Confirm: *confirm, Out: c.stdout})
	if errors.Is(err, cluster.ErrMetaRecoverUnconfirmed) {
		return 1
	}
	if err != nil {
		return c.fail(err)
	}
	return 0
}
