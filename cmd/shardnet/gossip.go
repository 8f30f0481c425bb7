package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/shardnet/shardnet/api"
	"github.com/shardnet/shardnet/fsm"
)

var gossipCommands = map[string]command{
	"keygen":  {"print a new gossip encryption key", runGossipKeygen},
	"keyring": {"list, install, use or remove gossip keys on every node", runGossipKeyring},
}

// runGossip: shardnet gossip keygen|keyring
func runGossip(ctx context.Context, c *cli, args []string) int {
	return subcommands(ctx, c, "gossip", gossipCommands, args)
}

func runGossipKeygen(_ context.Context, c *cli, args []string) int {
	f := c.newFlags("gossip keygen", "", "Print a new gossip encryption key: base64 of 32 random bytes (AES-256), for the agents' -encrypt-file or $SHARDNET_GOSSIP_KEY, or for gossip keyring -install.")
	if _, code, ok := f.parse(args, 0, 0); !ok {
		return code
	}
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		return c.fail(err)
	}
	fmt.Fprintln(c.stdout, base64.StdEncoding.EncodeToString(k))
	return 0
}

// keyringCallTimeout bounds each node's keyring call.
const keyringCallTimeout = 10 * time.Second

// nodeResult is one node's answer to a keyring call.
type nodeResult struct {
	node string
	kr   api.GossipKeyring
	err  error
}

func runGossipKeyring(ctx context.Context, c *cli, args []string) int {
	f := c.newFlags("gossip keyring", "",
		`List, install, use or remove gossip encryption keys on every node the cluster
lists (GET /v1/nodes), one node after the other, through each node's HTTP API
(/v1/operator/keyring). Exactly one of -list, -install, -use, -remove. A KEY
of "-" is read from stdin, which keeps it out of process listings.

Rotation: -install NEW, then -use NEW, then -remove OLD, each on every node
before the next (docs/operations.md, "Rotating the gossip key"). A node that
does not answer is reported and the command fails: run the same step again
once it is back, before the next step.`).withJSON()
	list := f.Bool("list", false, "list each node's keys")
	install := f.String("install", "", "install KEY on every node: it decrypts at once, encrypts once used")
	use := f.String("use", "", "make the installed KEY the one every node encrypts with")
	remove := f.String("remove", "", "remove KEY (not the one in use) from every node")
	if _, code, ok := f.parse(args, 0, 0); !ok {
		return code
	}
	var op api.KeyringOp
	var key string
	n := 0
	if *list {
		n++
	}
	for _, o := range []struct {
		op  api.KeyringOp
		key string
	}{{api.KeyringInstall, *install}, {api.KeyringUse, *use}, {api.KeyringRemove, *remove}} {
		if o.key != "" {
			op, key = o.op, o.key
			n++
		}
	}
	if n != 1 {
		return c.usageError("give exactly one of -list, -install KEY, -use KEY, -remove KEY")
	}
	if key == "-" {
		line, err := bufio.NewReader(c.stdin).ReadString('\n')
		if key = strings.TrimSpace(line); key == "" {
			return c.usageError("no key on stdin (%v)", err)
		}
	}
	client := f.client()
	nodes, err := client.Nodes(ctx)
	if err != nil {
		return c.fail(err)
	}
	var results []nodeResult
	for _, nd := range nodes {
		if nd.State == fsm.NodeLeft {
			continue // gone for good: nothing to change, nothing to wait for
		}
		r := nodeResult{node: nd.ID}
		// A node that hangs is reported like one that is down, and the
		// others are still asked.
		nctx, cancel := context.WithTimeout(ctx, keyringCallTimeout)
		if nd.HTTPAddr == "" {
			r.err = fmt.Errorf("no HTTP address known")
		} else if op == "" {
			r.kr, r.err = client.At(nd.HTTPAddr).GossipKeyring(nctx)
		} else {
			r.kr, r.err = client.At(nd.HTTPAddr).ChangeGossipKeyring(nctx, op, key)
		}
		cancel()
		results = append(results, r)
	}
	failed := 0
	for _, r := range results {
		if r.err != nil {
			failed++
		}
	}
	if f.json {
		out := make([]map[string]any, 0, len(results))
		for _, r := range results {
			m := map[string]any{"node": r.node}
			if r.err != nil {
				m["error"] = r.err.Error()
			} else {
				m["keyring"] = r.kr
			}
			out = append(out, m)
		}
		if code := c.printJSON(out); code != 0 {
			return code
		}
	} else {
		c.printKeyrings(results)
	}
	if failed > 0 {
		verb := "listed"
		if op != "" {
			verb = string(op) + " applied"
		}
		return c.fail(fmt.Errorf("%s on %d of %d nodes; run it again once the others answer", verb, len(results)-failed, len(results)))
	}
	return 0
}

// printKeyrings prints, per key, on how many nodes it is installed and
// primary, then each node that did not answer.
func (c *cli) printKeyrings(results []nodeResult) {
	type count struct{ installed, primary int }
	keys := map[string]*count{}
	ok := 0
	for _, r := range results {
		if r.err != nil {
			continue
		}
		ok++
		for _, k := range r.kr.Keys {
			if keys[k] == nil {
				keys[k] = &count{}
			}
			keys[k].installed++
		}
		if keys[r.kr.Primary] != nil {
			keys[r.kr.Primary].primary++
		}
	}
	names := make([]string, 0, len(keys))
	for k := range keys {
		names = append(names, k)
	}
	sort.Strings(names)
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KEY\tINSTALLED\tPRIMARY")
	for _, k := range names {
		fmt.Fprintf(tw, "%s\t%d/%d\t%d/%d\n", k, keys[k].installed, ok, keys[k].primary, ok)
	}
	_ = tw.Flush()
	for _, r := range results {
		if r.err != nil {
			fmt.Fprintf(c.stderr, "%s: %v\n", r.node, r.err)
		}
	}
}
