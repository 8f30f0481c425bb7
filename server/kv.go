package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/shardnet/shardnet/api"
	"github.com/shardnet/shardnet/fsm"
	"github.com/shardnet/shardnet/shard"
)

// kvGet serves GET /v1/channels/{ch}/kv/{key}: the raw value, or a
// blocking read with ?index=N&wait=D (docs/design.md "D6"). No read writes the
// Raft log: reads go through Backend.Get at the requested level only.
func (s *Server) kvGet(ctx context.Context, req *request) (*response, error) {
	if err := validChannel(req.ch); err != nil {
		return nil, err
	}
	key, err := parseKey(req.rawKey)
	if err != nil {
		return nil, err
	}
	level, err := parseConsistency(req.query)
	if err != nil {
		return nil, err
	}
	w, err := parseWatch(req.query)
	if err != nil {
		return nil, err
	}
	e, found, applied, err := s.get(ctx, req.ch, key, level)
	if err != nil {
		return nil, err
	}
	if w.blocking && !changedSince(e, found, applied, w.index) {
		if err := s.waitKey(ctx, req.ch, key, w); err != nil {
			return nil, err
		}
		// The requested level applies to what is answered after the
		// wait too (a follower's wake-up proves nothing about the leader).
		if e, found, applied, err = s.get(ctx, req.ch, key, level); err != nil {
			return nil, err
		}
	}
	if !found {
		return nil, withIndex(refuse(fsm.ErrKeyNotFound, "key %q not found in channel %s", key, req.ch), applied)
	}
	resp := &response{raw: e.Value, isRaw: true, header: http.Header{}}
	resp.header.Set(api.HeaderIndex, strconv.FormatUint(e.ModifyIndex, 10))
	resp.header.Set(api.HeaderCreateIndex, strconv.FormatUint(e.CreateIndex, 10))
	resp.header.Set("Content-Type", "application/octet-stream")
	// The modify index names the value's version: a range request (a
	// <video> element asks for ranges) with If-Range gets the rest of the
	// same version, or the whole new one.
	resp.header.Set("Etag", `"`+strconv.FormatUint(e.ModifyIndex, 10)+`"`)
	resp.content = func(w http.ResponseWriter) {
		http.ServeContent(w, req.r, "", time.Time{}, bytes.NewReader(e.Value))
	}
	s.setLag(resp.header, req.ch, level)
	return resp, nil
}

func (s *Server) get(ctx context.Context, ch string, key []byte, level shard.ReadLevel) (fsm.Entry, bool, uint64, error) {
	rctx, cancel := s.opContext(ctx)
	defer cancel()
	return s.b.Get(rctx, ch, key, level)
}

// changedSince says whether a blocking read with ?index=N answers at once.
// A present key answers once its modify index is above N. A missing key
// answers once the replica has applied anything above N: without
// tombstones a delete after N cannot be told from a key that never
// existed, and an early answer is harmless while a missed delete is not.
func changedSince(e fsm.Entry, found bool, applied, index uint64) bool {
	if found {
		return e.ModifyIndex > index
	}
	return applied > index
}

// waitKey blocks until the key changes after w.index, the wait ends or the
// server shuts down; the caller then reads again. Only an error of the
// backend (or the client leaving) is returned.
func (s *Server) waitKey(ctx context.Context, ch string, key []byte, w watch) error {
	if n := s.watchers.Add(1); n > s.maxWatchers {
		s.watchers.Add(-1)
		return refuse(errTooManyWatchers, "this node already has %d blocking reads waiting", s.maxWatchers)
	}
	s.metrics.watchers.Inc()
	defer func() {
		s.watchers.Add(-1)
		s.metrics.watchers.Dec()
	}()
	wctx, cancel := context.WithTimeout(ctx, w.wait)
	defer cancel()
	stop := context.AfterFunc(s.closing, cancel)
	defer stop()
	err := s.b.WaitKey(wctx, ch, key, w.index)
	switch {
	case err == nil:
		return nil
	case ctx.Err() != nil:
		return fmt.Errorf("server: client left a blocking read: %w", ctx.Err())
	case wctx.Err() != nil:
		return nil // timed out or shutting down: answer the current value
	default:
		return fmt.Errorf("wait for key %q in channel %s: %w", key, ch, err)
	}
}

// setLag adds X-Shardnet-Lag to a stale read's answer.
func (s *Server) setLag(h http.Header, ch string, level shard.ReadLevel) {
	if level == shard.Stale {
		h.Set(api.HeaderLag, strconv.FormatInt(s.b.Lag(ch).Milliseconds(), 10))
	}
}

// kvPut serves PUT /v1/channels/{ch}/kv/{key}: the body is the value
// (readBody already refused one over fsm.MaxValueBytes with 413).
func (s *Server) kvPut(ctx context.Context, req *request) (*response, error) {
	if err := validChannel(req.ch); err != nil {
		return nil, err
	}
	key, err := parseKey(req.rawKey)
	if err != nil {
		return nil, err
	}
	hasCAS, cas, err := parseCAS(req.query)
	if err != nil {
		return nil, err
	}
	cmd, err := keyed(req, &fsm.Put{Key: key, Value: req.body, HasCAS: hasCAS, CAS: cas})
	if err != nil {
		return nil, err
	}
	res, err := s.propose(ctx, req.ch, cmd)
	if err != nil {
		return nil, fmt.Errorf("put key %q in channel %s: %w", key, req.ch, err)
	}
	return writeAnswer(res.Index), nil
}

// kvDelete serves DELETE /v1/channels/{ch}/kv/{key}.
func (s *Server) kvDelete(ctx context.Context, req *request) (*response, error) {
	if err := validChannel(req.ch); err != nil {
		return nil, err
	}
	key, err := parseKey(req.rawKey)
	if err != nil {
		return nil, err
	}
	hasCAS, cas, err := parseCAS(req.query)
	if err != nil {
		return nil, err
	}
	cmd, err := keyed(req, &fsm.Delete{Key: key, HasCAS: hasCAS, CAS: cas})
	if err != nil {
		return nil, err
	}
	res, err := s.propose(ctx, req.ch, cmd)
	if err != nil {
		return nil, fmt.Errorf("delete key %q in channel %s: %w", key, req.ch, err)
	}
	return writeAnswer(res.Index), nil
}

func writeAnswer(index uint64) *response {
	resp := jsonResponse(http.StatusOK, api.WriteResponse{Index: index})
	resp.header.Set(api.HeaderIndex, strconv.FormatUint(index, 10))
	return resp
}

// propose encodes cmd, proposes it and turns a business outcome (CAS
// mismatch, not found) into an error that reports the entry's index.
func (s *Server) propose(ctx context.Context, ch string, cmd fsm.Command) (*fsm.Result, error) {
	b, err := fsm.Encode(cmd)
	if err != nil {
		return nil, err
	}
	pctx, cancel := s.opContext(ctx)
	defer cancel()
	res, err := s.b.Propose(pctx, ch, b)
	if err != nil {
		return nil, err
	}
	if res == nil {
		return nil, errors.New("server: the backend returned no result for a proposal")
	}
	switch {
	case errors.Is(res.Err, fsm.ErrClosed):
		// The replica closed under the proposal: it may be applied elsewhere.
		return nil, fmt.Errorf("%w: %w", shard.ErrOutcomeUnknown, res.Err)
	case res.Err != nil:
		return nil, withIndex(res.Err, res.Index)
	}
	return res, nil
}

// kvList serves GET /v1/channels/{ch}/kv/?prefix=P&after=K&limit=L.
func (s *Server) kvList(ctx context.Context, req *request) (*response, error) {
	if err := validChannel(req.ch); err != nil {
		return nil, err
	}
	q := req.query
	prefix, after := []byte(q.Get("prefix")), []byte(q.Get("after"))
	if err := checkKeyText(prefix, "prefix"); err != nil {
		return nil, err
	}
	if err := checkKeyText(after, "after"); err != nil {
		return nil, err
	}
	limit, err := parseLimit(q)
	if err != nil {
		return nil, err
	}
	level, err := parseConsistency(q)
	if err != nil {
		return nil, err
	}
	if q.Has("index") || q.Has("wait") {
		return nil, invalid("blocking reads (index, wait) work on single keys, not on listings")
	}
	rctx, cancel := s.opContext(ctx)
	defer cancel()
	es, more, applied, err := s.b.List(rctx, req.ch, prefix, after, limit, level)
	if err != nil {
		return nil, fmt.Errorf("list channel %s: %w", req.ch, err)
	}
	out := api.ListResponse{Items: make([]api.KV, 0, len(es)), Index: applied}
	for _, e := range es {
		out.Items = append(out.Items, api.KV{
			Key: string(e.Key), Value: e.Value, CreateIndex: e.CreateIndex, ModifyIndex: e.ModifyIndex,
		})
	}
	if more && len(es) > 0 {
		out.Next = string(es[len(es)-1].Key)
	}
	resp := jsonResponse(http.StatusOK, out)
	resp.header.Set(api.HeaderIndex, strconv.FormatUint(applied, 10))
	s.setLag(resp.header, req.ch, level)
	return resp, nil
}
