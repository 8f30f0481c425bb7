package server

import (
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"

	"github.com/shardnet/shardnet/api"
	"github.com/shardnet/shardnet/cluster"
	"github.com/shardnet/shardnet/fsm"
)

// Resumable uploads (docs/api.md "Resumable uploads"): POST opens one on
// this node, PATCH sends bytes from its offset, GET reads the offset,
// DELETE drops it.

// UploadBackend is what the upload routes need of the node (package
// cluster implements it).
type UploadBackend interface {
	// CreateUpload opens a resumable upload of length bytes on this node.
	CreateUpload(ctx context.Context, channel, path string, length int64, opts cluster.PutFileOptions) (cluster.UploadState, error)
	// Upload reads an open upload's state.
	Upload(channel, id string) (cluster.UploadState, error)
	// AppendUpload sends an upload's bytes from offset; the file once the last byte is in.
	AppendUpload(ctx context.Context, channel, id string, offset int64, body io.Reader) (cluster.UploadState, *cluster.FilePut, error)
	// AbortUpload drops an open upload.
	AbortUpload(channel, id string) error
}

func (s *Server) uploads() (UploadBackend, error) {
	ub, ok := s.b.(UploadBackend)
	if !ok {
		return nil, refuse(errRouteNotFound, "%v", errNoFiles)
	}
	return ub, nil
}

func uploadAnswer(st cluster.UploadState) api.Upload {
	return api.Upload{ID: st.ID, Path: st.Path, Offset: st.Offset, Size: st.Length}
}

// uploadCreate serves POST /v1/channels/{ch}/uploads.
func (s *Server) uploadCreate(ctx context.Context, req *request) (*response, error) {
	ub, err := s.uploads()
	if err != nil {
		return nil, err
	}
	if err := validChannel(req.ch); err != nil {
		return nil, err
	}
	var b api.UploadRequest
	if err := decodeStrict(req.body, &b); err != nil {
		return nil, err
	}
	if err := fsm.ValidatePath(b.Path); err != nil {
		return nil, err
	}
	if b.Size < 0 || b.Size > MaxFileBytes {
		return nil, invalid("size %d must be 0 to %d", b.Size, int64(MaxFileBytes))
	}
	opts := cluster.PutFileOptions{ContentType: b.ContentType}
	if b.ContentType != "" {
		if _, _, err := mime.ParseMediaType(b.ContentType); err != nil || len(b.ContentType) > fsm.MaxContentTypeBytes {
			return nil, invalid("content_type %q is not a media type of at most %d bytes", b.ContentType, fsm.MaxContentTypeBytes)
		}
	}
	if b.SHA256 != "" {
		v, err := hex.DecodeString(b.SHA256)
		if err != nil || len(v) != 32 {
			return nil, invalid("sha256 %q must be 64 hex digits", b.SHA256)
		}
		opts.SHA256 = new([32]byte)
		copy(opts.SHA256[:], v)
	}
	switch {
	case b.IfNoneMatch && b.IfMatch != "":
		return nil, invalid("if_none_match or if_match, not both")
	case b.IfNoneMatch:
		opts.Cond = fsm.CondAbsent
	case b.IfMatch != "":
		if opts.Match, err = parseETag(b.IfMatch); err != nil {
			return nil, err
		}
		opts.Cond = fsm.CondMatch
	}
	st, err := ub.CreateUpload(ctx, req.ch, b.Path, b.Size, opts)
	if err != nil {
		return nil, fmt.Errorf("upload %q to channel %s: %w", b.Path, req.ch, err)
	}
	resp := jsonResponse(http.StatusCreated, uploadAnswer(st))
	resp.header.Set("Location", "/v1/channels/"+req.ch+"/uploads/"+st.ID)
	resp.header.Set(api.HeaderUploadOffset, "0")
	return resp, nil
}

// uploadStatus serves GET /v1/channels/{ch}/uploads/{id}.
func (s *Server) uploadStatus(ctx context.Context, req *request) (*response, error) {
	ub, err := s.uploads()
	if err != nil {
		return nil, err
	}
	st, err := ub.Upload(req.ch, req.rawKey)
	if err != nil {
		return nil, err
	}
	resp := jsonResponse(http.StatusOK, uploadAnswer(st))
	resp.header.Set(api.HeaderUploadOffset, strconv.FormatInt(st.Offset, 10))
	resp.header.Set("Cache-Control", "no-store")
	return resp, nil
}

// uploadAppend serves PATCH /v1/channels/{ch}/uploads/{id}: 200 with the
// new offset, or 201 with the file once it is whole.
func (s *Server) uploadAppend(ctx context.Context, req *request) (*response, error) {
	ub, err := s.uploads()
	if err != nil {
		return nil, err
	}
	offset, err := strconv.ParseInt(req.r.Header.Get(api.HeaderUploadOffset), 10, 64)
	if err != nil || offset < 0 {
		return nil, invalid("%s must be the upload's offset, a number of bytes", api.HeaderUploadOffset)
	}
	st, file, err := ub.AppendUpload(ctx, req.ch, req.rawKey, offset, req.stream)
	if err != nil {
		return nil, fmt.Errorf("upload %s (now at offset %d): %w", req.rawKey, st.Offset, err)
	}
	out := uploadAnswer(st)
	status := http.StatusOK
	if file != nil {
		status = http.StatusCreated
		out.File = &api.FilePut{Path: file.Path, Size: file.Size, SHA256: hex.EncodeToString(file.SHA256[:]), Chunks: file.Chunks, Index: file.Index}
	}
	resp := jsonResponse(status, out)
	resp.header.Set(api.HeaderUploadOffset, strconv.FormatInt(st.Offset, 10))
	return resp, nil
}

// uploadAbort serves DELETE /v1/channels/{ch}/uploads/{id}.
func (s *Server) uploadAbort(ctx context.Context, req *request) (*response, error) {
	ub, err := s.uploads()
	if err != nil {
		return nil, err
	}
	if err := ub.AbortUpload(req.ch, req.rawKey); err != nil {
		return nil, err
	}
	return &response{status: http.StatusNoContent, header: http.Header{}}, nil
}
