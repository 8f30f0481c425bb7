package server

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/shardnet/shardnet/api"
	"github.com/shardnet/shardnet/fsm"
)

// health serves GET /v1/health: 200 while the process serves HTTP
// (liveness); with ?ready=1, 503 not_ready until the backend is ready.
func (s *Server) health(ctx context.Context, req *request) (*response, error) {
	if r := req.query.Get("ready"); r != "" && r != "0" && r != "false" {
		if err := s.b.Ready(ctx); err != nil {
			return nil, fmt.Errorf("%w: %v", errNotReady, err)
		}
	}
	return jsonResponse(http.StatusOK, api.Health{Status: "ok"}), nil
}

func (s *Server) status(ctx context.Context, _ *request) (*response, error) {
	ctx, cancel := s.opContext(ctx)
	defer cancel()
	st, err := s.b.Status(ctx)
	if err != nil {
		return nil, fmt.Errorf("status: %w", err)
	}
	return jsonResponse(http.StatusOK, st), nil
}

func (s *Server) nodes(ctx context.Context, _ *request) (*response, error) {
	ctx, cancel := s.opContext(ctx)
	defer cancel()
	ns, err := s.b.Nodes(ctx)
	if err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	if ns == nil {
		ns = []api.Node{}
	}
	return jsonResponse(http.StatusOK, ns), nil
}

func (s *Server) listChannels(ctx context.Context, _ *request) (*response, error) {
	ctx, cancel := s.opContext(ctx)
	defer cancel()
	chs, err := s.b.Channels(ctx)
	if err != nil {
		return nil, fmt.Errorf("list channels: %w", err)
	}
	if chs == nil {
		chs = []api.Channel{}
	}
	return jsonResponse(http.StatusOK, chs), nil
}

func (s *Server) getChannel(ctx context.Context, req *request) (*response, error) {
	if err := validChannel(req.ch); err != nil {
		return nil, err
	}
	ctx, cancel := s.opContext(ctx)
	defer cancel()
	ch, err := s.b.Channel(ctx, req.ch)
	if err != nil {
		return nil, fmt.Errorf("channel %s: %w", req.ch, err)
	}
	return jsonResponse(http.StatusOK, ch), nil
}

func (s *Server) deleteChannel(ctx context.Context, req *request) (*response, error) {
	if err := validChannel(req.ch); err != nil {
		return nil, err
	}
	ctx, cancel := s.opContext(ctx)
	defer cancel()
	if err := s.b.DeleteChannel(ctx, req.ch); err != nil {
		return nil, fmt.Errorf("delete channel %s: %w", req.ch, err)
	}
	return &response{status: http.StatusNoContent}, nil
}

// repairTimeout bounds a repair: the rebuild streams the channel's whole
// state from its leader.
const repairTimeout = 10 * time.Minute

// repairReplica serves POST /v1/channels/{ch}/repair: 200 once the named
// node's replica, marked corrupt by a hash check, was rebuilt from the
// leader's state.
func (s *Server) repairReplica(ctx context.Context, req *request) (*response, error) {
	if err := validChannel(req.ch); err != nil {
		return nil, err
	}
	var b api.RepairRequest
	if err := decodeStrict(req.body, &b); err != nil {
		return nil, err
	}
	if b.Node == "" {
		return nil, invalid("node is required")
	}
	ctx, cancel := context.WithTimeout(ctx, repairTimeout)
	defer cancel()
	applied, err := s.b.RepairReplica(ctx, req.ch, b.Node)
	if err != nil {
		return nil, fmt.Errorf("repair channel %s on node %s: %w", req.ch, b.Node, err)
	}
	return jsonResponse(http.StatusOK, api.RepairResponse{Node: b.Node, Applied: applied}), nil
}

// createBody is api.CreateChannelRequest with replicas as a pointer, so
// that an omitted count (default 3, or one per pinned node) differs from an
// explicit 0 (refused).
type createBody struct {
	Name       string   `json:"name"`
	Replicas   *int     `json:"replicas"`
	Dedicated  bool     `json:"dedicated"`
	Zones      []string `json:"zones"`
	Nodes      []string `json:"nodes"`
	QuotaBytes uint64   `json:"quota_bytes"`
	ChunkSize  uint64   `json:"chunk_size"`
}

// createChannel serves POST /v1/channels: 201 with the channel.
func (s *Server) createChannel(ctx context.Context, req *request) (*response, error) {
	var b createBody
	if err := decodeStrict(req.body, &b); err != nil {
		return nil, err
	}
	cr, err := createRequest(b)
	if err != nil {
		return nil, err
	}
	ctx, cancel := s.opContext(ctx)
	defer cancel()
	ch, err := s.b.CreateChannel(ctx, cr)
	if err != nil {
		return nil, fmt.Errorf("create channel %s: %w", cr.Name, err)
	}
	return jsonResponse(http.StatusCreated, ch), nil
}

// createRequest validates a create body and applies its defaults. What
// depends on the cluster (enough eligible nodes, known node ids and zones)
// is the backend's to check.
func createRequest(b createBody) (api.CreateChannelRequest, error) {
	if err := validChannel(b.Name); err != nil {
		return api.CreateChannelRequest{}, err
	}
	replicas := DefaultReplicas
	switch {
	case b.Replicas != nil:
		replicas = *b.Replicas
	case len(b.Nodes) > 0:
		replicas = len(b.Nodes) // pinned: one replica per listed node
	}
	if replicas < 1 || replicas > MaxReplicas {
		return api.CreateChannelRequest{}, invalid("replicas must be from 1 to %d, not %d", MaxReplicas, replicas)
	}
	if err := distinctNames(b.Zones, "zones"); err != nil {
		return api.CreateChannelRequest{}, err
	}
	if err := distinctNames(b.Nodes, "nodes"); err != nil {
		return api.CreateChannelRequest{}, err
	}
	if b.ChunkSize != 0 {
		if err := fsm.ValidateChunkSize(b.ChunkSize); err != nil {
			return api.CreateChannelRequest{}, invalid("chunk_size: %v", err)
		}
	}
	return api.CreateChannelRequest{
		Name: b.Name, Replicas: replicas, Dedicated: b.Dedicated,
		Zones: b.Zones, Nodes: b.Nodes, QuotaBytes: b.QuotaBytes, ChunkSize: b.ChunkSize,
	}, nil
}

func distinctNames(names []string, what string) error {
	seen := make(map[string]bool, len(names))
	for i, n := range names {
		if n == "" {
			return invalid("%s[%d] is empty", what, i)
		}
		if seen[n] {
			return invalid("%s lists %q twice", what, n)
		}
		seen[n] = true
	}
	return nil
}
