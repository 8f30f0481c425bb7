package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/shardnet/shardnet/api"
	"github.com/shardnet/shardnet/fsm"
)

// Backup and restore of a channel (docs/api.md "Backup and restore"):
// GET /v1/channels/{ch}/snapshot streams a backup file (fsm/backupfile.go);
// POST /v1/channels/{ch}/restore takes one as its body, streamed, and
// creates channel {ch} from it.

// maxBackupBytes bounds a restore's body; the upload is streamed to disk,
// so this bounds only its arrival deadline (bodyDeadline).
const maxBackupBytes = 1 << 40

// backupChannel serves GET /v1/channels/{ch}/snapshot. Errors found before
// the first byte are JSON errors; one in the middle of the stream aborts
// the response, and the client's file lacks its trailer (the CLI checks
// it).
func (s *Server) backupChannel(ctx context.Context, req *request) (*response, error) {
	if err := validChannel(req.ch); err != nil {
		return nil, err
	}
	h, rc, err := s.b.Backup(ctx, req.ch)
	if err != nil {
		return nil, err
	}
	resp := &response{header: http.Header{}}
	resp.header.Set("Content-Type", api.BackupContentType)
	resp.header.Set(api.HeaderIndex, strconv.FormatUint(h.Index, 10))
	resp.header.Set("Content-Disposition", `attachment; filename="`+req.ch+"-"+strconv.FormatUint(h.Index, 10)+`.shnbak"`)
	resp.content = func(w http.ResponseWriter) {
		defer rc.Close()
		w.WriteHeader(http.StatusOK)
		start := time.Now()
		// The cluster's stream reads the chunks its files need; without
		// one, a channel with files cannot be backed up.
		src, _ := rc.(fsm.ChunkSource)
		_, n, err := fsm.WriteBackupChunks(w, h, rc, src)
		if err != nil {
			s.log.Error("backup stream failed", "channel", req.ch, "index", h.Index, "bytes", n, "error", err)
			panic(http.ErrAbortHandler) // the client sees the stream cut
		}
		s.log.Info("backup sent", "channel", req.ch, "index", h.Index, "bytes", n, "duration", time.Since(start))
	}
	return resp, nil
}

// restoreChannel serves POST /v1/channels/{ch}/restore?replicas=N: 201
// with the channel once it serves the backup's state. A raw endpoint: the
// body is streamed to the backend, not buffered.
func (s *Server) restoreChannel(w http.ResponseWriter, r *http.Request) {
	_, ch, _ := s.match(r.URL.EscapedPath())
	if err := validChannel(ch); err != nil {
		writeError(w, err)
		return
	}
	replicas := 0
	if v := r.URL.Query().Get("replicas"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > MaxReplicas {
			writeError(w, invalid("replicas must be from 1 to %d, not %q", MaxReplicas, v))
			return
		}
		replicas = n
	}
	n := r.ContentLength
	if n < 0 {
		n = maxBackupBytes
	}
	rc := http.NewResponseController(w)
	body := &eofReader{r: &stallReader{r: r.Body, rc: rc, stall: s.bodyTimeout, deadline: s.bodyDeadline(time.Now(), n)}, rc: rc}
	c, h, err := s.b.RestoreChannel(r.Context(), ch, replicas, body)
	if err != nil {
		if errors.Is(err, fsm.ErrBadBackup) {
			// The rest of the body is not read: close rather than let
			// net/http discard it.
			w.Header().Set("Connection", "close")
		}
		writeError(w, err)
		return
	}
	writeResponse(w, jsonResponse(http.StatusCreated, api.RestoreResponse{
		Channel: c, From: h.Channel, Index: h.Index, Term: h.Term, Created: h.Created,
	}))
}

// eofReader lifts the read deadline once the body is in: the restore then
// waits for the channel to start, which is not the client's time, and
// net/http's background read must not time out under it.
type eofReader struct {
	r  io.Reader
	rc *http.ResponseController
}

func (e *eofReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err == io.EOF {
		_ = e.rc.SetReadDeadline(time.Time{})
	}
	return n, err
}

// recoverChannel serves POST /v1/channels/{ch}/recover: re-forms a channel
// that lost a majority of its replicas from its best survivor
// (docs/operations.md "Recovering a channel that lost a quorum").
func (s *Server) recoverChannel(ctx context.Context, req *request) (*response, error) {
	if err := validChannel(req.ch); err != nil {
		return nil, err
	}
	var b api.RecoverRequest
	if err := decodeStrict(req.body, &b); err != nil {
		return nil, err
	}
	res, err := s.b.RecoverChannel(ctx, req.ch, b.Confirm)
	if err != nil {
		return nil, fmt.Errorf("recover channel %s: %w", req.ch, err)
	}
	return jsonResponse(http.StatusOK, res), nil
}
