package main

import (
	"context"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/shardnet/shardnet/api"
)

var tokenCommands = map[string]command{
	"create": {"issue a token of a channel (read-only or read-write, with an optional expiry)", runTokenCreate},
	"list":   {"list a channel's tokens (ids, scopes, times; never secrets)", runTokenList},
	"revoke": {"revoke a channel's token, and every link it signed", runTokenRevoke},
}

// runChannelToken: shardnet channel token create|list|revoke
func runChannelToken(ctx context.Context, c *cli, args []string) int {
	return subcommands(ctx, c, "channel token", tokenCommands, args)
}

func runTokenCreate(ctx context.Context, c *cli, args []string) int {
	f := c.newFlags("channel token create", "CHANNEL",
		"Issue a token of CHANNEL; it is printed once. Needs the operator token or a read-write token of the channel.").withJSON()
	scope := f.String("scope", api.ScopeReadOnly, "read-only or read-write")
	ttl := f.Duration("ttl", 0, "expire after this long (0: never)")
	expires := f.String("expires", "", "expire at this RFC 3339 time instead of -ttl")
	pos, code, ok := f.parse(args, 1, 1)
	if !ok {
		return code
	}
	req := api.TokenRequest{Scope: *scope, ExpiresAt: *expires}
	if *ttl > 0 {
		req.TTL = ttl.String()
	}
	tok, err := f.client().CreateToken(ctx, pos[0], req)
	if err != nil {
		return c.fail(err)
	}
	if f.json {
		return c.printJSON(tok)
	}
	fmt.Fprintf(c.stdout, "Token:   %s\n(shown once: keep it)\nID:      %s\nScope:   %s\nExpires: %s\n", tok.Token, tok.ID, tok.Scope, expiry(tok.ExpiresAt))
	return 0
}

func expiry(t *time.Time) string {
	if t == nil {
		return "never"
	}
	return t.Format(time.RFC3339)
}

func runTokenList(ctx context.Context, c *cli, args []string) int {
	f := c.newFlags("channel token list", "CHANNEL", "List CHANNEL's tokens, revoked ones included.").withJSON()
	pos, code, ok := f.parse(args, 1, 1)
	if !ok {
		return code
	}
	ts, err := f.client().Tokens(ctx, pos[0])
	if err != nil {
		return c.fail(err)
	}
	if f.json {
		return c.printJSON(ts)
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSCOPE\tCREATED\tEXPIRES\tREVOKED")
	for _, t := range ts {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%v\n", t.ID, t.Scope, t.CreatedAt.Format(time.RFC3339), expiry(t.ExpiresAt), t.Revoked)
	}
	if err := tw.Flush(); err != nil {
		return c.fail(err)
	}
	return 0
}

func runTokenRevoke(ctx context.Context, c *cli, args []string) int {
	f := c.newFlags("channel token revoke", "CHANNEL ID",
		"Revoke CHANNEL's token ID (from `channel token list`) and every link it signed. Each node refuses it once its copy of the meta state has applied the revocation.")
	pos, code, ok := f.parse(args, 2, 2)
	if !ok {
		return code
	}
	if err := f.client().RevokeToken(ctx, pos[0], pos[1]); err != nil {
		return c.fail(err)
	}
	fmt.Fprintf(c.stdout, "Token %s of %s revoked.\n", pos[1], pos[0])
	return 0
}

// runChannelSign: shardnet channel sign CHANNEL KEY [-ttl D]
func runChannelSign(ctx context.Context, c *cli, args []string) int {
	f := c.newFlags("channel sign", "CHANNEL KEY",
		"Print a link to KEY that a browser can GET without a token until it expires, or until the token that signed it (-token, a token of CHANNEL) is revoked.").withJSON()
	ttl := f.Duration("ttl", time.Hour, "how long the link works (at most 168h)")
	pos, code, ok := f.parse(args, 2, 2)
	if !ok {
		return code
	}
	client := f.client()
	link, err := client.Sign(ctx, pos[0], pos[1], *ttl)
	if err != nil {
		return c.fail(err)
	}
	if f.json {
		return c.printJSON(link)
	}
	fmt.Fprintf(c.stdout, "%s%s\n", client.Addr(), link.URL)
	return 0
}

// runChannelSettings: shardnet channel settings CHANNEL [-public-prefixes ...] [-cors-origins ...]
func runChannelSettings(ctx context.Context, c *cli, args []string) int {
	f := c.newFlags("channel settings", "CHANNEL",
		"Replace CHANNEL's settings: the key prefixes anyone may read without a token, and its CORS policy. Flags left out clear their setting.").withJSON()
	var prefixes, origins, methods, headers listFlag
	f.Var(&prefixes, "public-prefixes", "key prefixes readable without a token (comma-separated)")
	f.Var(&origins, "cors-origins", "origins allowed to call the channel from a browser, or * (comma-separated)")
	f.Var(&methods, "cors-methods", "methods allowed cross-origin (default GET,HEAD)")
	f.Var(&headers, "cors-headers", "request headers allowed cross-origin, such as Authorization,Range")
	maxAge := f.Int("cors-max-age", 0, "seconds a browser may cache a preflight answer")
	pos, code, ok := f.parse(args, 1, 1)
	if !ok {
		return code
	}
	s := api.ChannelSettings{PublicPrefixes: prefixes}
	if len(origins) > 0 {
		s.CORS = &api.CORS{AllowedOrigins: origins, AllowedMethods: methods, AllowedHeaders: headers, MaxAge: *maxAge}
	}
	out, err := f.client().SetChannelSettings(ctx, pos[0], s)
	if err != nil {
		return c.fail(err)
	}
	if f.json {
		return c.printJSON(out)
	}
	fmt.Fprintf(c.stdout, "Public prefixes: %s\n", orDash(strings.Join(out.PublicPrefixes, ", ")))
	if out.CORS != nil {
		fmt.Fprintf(c.stdout, "CORS origins:    %s\n", strings.Join(out.CORS.AllowedOrigins, ", "))
	}
	return 0
}
