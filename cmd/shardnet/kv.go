package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"github.com/shardnet/shardnet/api"
)

var kvCommands = map[string]command{
	"put": {"write a key", runKVPut},
	"get": {"read a key (the raw value to stdout); -index/-wait block until it changes", runKVGet},
	"del": {"delete a key", runKVDelete},
	"ls":  {"list keys by prefix", runKVList},
	"txn": {"run a transaction given as JSON", runKVTxn},
}

// runKV: shardnet kv put|get|del|ls|txn
func runKV(ctx context.Context, c *cli, args []string) int {
	return subcommands(ctx, c, "kv", kvCommands, args)
}

// maxValueRead bounds what kv put reads from a file or stdin: one byte over
// the server's limit, so that the server answers 413 with its message.
const maxValueRead = 1<<20 + 1

func runKVPut(ctx context.Context, c *cli, args []string) int {
	f := c.newFlags("kv put", "CHANNEL KEY [VALUE | -]",
		"Write VALUE under KEY; with - or -file the value is read from stdin or the file.\nIt prints the index of the write.")
	var cas optUint
	var file string
	f.Var(&cas, "cas", "write only if the key's modify index is `N` (0: only if the key does not exist)")
	f.StringVar(&file, "file", "", "read the value from this file")
	w := addWriteFlags(f)
	pos, code, ok := f.parse(args, 2, 3)
	if !ok {
		return code
	}
	var value []byte
	switch {
	case file != "" && len(pos) == 3:
		return c.usageError("give the value as an argument or with -file, not both")
	case file != "":
		fh, err := os.Open(file)
		if err != nil {
			return c.fail(err)
		}
		value, err = io.ReadAll(io.LimitReader(fh, maxValueRead))
		fh.Close()
		if err != nil {
			return c.fail(err)
		}
	case len(pos) == 2:
		return c.usageError("no value: give it as an argument, - for stdin, or -file")
	case pos[2] == "-":
		var err error
		if value, err = io.ReadAll(io.LimitReader(c.stdin, maxValueRead)); err != nil {
			return c.fail(err)
		}
	default:
		value = []byte(pos[2])
	}
	ctx, client := w.client(ctx, f)
	idx, err := client.Put(ctx, pos[0], pos[1], value, api.PutOptions{CAS: cas.ptr()})
	if err != nil {
		return c.fail(err)
	}
	fmt.Fprintln(c.stdout, idx)
	return 0
}

func runKVGet(ctx context.Context, c *cli, args []string) int {
	f := c.newFlags("kv get", "CHANNEL KEY",
		"Write KEY's raw value to stdout (-json: the value in base64 and its index).\n"+
			"With -index N it blocks until the key's modify index is above N, or for -wait.").withJSON()
	var opts api.GetOptions
	var consistency string
	var index optUint
	f.StringVar(&consistency, "consistency", "", "linearizable (default), lease or stale")
	f.Var(&index, "index", "block until the key's modify index is above `N`")
	f.DurationVar(&opts.Wait, "wait", 0, "with -index, how long to block at most (server cap 5m, the default)")
	pos, code, ok := f.parse(args, 2, 2)
	if !ok {
		return code
	}
	if opts.Wait < 0 {
		return c.usageError("-wait must be positive")
	}
	if opts.Wait > 0 && !index.set {
		return c.usageError("-wait needs -index")
	}
	opts.Consistency = api.Consistency(consistency)
	if index.set {
		opts.WaitIndex = index.v
		if opts.Wait == 0 {
			opts.Wait = 5 * time.Minute
		}
	}
	value, idx, err := f.client().Get(ctx, pos[0], pos[1], opts)
	if err != nil {
		return c.fail(err)
	}
	if f.json {
		return c.printJSON(struct {
			Key         string `json:"key"`
			Value       []byte `json:"value"`
			ModifyIndex uint64 `json:"modify_index"`
		}{pos[1], value, idx})
	}
	if _, err := c.stdout.Write(value); err != nil {
		return c.fail(err)
	}
	return 0
}

func runKVDelete(ctx context.Context, c *cli, args []string) int {
	f := c.newFlags("kv del", "CHANNEL KEY", "Delete KEY; it prints the index of the delete.")
	var cas optUint
	f.Var(&cas, "cas", "delete only if the key's modify index is `N`")
	w := addWriteFlags(f)
	pos, code, ok := f.parse(args, 2, 2)
	if !ok {
		return code
	}
	ctx, client := w.client(ctx, f)
	idx, err := client.Delete(ctx, pos[0], pos[1], api.DeleteOptions{CAS: cas.ptr()})
	if err != nil {
		return c.fail(err)
	}
	fmt.Fprintln(c.stdout, idx)
	return 0
}

func runKVList(ctx context.Context, c *cli, args []string) int {
	f := c.newFlags("kv ls", "CHANNEL", "List the keys that start with -prefix, in order, following the server's cursor page by page.").withJSON()
	var prefix, after, consistency string
	var limit int
	f.StringVar(&prefix, "prefix", "", "only keys starting with this")
	f.StringVar(&after, "after", "", "only keys after this one (a cursor)")
	f.IntVar(&limit, "limit", 0, "at most this many keys (0: all)")
	f.StringVar(&consistency, "consistency", "", "linearizable (default), lease or stale")
	pos, code, ok := f.parse(args, 1, 1)
	if !ok {
		return code
	}
	if limit < 0 {
		return c.usageError("-limit must not be negative")
	}
	client := f.client()
	all := api.ListResponse{Items: []api.KV{}}
	for {
		page := 1000
		if limit > 0 {
			page = min(page, limit-len(all.Items))
		}
		l, err := client.List(ctx, pos[0], prefix, after, page, api.Consistency(consistency))
		if err != nil {
			return c.fail(err)
		}
		all.Items = append(all.Items, l.Items...)
		all.Index, all.Next = l.Index, l.Next
		if l.Next == "" || (limit > 0 && len(all.Items) >= limit) {
			break
		}
		after = l.Next
	}
	if f.json {
		return c.printJSON(all)
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KEY\tMODIFY INDEX\tCREATE INDEX\tBYTES")
	for _, it := range all.Items {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\n", oneLine(it.Key), it.ModifyIndex, it.CreateIndex, len(it.Value))
	}
	if err := tw.Flush(); err != nil {
		return c.fail(err)
	}
	return 0
}

func runKVTxn(ctx context.Context, c *cli, args []string) int {
	f := c.newFlags("kv txn", "CHANNEL",
		"Run a transaction read as JSON from -file or stdin, for example\n"+
			`  {"compares":[{"key":"a","target":"modify_index","result":"equal","index":0}],`+"\n"+
			`   "success":[{"op":"put","key":"a","value":"aGVsbG8="}],"failure":[{"op":"get","key":"a"}]}`+"\n"+
			"(values in base64). It prints the answer as JSON.")
	var file string
	f.StringVar(&file, "file", "", "read the transaction from this file (default stdin)")
	w := addWriteFlags(f)
	pos, code, ok := f.parse(args, 1, 1)
	if !ok {
		return code
	}
	in := c.stdin
	if file != "" {
		fh, err := os.Open(file)
		if err != nil {
			return c.fail(err)
		}
		defer fh.Close()
		in = fh
	}
	var req api.TxnRequest
	dec := json.NewDecoder(io.LimitReader(in, 8<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return c.usageError("the transaction is not valid JSON: %v", err)
	}
	ctx, client := w.client(ctx, f)
	resp, err := client.Txn(ctx, pos[0], req)
	if err != nil {
		return c.fail(err)
	}
	return c.printJSON(resp)
}

// writeFlags are the flags of every write: its idempotency key and how
// often it is sent again (docs/api.md "Idempotency keys").
type writeFlags struct {
	key     string
	retries int
}

func addWriteFlags(f *cmdFlags) *writeFlags {
	w := &writeFlags{}
	f.StringVar(&w.key, "idempotency-key", "",
		"send the write under this `KEY` (1 to 255 visible ASCII characters; default: a random one): a write sent again under the same key within the channel's next 100,000 entries answers the first outcome instead of applying again")
	f.IntVar(&w.retries, "retries", 2,
		"send the write again, under the same idempotency key, up to `N` times when its outcome is unknown or it was refused in a way that may be retried")
	return w
}

// client returns the client and context the write is sent with.
func (w *writeFlags) client(ctx context.Context, f *cmdFlags) (context.Context, *api.Client) {
	if w.key != "" {
		ctx = api.WithIdempotencyKey(ctx, w.key)
	}
	return ctx, f.client().WithRetries(w.retries, 500*time.Millisecond)
}
