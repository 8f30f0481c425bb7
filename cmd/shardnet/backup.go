package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/shardnet/shardnet/api"
	"github.com/shardnet/shardnet/fsm"
)

// Backups and restores (docs/operations.md "Backup and restore").

func runChannelBackup(ctx context.Context, c *cli, args []string) int {
	f := c.newFlags("channel backup", "CHANNEL -o FILE",
		"Write a backup of a channel to FILE: a consistent snapshot of its keys as of a linearizable\n"+
			"read taken when the backup begins, with its index, a format version and a SHA-256 checksum.\n"+
			"The file is checked once written; a transfer that is cut short leaves no FILE.\n"+
			"Progress goes to stderr for transfers longer than a second.")
	out := f.String("o", "", "file to write (required; - for stdout)")
	pos, code, ok := f.parse(args, 1, 1)
	if !ok {
		return code
	}
	if *out == "" {
		return c.usageError("-o FILE is required")
	}
	h, n, err := backupChannel(ctx, c, f.client(), pos[0], *out)
	if err != nil {
		return c.fail(err)
	}
	fmt.Fprintf(c.stdout, "Backup of %s at index %d: %s (%d bytes)\n", h.Channel, h.Index, *out, n)
	return 0
}

// backupChannel writes a backup of channel to path (- is stdout) and checks
// it; a file that does not check out is removed.
func backupChannel(ctx context.Context, c *cli, client *api.Client, channel, path string) (fsm.BackupHeader, int64, error) {
	body, _, err := client.Backup(ctx, channel)
	if err != nil {
		return fsm.BackupHeader{}, 0, err
	}
	defer body.Close()
	var w io.Writer = c.stdout
	var file *os.File
	if path != "-" {
		if file, err = os.Create(path + ".part"); err != nil {
			return fsm.BackupHeader{}, 0, err
		}
		defer func() {
			file.Close()
			os.Remove(path + ".part")
		}()
		w = file
	}
	p := newProgress(c.stderr, "backup of "+channel, -1)
	// The file is checked while it is written: BackupReader yields the
	// snapshot only, so the header and trailer pass through a tee.
	br, err := fsm.OpenBackup(io.TeeReader(body, &multiCount{w: w, p: p}))
	if err == nil {
		_, err = io.Copy(io.Discard, br)
	}
	p.done()
	if err != nil {
		return fsm.BackupHeader{}, 0, fmt.Errorf("backup of %s: %w", channel, err)
	}
	if file != nil {
		if err := file.Sync(); err != nil {
			return fsm.BackupHeader{}, 0, err
		}
		if err := file.Close(); err != nil {
			return fsm.BackupHeader{}, 0, err
		}
		if err := os.Rename(path+".part", path); err != nil {
			return fsm.BackupHeader{}, 0, err
		}
	}
	return br.Header, br.Bytes, nil
}

// multiCount writes to w and counts into p.
type multiCount struct {
	w io.Writer
	p *progress
}

func (m *multiCount) Write(b []byte) (int, error) {
	n, err := m.w.Write(b)
	m.p.add(int64(n))
	return n, err
}

func runChannelRestore(ctx context.Context, c *cli, args []string) int {
	f := c.newFlags("channel restore", "FILE -name NEW",
		"Create channel NEW from a backup FILE (shardnet channel backup). Every key keeps its value and\n"+
			"its create and modify index; the new channel's writes get indexes above the backup's. The\n"+
			"file is uploaded to the node you talk to, which checks its SHA-256 before anything is\n"+
			"created: a damaged or truncated file is refused and creates nothing. It prints the channel\n"+
			"and, once, its new token (the backup's tokens are not restored).").withJSON()
	name := f.String("name", "", "name of the new channel (required)")
	replicas := f.Int("replicas", 0, "replicas (default: the backed-up channel's)")
	pos, code, ok := f.parse(args, 1, 1)
	if !ok {
		return code
	}
	if *name == "" {
		return c.usageError("-name NEW is required")
	}
	file, err := os.Open(pos[0])
	if err != nil {
		return c.fail(err)
	}
	defer file.Close()
	st, err := file.Stat()
	if err != nil {
		return c.fail(err)
	}
	p := newProgress(c.stderr, "restore of "+*name, st.Size())
	res, err := f.client().Restore(ctx, *name, *replicas, &countingReader{r: file, p: p}, st.Size())
	p.done()
	if err != nil {
		return c.fail(err)
	}
	if f.json {
		return c.printJSON(res)
	}
	fmt.Fprintf(c.stdout, "Restored %s from a backup of %s at index %d (taken %s).\n\n", res.Channel.Name, res.From, res.Index, res.Created)
	c.printChannel(res.Channel)
	if res.Channel.Token != "" {
		fmt.Fprintf(c.stdout, "\nToken: %s\n(shown once: keep it)\n", res.Channel.Token)
	}
	return 0
}

// runBackup: shardnet backup -o DIR.
func runBackup(ctx context.Context, c *cli, args []string) int {
	f := c.newFlags("backup", "-o DIR",
		"Back up the whole cluster into DIR: meta.json, an export of the meta state (nodes, channels\n"+
			"with their placement and settings, tokens without their secrets) for the record and to\n"+
			"recreate what is not in the channel backups, and CHANNEL.shnbak for every channel\n"+
			"(shardnet channel backup). Restore channels one by one with shardnet channel restore.")
	dir := f.String("o", "", "directory to write (required; created if missing)")
	pos, code, ok := f.parse(args, 0, 0)
	_ = pos
	if !ok {
		return code
	}
	if *dir == "" {
		return c.usageError("-o DIR is required")
	}
	if err := os.MkdirAll(*dir, 0o755); err != nil {
		return c.fail(err)
	}
	client := f.client()
	exp, err := exportMeta(ctx, client)
	if err != nil {
		return c.fail(err)
	}
	b, err := json.MarshalIndent(exp, "", "  ")
	if err != nil {
		return c.fail(err)
	}
	if err := os.WriteFile(filepath.Join(*dir, "meta.json"), append(b, '\n'), 0o644); err != nil {
		return c.fail(err)
	}
	var failed []error
	for _, ch := range exp.Channels {
		path := filepath.Join(*dir, ch.Name+".shnbak")
		h, n, err := backupChannel(ctx, c, client, ch.Name, path)
		if err != nil {
			fmt.Fprintf(c.stderr, "Error: channel %s: %v\n", ch.Name, err)
			failed = append(failed, err)
			continue
		}
		fmt.Fprintf(c.stdout, "%s: index %d, %d bytes\n", ch.Name, h.Index, n)
	}
	if len(failed) > 0 {
		return c.fail(fmt.Errorf("%d of %d channels not backed up: %w", len(failed), len(exp.Channels), errors.Join(failed...)))
	}
	fmt.Fprintf(c.stdout, "Backed up the meta state and %d channels into %s\n", len(exp.Channels), *dir)
	return 0
}

// metaExport is meta.json of shardnet backup.
type metaExport struct {
	Format   int                        `json:"format"`
	Taken    string                     `json:"taken"`
	Cluster  api.Status                 `json:"cluster"`
	Nodes    []api.Node                 `json:"nodes"`
	Channels []api.Channel              `json:"channels"`
	Tokens   map[string][]api.TokenInfo `json:"tokens"`
}

func exportMeta(ctx context.Context, client *api.Client) (metaExport, error) {
	exp := metaExport{Format: 1, Taken: time.Now().UTC().Format(time.RFC3339), Tokens: map[string][]api.TokenInfo{}}
	var err error
	if exp.Cluster, err = client.Status(ctx); err != nil {
		return exp, err
	}
	if exp.Nodes, err = client.Nodes(ctx); err != nil {
		return exp, err
	}
	if exp.Channels, err = client.Channels(ctx); err != nil {
		return exp, err
	}
	for _, ch := range exp.Channels {
		toks, err := client.Tokens(ctx, ch.Name)
		if err != nil {
			return exp, fmt.Errorf("tokens of %s: %w", ch.Name, err)
		}
		exp.Tokens[ch.Name] = toks
	}
	return exp, nil
}

// recoverWarning is printed before a recovery acts, and instead of it
// without -i-understand-data-loss.
const recoverWarning = `Recovering channel %s re-forms it from its surviving replica with the most advanced log,
for a channel that lost a majority of its replicas FOR GOOD. Its uncommitted tail becomes
committed: writes that were answered 503 outcome_unknown may appear, and writes that only the
lost replicas had are gone. The lost replicas never take part in the channel again.
Refused while a majority of the replicas answer.
`

func runChannelRecover(ctx context.Context, c *cli, args []string) int {
	f := c.newFlags("channel recover", "CHANNEL -i-understand-data-loss",
		"Re-form a channel that lost a majority of its replicas for good from its best surviving replica\n"+
			"(docs/operations.md \"Recovering a channel that lost a quorum\").").withJSON()
	sure := f.Bool("i-understand-data-loss", false, "confirm: writes answered outcome_unknown may appear, others may be lost")
	pos, code, ok := f.parse(args, 1, 1)
	if !ok {
		return code
	}
	fmt.Fprintf(c.stderr, recoverWarning, pos[0])
	if !*sure {
		return c.usageError("add -i-understand-data-loss to go ahead")
	}
	res, err := f.client().RecoverChannel(ctx, pos[0], "i-understand-data-loss")
	if err != nil {
		return c.fail(err)
	}
	if f.json {
		return c.printJSON(res)
	}
	fmt.Fprintf(c.stdout, "Recovered %s from the replica on %s at index %d (group %d → %d); lost: %v\n\n",
		res.Channel.Name, res.Survivor, res.Index, res.OldGroupID, res.Channel.GroupID, res.Lost)
	c.printChannel(res.Channel)
	return 0
}
