package api

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
)

// maxErrorBody bounds how much of an error response the client reads.
const maxErrorBody = 64 << 10

// maxValueBytes is the server's value limit (fsm.MaxValueBytes; this
// package imports only the standard library).
const maxValueBytes = 1 << 20

// Client is a typed client of one node's HTTP API. Any node serves any
// request: it forwards to the channel (or meta) leader itself. A Client is
// safe for concurrent use.
type Client struct {
	base  string // scheme://host[:port], no trailing slash
	token string
	hc    *http.Client

	// retries is how many times a write is sent again (WithRetries).
	retries    int
	retryPause time.Duration
}

// NewClient returns a client of the node at addr ("http://host:port",
// "https://host:port", or "host:port" for plain HTTP). A non-empty token is sent as
// "Authorization: Bearer <token>". httpClient may be nil; it should have no
// overall Timeout when blocking reads are used, since they wait up to 5
// minutes: bound calls with their context instead.
func NewClient(addr, token string, httpClient *http.Client) *Client {
	if httpClient == nil {
		httpClient = &http.Client{}
	}
	if !strings.Contains(addr, "://") {
		addr = "http://" + addr
	}
	return &Client{base: strings.TrimRight(addr, "/"), token: token, hc: httpClient}
}

// WithRetries returns a copy of the client that sends a write again, up to
// retries more times with pause between attempts (0: 200 ms), when an
// attempt ends in a way that may be retried: 429, a 503 that says nothing
// was applied, and — since every write carries an idempotency key — a 503
// outcome_unknown or timeout and a connection lost before the answer. Each
// retry carries the first attempt's Idempotency-Key, so a write the first
// attempt applied is answered, not applied again (docs/api.md
// "Idempotency keys").
func (c *Client) WithRetries(retries int, pause time.Duration) *Client {
	cc := *c
	cc.retries = max(retries, 0)
	cc.retryPause = pause
	if cc.retryPause <= 0 {
		cc.retryPause = 200 * time.Millisecond
	}
	return &cc
}

type idemKeyCtx struct{}

// WithIdempotencyKey makes the write sent with ctx (Put, Delete, Txn) carry
// key as its Idempotency-Key instead of one the client generates: a caller
// that retries a write itself, across clients or processes, gives each
// attempt the same key.
func WithIdempotencyKey(ctx context.Context, key string) context.Context {
	return context.WithValue(ctx, idemKeyCtx{}, key)
}

// NewIdempotencyKey returns a random 128-bit key in base64url (22
// characters), what the client sends when the caller gives none.
func NewIdempotencyKey() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand)
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// Addr returns the base URL the client talks to.
func (c *Client) Addr() string { return c.base }

// At returns a client of the node at addr with this client's token and
// HTTP client; an addr without a scheme takes this client's (a node lists
// its peers' HTTP addresses as host:port).
func (c *Client) At(addr string) *Client {
	if !strings.Contains(addr, "://") {
		scheme, _, _ := strings.Cut(c.base, "://")
		addr = scheme + "://" + addr
	}
	return NewClient(addr, c.token, c.hc)
}

// NewHTTPClient returns an HTTP client for NewClient that trusts the
// certificates of caFile (PEM) besides the system's: nodes whose API
// serves HTTPS with a certificate of a private CA. An empty caFile trusts
// the system's roots only.
func NewHTTPClient(caFile string) (*http.Client, error) {
	t := http.DefaultTransport.(*http.Transport).Clone()
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("api: CA file: %w", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil || pool == nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("api: CA file %s holds no PEM certificate", caFile)
		}
		t.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return &http.Client{Transport: t}, nil
}

// PutOptions tunes Put.
type PutOptions struct {
	// CAS, when set, makes the write conditional on the key's modify
	// index: 0 means the key must not exist. A mismatch is a 409
	// cas_mismatch (see IsCASMismatch).
	CAS *uint64
}

// DeleteOptions tunes Delete.
type DeleteOptions struct {
	CAS *uint64 // as PutOptions.CAS
}

// GetOptions tunes Get.
type GetOptions struct {
	Consistency Consistency // "" is linearizable
	// WaitIndex and Wait make the read blocking: it returns once the key's
	// modify index is above WaitIndex, or after Wait (the server caps it at
	// 5 minutes and adds up to ±1/16 of jitter; 0 is the cap) with the
	// current value. The read is blocking when either is set.
	WaitIndex uint64
	Wait      time.Duration
}

// Health checks GET /v1/health: liveness, or readiness when ready is true.
func (c *Client) Health(ctx context.Context, ready bool) error {
	q := url.Values{}
	if ready {
		q.Set("ready", "1")
	}
	var h Health
	_, err := c.doJSON(ctx, http.MethodGet, "/v1/health", q, nil, &h)
	return err
}

// Status describes the node the client talks to.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var s Status
	_, err := c.doJSON(ctx, http.MethodGet, "/v1/status", nil, nil, &s)
	return s, err
}

// Nodes lists the cluster's members.
func (c *Client) Nodes(ctx context.Context) ([]Node, error) {
	var ns []Node
	_, err := c.doJSON(ctx, http.MethodGet, "/v1/nodes", nil, nil, &ns)
	return ns, err
}

// CreateChannel creates a channel; the answer carries its placement and,
// once, its token.
func (c *Client) CreateChannel(ctx context.Context, req CreateChannelRequest) (Channel, error) {
	var ch Channel
	_, err := c.doJSON(ctx, http.MethodPost, "/v1/channels", nil, req, &ch)
	return ch, err
}

// Channels lists every channel.
func (c *Client) Channels(ctx context.Context) ([]Channel, error) {
	var chs []Channel
	_, err := c.doJSON(ctx, http.MethodGet, "/v1/channels", nil, nil, &chs)
	return chs, err
}

// Channel describes one channel.
func (c *Client) Channel(ctx context.Context, name string) (Channel, error) {
	var ch Channel
	_, err := c.doJSON(ctx, http.MethodGet, channelPath(name), nil, nil, &ch)
	return ch, err
}

// ChangeChannel changes a channel's replica count or quota (PATCH
// /v1/channels/{ch}); the answer is the channel as the new placement has
// it. Its group converges to that placement afterwards: Channel's
// Progress says when it has.
func (c *Client) ChangeChannel(ctx context.Context, name string, req ChangeChannelRequest) (Channel, error) {
	var ch Channel
	_, err := c.doJSON(ctx, http.MethodPatch, channelPath(name), nil, req, &ch)
	return ch, err
}

// DeleteChannel deletes a channel and its data.
func (c *Client) DeleteChannel(ctx context.Context, name string) error {
	_, err := c.doJSON(ctx, http.MethodDelete, channelPath(name), nil, nil, nil)
	return err
}

// RepairReplica rebuilds node's replica of channel, which a hash check
// marked corrupt (Replica.HashMismatch), from the leader's state.
func (c *Client) RepairReplica(ctx context.Context, channel, node string) (RepairResponse, error) {
	var out RepairResponse
	_, err := c.doJSON(ctx, http.MethodPost, channelPath(channel)+"/repair", nil, RepairRequest{Node: node}, &out)
	return out, err
}

// CreateToken issues a token of channel; the answer holds its secret, once.
func (c *Client) CreateToken(ctx context.Context, channel string, req TokenRequest) (TokenCreated, error) {
	var out TokenCreated
	_, err := c.doJSON(ctx, http.MethodPost, channelPath(channel)+"/tokens", nil, req, &out)
	return out, err
}

// Tokens lists channel's tokens, without their secrets.
func (c *Client) Tokens(ctx context.Context, channel string) ([]TokenInfo, error) {
	var out []TokenInfo
	_, err := c.doJSON(ctx, http.MethodGet, channelPath(channel)+"/tokens", nil, nil, &out)
	return out, err
}

// RevokeToken revokes one of channel's tokens, and every link it signed.
func (c *Client) RevokeToken(ctx context.Context, channel, id string) error {
	_, err := c.doJSON(ctx, http.MethodDelete, channelPath(channel)+"/tokens/"+url.PathEscape(id), nil, nil, nil)
	return err
}

// Sign returns a link to key that works without a token for ttl (0: the
// server's default). The client's token must be one of the channel's.
func (c *Client) Sign(ctx context.Context, channel, key string, ttl time.Duration) (SignResponse, error) {
	req := SignRequest{Key: key}
	if ttl > 0 {
		req.TTL = ttl.String()
	}
	var out SignResponse
	_, err := c.doJSON(ctx, http.MethodPost, channelPath(channel)+"/sign", nil, req, &out)
	return out, err
}

// SetChannelSettings replaces channel's public prefixes and CORS.
func (c *Client) SetChannelSettings(ctx context.Context, channel string, s ChannelSettings) (ChannelSettings, error) {
	var out ChannelSettings
	_, err := c.doJSON(ctx, http.MethodPut, channelPath(channel)+"/settings", nil, s, &out)
	return out, err
}

// GossipKeyring lists the gossip keys of the node the client talks to
// (each node has its own keyring: ask each).
func (c *Client) GossipKeyring(ctx context.Context) (GossipKeyring, error) {
	var kr GossipKeyring
	_, err := c.doJSON(ctx, http.MethodGet, "/v1/operator/keyring", nil, nil, &kr)
	return kr, err
}

// ChangeGossipKeyring installs, uses or removes a gossip key (base64) on
// the node the client talks to only, and returns its keyring after.
func (c *Client) ChangeGossipKeyring(ctx context.Context, op KeyringOp, key string) (GossipKeyring, error) {
	method := map[KeyringOp]string{KeyringInstall: http.MethodPost, KeyringUse: http.MethodPut, KeyringRemove: http.MethodDelete}[op]
	if method == "" {
		return GossipKeyring{}, fmt.Errorf("api: unknown keyring operation %q", op)
	}
	var kr GossipKeyring
	_, err := c.doJSON(ctx, method, "/v1/operator/keyring", nil, KeyringRequest{Key: key}, &kr)
	return kr, err
}

// Put writes value under key and returns the index of the write.
func (c *Client) Put(ctx context.Context, channel, key string, value []byte, opts PutOptions) (uint64, error) {
	q := url.Values{}
	if opts.CAS != nil {
		q.Set("cas", strconv.FormatUint(*opts.CAS, 10))
	}
	resp, err := c.write(ctx, http.MethodPut, kvPath(channel, key), q, value, "application/octet-stream", len(value) > maxValueBytes)
	if err != nil {
		return 0, err
	}
	var w WriteResponse
	if err := decodeBody(resp, &w); err != nil {
		return 0, err
	}
	return w.Index, nil
}

// Get reads key and returns its value and modify index. A missing key is an
// *Error with IsNotFound true whose Index is the replica's applied index.
func (c *Client) Get(ctx context.Context, channel, key string, opts GetOptions) ([]byte, uint64, error) {
	q := url.Values{}
	if opts.Consistency != "" {
		q.Set("consistency", string(opts.Consistency))
	}
	if opts.WaitIndex > 0 || opts.Wait > 0 {
		q.Set("index", strconv.FormatUint(opts.WaitIndex, 10))
		if opts.Wait > 0 {
			q.Set("wait", opts.Wait.String())
		}
	}
	resp, err := c.do(ctx, http.MethodGet, kvPath(channel, key), q, nil, "", false, "")
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	value, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, 0, fmt.Errorf("api: read value of %q: %w", key, err)
	}
	return value, headerIndex(resp.Header), nil
}

// Delete removes key and returns the index of the delete. A missing key is
// a 404 key_not_found.
func (c *Client) Delete(ctx context.Context, channel, key string, opts DeleteOptions) (uint64, error) {
	q := url.Values{}
	if opts.CAS != nil {
		q.Set("cas", strconv.FormatUint(*opts.CAS, 10))
	}
	resp, err := c.write(ctx, http.MethodDelete, kvPath(channel, key), q, nil, "", false)
	if err != nil {
		return 0, err
	}
	var w WriteResponse
	err = decodeBody(resp, &w)
	return w.Index, err
}

// List returns up to limit keys (0: the server's default, 100; at most
// 1000) that start with prefix and sort after after. Pass the answer's Next
// as after to read the next page; Next is "" on the last page.
func (c *Client) List(ctx context.Context, channel, prefix, after string, limit int, consistency Consistency) (ListResponse, error) {
	q := url.Values{}
	if prefix != "" {
		q.Set("prefix", prefix)
	}
	if after != "" {
		q.Set("after", after)
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	if consistency != "" {
		q.Set("consistency", string(consistency))
	}
	var l ListResponse
	_, err := c.doJSON(ctx, http.MethodGet, channelPath(channel)+"/kv/", q, nil, &l)
	return l, err
}

// Txn runs a transaction. A failed compare is not an error: Succeeded is
// false and the failure ops ran.
func (c *Client) Txn(ctx context.Context, channel string, req TxnRequest) (TxnResponse, error) {
	var r TxnResponse
	b, err := json.Marshal(req)
	if err != nil {
		return r, fmt.Errorf("api: encode txn: %w", err)
	}
	resp, err := c.write(ctx, http.MethodPost, channelPath(channel)+"/txn", nil, b, "application/json", false)
	if err != nil {
		return r, err
	}
	err = decodeBody(resp, &r)
	return r, err
}

func channelPath(name string) string { return "/v1/channels/" + url.PathEscape(name) }

func kvPath(channel, key string) string { return channelPath(channel) + "/kv/" + EscapeKey(key) }

// doJSON sends in (when non-nil) as JSON and decodes the answer into out
// (when non-nil).
func (c *Client) doJSON(ctx context.Context, method, path string, q url.Values, in, out any) (*http.Response, error) {
	var body io.Reader
	ctype := ""
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, fmt.Errorf("api: encode %s %s: %w", method, path, err)
		}
		body, ctype = bytes.NewReader(b), "application/json"
	}
	resp, err := c.do(ctx, method, path, q, body, ctype, false, "")
	if err != nil {
		return nil, err
	}
	return resp, decodeBody(resp, out)
}

// write sends a write under an idempotency key (the caller's, from
// WithIdempotencyKey, or a new one) and sends it again, under the same key,
// as WithRetries allows. A cluster that does not apply keyed writes yet
// (409 upgrade_pending: nothing was proposed) gets the write once more
// without the client's own key, and no retries after an unknown outcome.
func (c *Client) write(ctx context.Context, method, path string, q url.Values, body []byte, ctype string, expect bool) (*http.Response, error) {
	key, given := ctx.Value(idemKeyCtx{}).(string)
	if !given {
		key = NewIdempotencyKey()
	}
	for attempt := 0; ; attempt++ {
		var r io.Reader
		if body != nil {
			r = bytes.NewReader(body)
		}
		resp, err := c.do(ctx, method, path, q, r, ctype, expect, key)
		if err == nil {
			return resp, nil
		}
		if !given && key != "" && hasCode(err, CodeUpgradePending) {
			key = "" // not proposed: send it as writes were sent before keys
			attempt--
			continue
		}
		if attempt >= c.retries || ctx.Err() != nil || !mayRetryWrite(err, key != "") {
			return nil, err
		}
		t := time.NewTimer(c.retryPause)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, err
		case <-t.C:
		}
	}
}

// mayRetryWrite says whether a write that failed with err may be sent
// again: when nothing was applied (IsRetryable), or, for a keyed write,
// when its outcome is unknown (an answer lost, a 503 outcome_unknown or
// timeout): the key makes the retry answer what the first attempt did.
func mayRetryWrite(err error, keyed bool) bool {
	if IsRetryable(err) {
		return true
	}
	if !keyed {
		return false
	}
	if e := AsError(err); e != nil {
		return e.Status == http.StatusServiceUnavailable
	}
	return true // no answer: a connection lost, maybe after sending
}

func decodeBody(resp *http.Response, out any) error {
	defer resp.Body.Close()
	if out == nil || resp.StatusCode == http.StatusNoContent {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxErrorBody))
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("api: decode answer of %s %s: %w", resp.Request.Method, resp.Request.URL.Path, err)
	}
	return nil
}

// do sends one request; an answer of 400 or above becomes an *Error. With
// expect, the body waits for "100 Continue": the node refuses an oversized
// body before reading it, and without the handshake the client could see the
// connection reset mid-upload instead of the 413.
func (c *Client) do(ctx context.Context, method, path string, q url.Values, body io.Reader, ctype string, expect bool, idemKey string) (*http.Response, error) {
	u := c.base + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, fmt.Errorf("api: %s %s: %w", method, path, err)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	if expect {
		req.Header.Set("Expect", "100-continue")
	}
	if idemKey != "" {
		req.Header.Set(HeaderIdempotencyKey, idemKey)
		// net/http takes a request with an Idempotency-Key for replayable
		// and, when a kept-alive connection breaks after it was sent,
		// sends it again by itself; if that second send fails to dial,
		// the caller sees "connection refused" for a write that was
		// applied. Only this client retries, and it says so (WithRetries):
		// a body without GetBody is not replayable.
		req.GetBody = nil
		if req.Body == nil {
			req.Body = io.NopCloser(strings.NewReader(""))
		}
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("api: %s %s: %w", method, path, err)
	}
	if resp.StatusCode < 400 {
		return resp, nil
	}
	defer resp.Body.Close()
	return nil, readError(resp)
}

func readError(resp *http.Response) *Error {
	e := &Error{Status: resp.StatusCode, Index: headerIndex(resp.Header)}
	if s := resp.Header.Get("Retry-After"); s != "" {
		if n, err := strconv.Atoi(s); err == nil && n >= 0 {
			e.RetryAfter = time.Duration(n) * time.Second
		}
	}
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	var body ErrorBody
	if json.Unmarshal(raw, &body) == nil && body.Error.Code != "" {
		e.Code, e.Message = body.Error.Code, body.Error.Message
		return e
	}
	// Not one of ours (a proxy in between, say): keep what it said.
	e.Code = "http_" + strconv.Itoa(resp.StatusCode)
	e.Message = strings.TrimSpace(string(raw))
	if strings.Contains(e.Message, "HTTP request to an HTTPS server") {
		// Go's answer to plain HTTP on a TLS port; say what to change.
		e.Message = "the node serves HTTPS: use an https:// address (" + e.Message + ")"
	}
	if e.Message == "" {
		e.Message = http.StatusText(resp.StatusCode)
	}
	return e
}

func headerIndex(h http.Header) uint64 {
	n, _ := strconv.ParseUint(h.Get(HeaderIndex), 10, 64)
	return n
}
