package server

import (
	"context"
	"fmt"
	"net/http"

	"github.com/shardnet/shardnet/api"
	"github.com/shardnet/shardnet/fsm"
)

// changeChannel serves PATCH /v1/channels/{ch}: a new replica count,
// quota or chunk size. 200 with the channel as its new placement has it; its group
// converges to that placement afterwards (GET shows the progress). A body
// that is not valid changes nothing.
func (s *Server) changeChannel(ctx context.Context, req *request) (*response, error) {
	if err := validChannel(req.ch); err != nil {
		return nil, err
	}
	var b api.ChangeChannelRequest
	if err := decodeStrict(req.body, &b); err != nil {
		return nil, err
	}
	if b.Replicas == nil && b.QuotaBytes == nil && b.ChunkSize == nil {
		return nil, invalid("nothing to change: give replicas, quota_bytes or chunk_size")
	}
	if b.ChunkSize != nil && *b.ChunkSize != 0 {
		if err := fsm.ValidateChunkSize(*b.ChunkSize); err != nil {
			return nil, invalid("chunk_size: %v", err)
		}
	}
	if b.Replicas != nil && (*b.Replicas < 1 || *b.Replicas > MaxReplicas) {
		return nil, invalid("replicas must be from 1 to %d, not %d", MaxReplicas, *b.Replicas)
	}
	ctx, cancel := s.opContext(ctx)
	defer cancel()
	ch, err := s.b.ChangeChannel(ctx, req.ch, b)
	if err != nil {
		return nil, fmt.Errorf("change channel %s: %w", req.ch, err)
	}
	return jsonResponse(http.StatusOK, ch), nil
}
