package server

import (
	"context"
	"crypto/md5"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/shardnet/shardnet/api"
	"github.com/shardnet/shardnet/cluster"
	"github.com/shardnet/shardnet/fsm"
	"github.com/shardnet/shardnet/shard"
)

// Files in channels (docs/api.md "Files"): uploads stream through the
// node to the channel's replicas, downloads stream from chunks, served
// with http.ServeContent (Range, multipart ranges, If-Range,
// If-None-Match, HEAD) over a seekable reader of the file's chunks.

// FileBackend is what the file routes need of the node (package cluster
// implements it). A Backend without it (the test memories) answers the
// file routes with 404.
type FileBackend interface {
	// PutFile streams body into chunks on the channel's replicas and commits its manifest once a majority hold every chunk.
	PutFile(ctx context.Context, channel, path string, body io.Reader, opts cluster.PutFileOptions) (cluster.FilePut, error)
	// StatFile reads a file's manifest at level, and the applied index it was read at.
	StatFile(ctx context.Context, channel, path string, level shard.ReadLevel) (fsm.Manifest, uint64, error)
	// OpenFile returns a seekable reader of the file's bytes (verified chunks, fetched from peers when missing here).
	OpenFile(ctx context.Context, channel string, m fsm.Manifest) (*cluster.FileReader, error)
	// ListFiles returns a page of manifests at level.
	ListFiles(ctx context.Context, channel, prefix, after string, limit int, level shard.ReadLevel) ([]fsm.Manifest, bool, error)
	// DeleteFile removes a file's manifest (cond fsm.CondMatch: only if its sha256 is match).
	DeleteFile(ctx context.Context, channel, path string, cond byte, match [32]byte) (uint64, error)
}

// Headers of file uploads.
const (
	headerSHA256 = "X-Shardnet-Sha256"
	// MaxFileBytes bounds one file: as many chunks as a manifest holds
	// (fsm.MaxFileChunks of cluster.DefaultChunkSize, 256 GiB). It is also
	// what the body deadline is computed for when no Content-Length comes.
	MaxFileBytes = fsm.MaxFileChunks * cluster.DefaultChunkSize
	// maxFileList bounds a listing page.
	maxFileList = 1000
)

var errNoFiles = errors.New("server: this node serves no files")

func (s *Server) files() (FileBackend, error) {
	fb, ok := s.b.(FileBackend)
	if !ok {
		return nil, refuse(errRouteNotFound, "%v", errNoFiles)
	}
	return fb, nil
}

// fileTarget is what every call on one file starts from: the backend's
// file half, and the channel and path checked.
func (s *Server) fileTarget(req *request) (FileBackend, string, error) {
	fb, err := s.files()
	if err != nil {
		return nil, "", err
	}
	if err := validChannel(req.ch); err != nil {
		return nil, "", err
	}
	path, err := parseFilePath(req.rawKey)
	if err != nil {
		return nil, "", err
	}
	return fb, path, nil
}

// parseFilePath unescapes the path part of a file URL and validates it.
func parseFilePath(raw string) (string, error) {
	p, err := api.UnescapeKey(raw)
	if err != nil {
		return "", refuse(fsm.ErrInvalidPath, "file path %q is not a valid escaped path: %v", raw, err)
	}
	if err := fsm.ValidatePath(p); err != nil {
		return "", err
	}
	return p, nil
}

// etag is a file's ETag: its sha256, quoted.
func etag(sum [32]byte) string { return `"` + hex.EncodeToString(sum[:]) + `"` }

// parseETag reads an If-Match value: one quoted (or bare) sha256 in hex.
func parseETag(v string) ([32]byte, error) {
	var sum [32]byte
	v = strings.TrimPrefix(strings.TrimSpace(v), "W/")
	b, err := hex.DecodeString(strings.Trim(v, `"`))
	if err != nil || len(b) != 32 {
		return sum, invalid("If-Match %q must be one file ETag (a quoted sha256 in hex)", v)
	}
	copy(sum[:], b)
	return sum, nil
}

// filePut serves PUT /v1/channels/{ch}/files/{path}: the body streams
// through; nothing is committed unless it arrives whole and matches its
// Content-Length and X-Shardnet-Sha256 or Content-MD5.
func (s *Server) filePut(ctx context.Context, req *request) (*response, error) {
	fb, path, err := s.fileTarget(req)
	if err != nil {
		return nil, err
	}
	r := req.r
	if r.ContentLength > MaxFileBytes {
		return nil, refuse(errBodyTooLarge, "a file is at most %d bytes, not %d", int64(MaxFileBytes), r.ContentLength)
	}
	opts := cluster.PutFileOptions{Size: r.ContentLength, ContentType: r.Header.Get("Content-Type")}
	if opts.ContentType != "" {
		if _, _, err := mime.ParseMediaType(opts.ContentType); err != nil || len(opts.ContentType) > fsm.MaxContentTypeBytes {
			return nil, invalid("Content-Type %q is not a media type of at most %d bytes", opts.ContentType, fsm.MaxContentTypeBytes)
		}
	}
	if v := r.Header.Get(headerSHA256); v != "" {
		b, err := hex.DecodeString(v)
		if err != nil || len(b) != 32 {
			return nil, invalid("%s %q must be a sha256 in hex (64 digits)", headerSHA256, v)
		}
		opts.SHA256 = new([32]byte)
		copy(opts.SHA256[:], b)
	}
	body := req.stream
	if v := r.Header.Get("Content-MD5"); v != "" {
		want, err := base64.StdEncoding.DecodeString(v)
		if err != nil || len(want) != md5.Size {
			return nil, invalid("Content-MD5 %q must be the base64 of an MD5 digest", v)
		}
		h := md5.New()
		body = io.TeeReader(body, h)
		opts.Check = func() error { return checkMD5(h, want) }
	}
	switch inm, im := r.Header.Get("If-None-Match"), r.Header.Get("If-Match"); {
	case inm != "" && im != "":
		return nil, invalid("send If-None-Match or If-Match, not both")
	case inm == "*":
		opts.Cond = fsm.CondAbsent
	case inm != "":
		return nil, invalid("If-None-Match on an upload must be *")
	case im != "":
		if opts.Match, err = parseETag(im); err != nil {
			return nil, err
		}
		opts.Cond = fsm.CondMatch
	}
	res, err := fb.PutFile(ctx, req.ch, path, body, opts)
	if err != nil {
		return nil, fmt.Errorf("upload %q to channel %s: %w", path, req.ch, err)
	}
	resp := jsonResponse(http.StatusCreated, api.FilePut{
		Path: res.Path, Size: res.Size, SHA256: hex.EncodeToString(res.SHA256[:]), Chunks: res.Chunks, Index: res.Index,
	})
	resp.header.Set("Etag", etag(res.SHA256))
	resp.header.Set(api.HeaderIndex, strconv.FormatUint(res.Index, 10))
	return resp, nil
}

func checkMD5(h hash.Hash, want []byte) error {
	if got := h.Sum(nil); string(got) != string(want) {
		return fmt.Errorf("%w: the body's MD5 is %s, Content-MD5 says %s", cluster.ErrUploadMismatch,
			base64.StdEncoding.EncodeToString(got), base64.StdEncoding.EncodeToString(want))
	}
	return nil
}

// runnable are media types a browser would run or render as a document
// with script: served as attachments, never inline on the API's origin.
func runnable(ct string) bool {
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return true // unknown: do not let a browser guess
	}
	switch {
	case mt == "text/html", mt == "application/xhtml+xml", mt == "image/svg+xml",
		mt == "text/xml", mt == "application/xml", strings.HasSuffix(mt, "+xml"),
		strings.Contains(mt, "javascript"), strings.Contains(mt, "ecmascript"),
		mt == "application/pdf", mt == "text/xsl", mt == "application/wasm",
		mt == "multipart/x-mixed-replace":
		return true
	}
	return false
}

// fileGet serves GET and HEAD /v1/channels/{ch}/files/{path}.
func (s *Server) fileGet(ctx context.Context, req *request) (*response, error) {
	fb, path, err := s.fileTarget(req)
	if err != nil {
		return nil, err
	}
	level, err := parseConsistency(req.query)
	if err != nil {
		return nil, err
	}
	rctx, cancel := s.opContext(ctx)
	m, _, err := fb.StatFile(rctx, req.ch, path, level)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("file %q of channel %s: %w", path, req.ch, err)
	}
	// The download runs for as long as the client reads (ctx is the
	// request's), not the operation deadline of a small read.
	fr, err := fb.OpenFile(ctx, req.ch, m)
	if err != nil {
		return nil, err
	}
	resp := &response{header: http.Header{}}
	h := resp.header
	ct := m.ContentType
	if ct == "" {
		ct = "application/octet-stream"
	}
	h.Set("Content-Type", ct)
	h.Set("Etag", etag(m.SHA256))
	h.Set("X-Content-Type-Options", "nosniff")
	// No script, plugin or form on the API's origin, whatever the file
	// is; media and images still load (a <video> plays it).
	h.Set("Content-Security-Policy", "sandbox; default-src 'none'; img-src 'self' data:; media-src 'self'; style-src 'unsafe-inline'")
	if runnable(ct) {
		h.Set("Content-Disposition", "attachment")
	}
	h.Set(api.HeaderIndex, strconv.FormatUint(m.ModifyIndex, 10))
	h.Set(api.HeaderCreateIndex, strconv.FormatUint(m.CreateIndex, 10))
	s.setLag(h, req.ch, level)
	resp.content = func(w http.ResponseWriter) {
		defer fr.Close()
		// The chunks are read and checked ahead, beside the writes, and
		// written a block at a time (readahead.go); stopped before fr
		// closes.
		ra := newReadAhead(fr, fr.Size())
		defer ra.Close()
		// Range (one or several: multipart/byteranges), If-Range,
		// If-None-Match (304), HEAD and Accept-Ranges, as net/http tests
		// them; the ETag above is what the conditions compare.
		http.ServeContent(bulkWriter{w}, req.r, "", time.Time{}, ra)
	}
	return resp, nil
}

// fileDelete serves DELETE /v1/channels/{ch}/files/{path} (If-Match:
// only that version).
func (s *Server) fileDelete(ctx context.Context, req *request) (*response, error) {
	fb, path, err := s.fileTarget(req)
	if err != nil {
		return nil, err
	}
	cond, match := fsm.CondNone, [32]byte{}
	if im := req.r.Header.Get("If-Match"); im != "" {
		if match, err = parseETag(im); err != nil {
			return nil, err
		}
		cond = fsm.CondMatch
	}
	ctx, cancel := s.opContext(ctx)
	defer cancel()
	index, err := fb.DeleteFile(ctx, req.ch, path, cond, match)
	if err != nil {
		return nil, withIndex(fmt.Errorf("delete file %q of channel %s: %w", path, req.ch, err), index)
	}
	resp := jsonResponse(http.StatusOK, api.FileDeleted{Path: path, Index: index})
	resp.header.Set(api.HeaderIndex, strconv.FormatUint(index, 10))
	return resp, nil
}

// fileList serves GET /v1/channels/{ch}/files/?prefix=&after=&limit=.
func (s *Server) fileList(ctx context.Context, req *request) (*response, error) {
	fb, err := s.files()
	if err != nil {
		return nil, err
	}
	if err := validChannel(req.ch); err != nil {
		return nil, err
	}
	level, err := parseConsistency(req.query)
	if err != nil {
		return nil, err
	}
	prefix, after := req.query.Get("prefix"), req.query.Get("after")
	for _, v := range []string{prefix, after} {
		if len(v) > fsm.MaxFilePathBytes {
			return nil, refuse(fsm.ErrInvalidPath, "prefix and after are at most %d bytes", fsm.MaxFilePathBytes)
		}
	}
	limit := maxFileList
	if v := req.query.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxFileList {
			return nil, invalid("limit %q must be 1 to %d", v, maxFileList)
		}
		limit = n
	}
	ctx, cancel := s.opContext(ctx)
	defer cancel()
	ms, more, err := fb.ListFiles(ctx, req.ch, prefix, after, limit, level)
	if err != nil {
		return nil, fmt.Errorf("list files of channel %s: %w", req.ch, err)
	}
	out := api.FileList{Files: make([]api.FileInfo, 0, len(ms)), More: more}
	for _, m := range ms {
		out.Files = append(out.Files, api.FileInfo{
			Path: m.Path, Size: m.Size, ContentType: m.ContentType, SHA256: hex.EncodeToString(m.SHA256[:]),
			ChunkSize: m.ChunkSize, Chunks: len(m.Chunks), Holders: len(m.Holders),
			CreateIndex: m.CreateIndex, ModifyIndex: m.ModifyIndex,
		})
	}
	return jsonResponse(http.StatusOK, out), nil
}
