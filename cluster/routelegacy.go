package cluster

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"github.com/shardnet/shardnet/fsm"
	"github.com/shardnet/shardnet/shard"
)

// The fallbacks to what a node of the previous version serves (route.go's
// compatibility note): remove with it.

func (r *router) legacyPropose(ctx context.Context, re *shard.RedirectError, gid uint64, cmd []byte) (*fsm.Result, error) {
	status, resp, err := r.legacy.call(ctx, re.Addr, opPropose, append(callRequest(ctx, gid, len(cmd)), cmd...))
	if err != nil {
		return nil, writeFailed(err, re)
	}
	if status != statusOK {
		return nil, writeFailed(decodeCallError(resp), re)
	}
	res, err := fsm.DecodeResult(resp)
	if err != nil {
		return nil, fmt.Errorf("%w: node %s: %v", shard.ErrOutcomeUnknown, re.NodeID, err)
	}
	return res, nil
}

func (r *router) legacyIndex(ctx context.Context, addr string, op byte, gid uint64) (uint64, error) {
	status, resp, err := r.legacy.call(ctx, addr, op, callRequest(ctx, gid, 0))
	if err != nil {
		return 0, err
	}
	if status != statusOK {
		return 0, fmt.Errorf("cluster: read index from %s: %w", addr, decodeCallError(resp))
	}
	return readU64(resp, "read index")
}

func (r *router) legacyHashAt(ctx context.Context, addr string, gid, index uint64) (uint64, error) {
	status, resp, err := r.legacy.call(ctx, addr, opHashAt, binary.BigEndian.AppendUint64(callRequest(ctx, gid, 8), index))
	if err != nil {
		return 0, err
	}
	if status != statusOK {
		return 0, decodeCallError(resp)
	}
	return readU64(resp, "hash")
}

func (r *router) legacyReplicaInfo(ctx context.Context, nd fsm.NodeRecord, gid uint64) (shard.ReplicaInfo, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+nd.ClusterAddr+InternalPrefix+"replicas/"+strconv.FormatUint(gid, 10), nil)
	if err != nil {
		return shard.ReplicaInfo{}, err
	}
	resp, err := r.legacyHTTP.Do(req)
	if err != nil {
		return shard.ReplicaInfo{}, fmt.Errorf("cluster: ask %s about group %d: %w", nd.ID, gid, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return shard.ReplicaInfo{}, shard.ErrNotHosted
	}
	if resp.StatusCode != http.StatusOK {
		return shard.ReplicaInfo{}, fmt.Errorf("cluster: ask %s about group %d: HTTP %d", nd.ID, gid, resp.StatusCode)
	}
	var info shard.ReplicaInfo
	if err := json.NewDecoder(resp.Body).Decode(&info); err != nil {
		return info, fmt.Errorf("cluster: ask %s about group %d: %w", nd.ID, gid, err)
	}
	return info, nil
}

func (r *router) legacySnapshot(ctx context.Context, addr, leader string, gid, minIndex uint64) (io.ReadCloser, error) {
	u := fmt.Sprintf("http://%s%ssnapshot/%d?min=%d", addr, InternalPrefix, gid, minIndex)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := r.legacyHTTP.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%w: snapshot from %s: %v", ErrRepairSource, leader, err)
	}
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		resp.Body.Close()
		return nil, fmt.Errorf("%w: snapshot from %s: HTTP %d: %s", ErrRepairSource, leader, resp.StatusCode, msg)
	}
	return resp.Body, nil
}
