// Command shardnet is the shardnet binary: the node (agent, dev) and the
// command-line client of the HTTP API.
package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "0.1.0-dev"

// cli is what the client commands read and write; tests give their own.
type cli struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string
	httpClient     *http.Client // nil: a default client
}

// command is one entry of a dispatch table.
type command struct {
	synopsis string
	run      func(ctx context.Context, c *cli, args []string) int
}

// commands is the top-level dispatch table.
var commands = map[string]command{
	"agent":        {"run a node", func(_ context.Context, _ *cli, args []string) int { return runAgent(args) }},
	"dev":          {"run a whole cluster in this process, for development", func(_ context.Context, _ *cli, args []string) int { return runDev(args) }},
	"members":      {"list the cluster's nodes", runMembers},
	"node":         {"describe, drain, leave and remove nodes", runNode},
	"status":       {"describe the node you talk to", runStatus},
	"channel":      {"create, list, describe and delete channels", runChannel},
	"file":         {"upload, download, list and delete a channel's files", runFile},
	"kv":           {"read and write a channel's keys", runKV},
	"gossip":       {"make and rotate gossip encryption keys", runGossip},
	"version":      {"print the version", runVersion},
	"tls":          {"create the cluster CA and node certificates", runTLS},
	"backup":       {"back up the meta state and every channel into a directory", runBackup},
	"bench":        {"send load to the HTTP API; throughput, latency percentiles, errors", runBench},
	"recover-meta": {"recover the meta group of a stopped node after losing a quorum", runRecoverMeta},
}

func main() {
	args := os.Args[1:]
	// The node commands own their signals and streams.
	if len(args) > 0 && (args[0] == "agent" || args[0] == "dev") {
		os.Exit(commands[args[0]].run(context.Background(), nil, args[1:]))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, &cli{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv}, args)
	stop()
	os.Exit(code)
}

// run dispatches one command line; it returns the exit code: 0 success, 1
// failure, 2 usage error.
func run(ctx context.Context, c *cli, args []string) int {
	if len(args) == 0 {
		usage(c.stderr)
		return 2
	}
	switch args[0] {
	case "help", "-h", "-help", "--help":
		if len(args) > 1 {
			if cmd, ok := commands[args[1]]; ok {
				return cmd.run(ctx, c, []string{"-h"})
			}
		}
		usage(c.stdout)
		return 0
	case "-version", "--version":
		return runVersion(ctx, c, nil)
	}
	cmd, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(c.stderr, "Unknown command %q.\n\n", args[0])
		usage(c.stderr)
		return 2
	}
	return cmd.run(ctx, c, args[1:])
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "Usage: shardnet <command> [arguments]")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Commands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-12s %s\n", n, commands[n].synopsis)
	}
	fmt.Fprintln(w, "  help         show this, or a command's help (shardnet help kv)")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Client commands talk to the node at -addr (default $SHARDNET_ADDR, else")
	fmt.Fprintln(w, "http://127.0.0.1:8500; https://... for a node serving HTTPS, with -ca-file or")
	fmt.Fprintln(w, "$SHARDNET_CA_FILE for a private CA) with the token -token (default $SHARDNET_TOKEN).")
}

func runVersion(_ context.Context, c *cli, _ []string) int {
	fmt.Fprintf(c.stdout, "shardnet %s\n", version)
	return 0
}

// subcommands dispatches a command's subcommand (channel create, kv put).
func subcommands(ctx context.Context, c *cli, name string, table map[string]command, args []string) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "-help" || args[0] == "--help" || args[0] == "help" {
		w, code := c.stderr, 2
		if len(args) > 0 {
			w, code = c.stdout, 0
		}
		fmt.Fprintf(w, "Usage: shardnet %s <subcommand> [arguments]\n\nSubcommands:\n", name)
		names := make([]string, 0, len(table))
		for n := range table {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			fmt.Fprintf(w, "  %-8s %s\n", n, table[n].synopsis)
		}
		return code
	}
	sub, ok := table[args[0]]
	if !ok {
		fmt.Fprintf(c.stderr, "Unknown subcommand %q of %s; see shardnet %s -h\n", args[0], name, name)
		return 2
	}
	return sub.run(ctx, c, args[1:])
}

// oneLine keeps a value that may hold anything on one table row.
func oneLine(s string) string {
	return strings.NewReplacer("\n", `\n`, "\t", `\t`, "\r", `\r`).Replace(s)
}
