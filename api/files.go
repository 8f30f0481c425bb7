package api

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// FilePut is the answer of PUT /v1/channels/{ch}/files/{path}.
type FilePut struct {
	Path   string `json:"path"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"` // hex; the file's ETag
	Chunks int    `json:"chunks"`
	Index  uint64 `json:"index"` // the Raft index that committed the manifest
}

// FileInfo is a file's manifest as GET .../files/ lists it.
type FileInfo struct {
	Path        string `json:"path"`
	Size        uint64 `json:"size"`
	ContentType string `json:"content_type,omitempty"`
	SHA256      string `json:"sha256"`
	ChunkSize   uint64 `json:"chunk_size"`
	Chunks      int    `json:"chunks"`
	Holders     int    `json:"holders"`
	CreateIndex uint64 `json:"create_index"`
	ModifyIndex uint64 `json:"modify_index"`
}

// FileList is a page of GET /v1/channels/{ch}/files/.
type FileList struct {
	Files []FileInfo `json:"files"`
	More  bool       `json:"more"`
}

// FileDeleted is the answer of DELETE /v1/channels/{ch}/files/{path}.
type FileDeleted struct {
	Path  string `json:"path"`
	Index uint64 `json:"index"`
}

// PutFileOptions are an upload's optional headers.
type PutFileOptions struct {
	ContentType string
	// SHA256 (hex), when set, is checked against the body before the
	// manifest commits (X-Shardnet-Sha256).
	SHA256 string
	// IfNoneMatch creates only (If-None-Match: *); IfMatch replaces only
	// the version with that ETag (a sha256 in hex).
	IfNoneMatch bool
	IfMatch     string
}

// GetFileOptions are a download's optional headers.
type GetFileOptions struct {
	Consistency Consistency
	// Range is a Range header ("bytes=0-99"); IfRange its If-Range.
	Range, IfRange string
}

// FileStat is what HEAD tells of a file.
type FileStat struct {
	Size        int64
	ContentType string
	ETag        string // the sha256 in hex, unquoted
	Index       uint64 // the manifest's modify index
}

func filePath(channel, path string) string { return channelPath(channel) + "/files/" + EscapeKey(path) }

// send sends req with the client's token; an answer of 400 or above is an
// *Error.
func (c *Client) send(req *http.Request) (*http.Response, error) {
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("api: %s %s: %w", req.Method, req.URL.Path, err)
	}
	if resp.StatusCode < 400 {
		return resp, nil
	}
	defer resp.Body.Close()
	return nil, readError(resp)
}

// PutFile uploads body (size bytes; -1 when unknown: sent chunked) as
// path of channel. An upload is not retried: its body is read once.
func (c *Client) PutFile(ctx context.Context, channel, path string, body io.Reader, size int64, opts PutFileOptions) (FilePut, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, c.base+filePath(channel, path), body)
	if err != nil {
		return FilePut{}, fmt.Errorf("api: put file %q: %w", path, err)
	}
	req.ContentLength = size
	if size == 0 {
		req.Body = http.NoBody
	}
	if opts.ContentType != "" {
		req.Header.Set("Content-Type", opts.ContentType)
	}
	if opts.SHA256 != "" {
		req.Header.Set("X-Shardnet-Sha256", opts.SHA256)
	}
	if opts.IfNoneMatch {
		req.Header.Set("If-None-Match", "*")
	}
	if opts.IfMatch != "" {
		req.Header.Set("If-Match", `"`+opts.IfMatch+`"`)
	}
	resp, err := c.send(req)
	if err != nil {
		return FilePut{}, err
	}
	var out FilePut
	return out, decodeBody(resp, &out)
}

// GetFile starts a download; the caller reads and closes the response's
// body (200, or 206 for a Range).
func (c *Client) GetFile(ctx context.Context, channel, path string, opts GetFileOptions) (*http.Response, error) {
	u := c.base + filePath(channel, path)
	if opts.Consistency != "" {
		u += "?consistency=" + url.QueryEscape(string(opts.Consistency))
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("api: get file %q: %w", path, err)
	}
	if opts.Range != "" {
		req.Header.Set("Range", opts.Range)
	}
	if opts.IfRange != "" {
		req.Header.Set("If-Range", opts.IfRange)
	}
	return c.send(req)
}

// StatFile describes a file (HEAD), read linearizably.
func (c *Client) StatFile(ctx context.Context, channel, path string) (FileStat, error) {
	return c.StatFileAt(ctx, channel, path, "")
}

// StatFileAt describes a file (HEAD) read at level ("" is linearizable).
// A HEAD answer has no body, so an error's Code is "http_<status>": a 404
// does not say whether the file or the channel is missing.
func (c *Client) StatFileAt(ctx context.Context, channel, path string, level Consistency) (FileStat, error) {
	u := c.base + filePath(channel, path)
	if level != "" {
		u += "?consistency=" + url.QueryEscape(string(level))
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, u, nil)
	if err != nil {
		return FileStat{}, fmt.Errorf("api: stat file %q: %w", path, err)
	}
	resp, err := c.send(req)
	if err != nil {
		return FileStat{}, err
	}
	resp.Body.Close()
	return FileStat{
		Size: resp.ContentLength, ContentType: resp.Header.Get("Content-Type"),
		ETag: strings.Trim(resp.Header.Get("Etag"), `"`), Index: headerIndex(resp.Header),
	}, nil
}

// ListFiles lists a page of a channel's files, read linearizably.
func (c *Client) ListFiles(ctx context.Context, channel, prefix, after string, limit int) (FileList, error) {
	return c.ListFilesAt(ctx, channel, prefix, after, limit, "")
}

// ListFilesAt lists a page of a channel's files read at level ("" is
// linearizable).
func (c *Client) ListFilesAt(ctx context.Context, channel, prefix, after string, limit int, level Consistency) (FileList, error) {
	q := url.Values{}
	if level != "" {
		q.Set("consistency", string(level))
	}
	if prefix != "" {
		q.Set("prefix", prefix)
	}
	if after != "" {
		q.Set("after", after)
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var out FileList
	_, err := c.doJSON(ctx, http.MethodGet, channelPath(channel)+"/files/", q, nil, &out)
	return out, err
}

// DeleteFile removes a file (only the version with ETag ifMatch, when set).
func (c *Client) DeleteFile(ctx context.Context, channel, path, ifMatch string) (uint64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodDelete, c.base+filePath(channel, path), nil)
	if err != nil {
		return 0, fmt.Errorf("api: delete file %q: %w", path, err)
	}
	if ifMatch != "" {
		req.Header.Set("If-Match", `"`+ifMatch+`"`)
	}
	resp, err := c.send(req)
	if err != nil {
		return 0, err
	}
	var out FileDeleted
	return out.Index, decodeBody(resp, &out)
}

// SignFile returns a signed link to GET or HEAD a file (with a channel
// token).
func (c *Client) SignFile(ctx context.Context, channel, path string, ttl time.Duration) (SignResponse, error) {
	req := SignRequest{File: path}
	if ttl > 0 {
		req.TTL = ttl.String()
	}
	var out SignResponse
	_, err := c.doJSON(ctx, http.MethodPost, channelPath(channel)+"/sign", nil, req, &out)
	return out, err
}

// HeaderUploadOffset is a resumable upload's offset: where a PATCH starts,
// and (in answers) the bytes held durably so far.
const HeaderUploadOffset = "Upload-Offset"

// UploadRequest is the body of POST /v1/channels/{ch}/uploads.
type UploadRequest struct {
	Path        string `json:"path"`
	Size        int64  `json:"size"`
	ContentType string `json:"content_type,omitempty"`
	SHA256      string `json:"sha256,omitempty"` // hex, checked when the last byte is in
	IfNoneMatch bool   `json:"if_none_match,omitempty"`
	IfMatch     string `json:"if_match,omitempty"` // a sha256 in hex
}

// Upload is a resumable upload's state.
type Upload struct {
	ID     string `json:"id"`
	Path   string `json:"path"`
	Offset int64  `json:"offset"`
	Size   int64  `json:"size"`
	// File is the committed file, once the last byte is in.
	File *FilePut `json:"file,omitempty"`
}

func uploadPath(channel, id string) string {
	return channelPath(channel) + "/uploads/" + url.PathEscape(id)
}

// CreateUpload opens a resumable upload on the node the client talks to;
// resume it there.
func (c *Client) CreateUpload(ctx context.Context, channel string, req UploadRequest) (Upload, error) {
	var out Upload
	_, err := c.doJSON(ctx, http.MethodPost, channelPath(channel)+"/uploads", nil, req, &out)
	return out, err
}

// UploadStatus reads an upload's offset.
func (c *Client) UploadStatus(ctx context.Context, channel, id string) (Upload, error) {
	var out Upload
	_, err := c.doJSON(ctx, http.MethodGet, uploadPath(channel, id), nil, nil, &out)
	return out, err
}

// AppendUpload sends size bytes of body from offset (the upload's
// offset). The answer's Offset is where the next request starts; File is
// set once the file committed.
func (c *Client) AppendUpload(ctx context.Context, channel, id string, offset int64, body io.Reader, size int64) (Upload, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPatch, c.base+uploadPath(channel, id), body)
	if err != nil {
		return Upload{}, fmt.Errorf("api: append upload %s: %w", id, err)
	}
	req.ContentLength = size
	if size == 0 {
		req.Body = http.NoBody
	}
	req.Header.Set(HeaderUploadOffset, strconv.FormatInt(offset, 10))
	req.Header.Set("Content-Type", "application/offset+octet-stream")
	resp, err := c.send(req)
	if err != nil {
		return Upload{}, err
	}
	var out Upload
	return out, decodeBody(resp, &out)
}
