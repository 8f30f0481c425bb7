package server

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"time"
)

// The node commands of an operator: describe, drain, leave, remove
// (cluster/drain.go). The path's node id travels in request.rawKey.

// nodeID is the request's node id, unescaped.
func nodeID(req *request) (string, error) {
	id, err := url.PathUnescape(req.rawKey)
	if err != nil || id == "" {
		return "", refuse(errBadRequest, "node id %q is not a valid path segment", req.rawKey)
	}
	return id, nil
}

func (s *Server) getNode(ctx context.Context, req *request) (*response, error) {
	id, err := nodeID(req)
	if err != nil {
		return nil, err
	}
	ctx, cancel := s.opContext(ctx)
	defer cancel()
	nd, err := s.b.NodeDetail(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("node %s: %w", id, err)
	}
	return jsonResponse(http.StatusOK, nd), nil
}

// drainNode starts (POST) or cancels (DELETE) a drain and answers the node
// as this node's copy of the meta state then shows it.
func (s *Server) drainNode(drain bool) handlerFunc {
	return func(ctx context.Context, req *request) (*response, error) {
		id, err := nodeID(req)
		if err != nil {
			return nil, err
		}
		ctx, cancel := s.opContext(ctx)
		defer cancel()
		if err := s.b.DrainNode(ctx, id, drain); err != nil {
			return nil, fmt.Errorf("drain node %s: %w", id, err)
		}
		nd, err := s.b.NodeDetail(ctx, id)
		if err != nil {
			return nil, fmt.Errorf("node %s: %w", id, err)
		}
		return jsonResponse(http.StatusOK, nd), nil
	}
}

// leaveTimeout bounds a leave: the forward to the leaving node, its meta
// sync, and its wait of up to 10 s for the meta leader's record.
const leaveTimeout = 20 * time.Second

func (s *Server) leaveNode(ctx context.Context, req *request) (*response, error) {
	id, err := nodeID(req)
	if err != nil {
		return nil, err
	}
	// A leave outlasts the request timeout by design: the leaving node
	// answers once the meta leader recorded it (cluster.LeaveNode).
	ctx, cancel := context.WithTimeout(ctx, max(s.timeout, leaveTimeout))
	defer cancel()
	if err := s.b.LeaveNode(ctx, id); err != nil {
		return nil, fmt.Errorf("node %s leave: %w", id, err)
	}
	return jsonResponse(http.StatusOK, map[string]string{"id": id, "state": "leaving"}), nil
}

func (s *Server) removeNode(ctx context.Context, req *request) (*response, error) {
	id, err := nodeID(req)
	if err != nil {
		return nil, err
	}
	ctx, cancel := s.opContext(ctx)
	defer cancel()
	out, err := s.b.RemoveNode(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("remove node %s: %w", id, err)
	}
	return jsonResponse(http.StatusOK, out), nil
}
