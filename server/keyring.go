package server

import (
	"context"
	"fmt"
	"net/http"

	"github.com/shardnet/shardnet/api"
)

// gossipKeyring serves GET /v1/operator/keyring: this node's gossip keys.
// Like every keyring call it is answered by the node it is sent to, never
// forwarded: each member has its own keyring, and the operator (or
// `shardnet gossip keyring`) asks each one (docs/api.md "Gossip keyring").
func (s *Server) gossipKeyring(ctx context.Context, _ *request) (*response, error) {
	kr, err := s.b.GossipKeyring(ctx)
	if err != nil {
		return nil, fmt.Errorf("gossip keyring: %w", err)
	}
	return jsonResponse(http.StatusOK, kr), nil
}

// changeKeyring serves POST (install), PUT (use) and DELETE (remove)
// /v1/operator/keyring with a body {"key": "<base64>"}.
func (s *Server) changeKeyring(op api.KeyringOp) handlerFunc {
	return func(ctx context.Context, req *request) (*response, error) {
		var b api.KeyringRequest
		if err := decodeStrict(req.body, &b); err != nil {
			return nil, err
		}
		if b.Key == "" {
			return nil, invalid("key is required")
		}
		kr, err := s.b.ChangeGossipKeyring(ctx, op, b.Key)
		if err != nil {
			return nil, fmt.Errorf("gossip keyring %s: %w", op, err)
		}
		return jsonResponse(http.StatusOK, kr), nil
	}
}
