package api

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"strconv"
)

// Backup starts GET /v1/channels/{ch}/snapshot: the caller reads the
// backup file from the returned body and closes it. index is the backup's
// index (X-Shardnet-Index). A stream cut short by the node ends in an
// error or lacks its trailer: check the file (shardnet channel backup
// does) before relying on it.
func (c *Client) Backup(ctx context.Context, channel string) (body io.ReadCloser, index uint64, err error) {
	resp, err := c.do(ctx, http.MethodGet, channelPath(channel)+"/snapshot", nil, nil, "", false, "")
	if err != nil {
		return nil, 0, err
	}
	return resp.Body, headerIndex(resp.Header), nil
}

// Restore sends a backup file, streamed from body (size bytes, or -1 when
// not known), to POST /v1/channels/{name}/restore and returns the channel
// created once it serves. replicas 0 takes the backup's. The request is
// not sent again on a failure: run it again after checking that the
// channel does not exist.
func (c *Client) Restore(ctx context.Context, name string, replicas int, body io.Reader, size int64) (RestoreResponse, error) {
	q := url.Values{}
	if replicas > 0 {
		q.Set("replicas", strconv.Itoa(replicas))
	}
	u := c.base + channelPath(name) + "/restore"
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	// Not through do: the body is not replayable, and its length is set.
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, io.NopCloser(body))
	if err != nil {
		return RestoreResponse{}, err
	}
	req.ContentLength = size
	req.Header.Set("Content-Type", BackupContentType)
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return RestoreResponse{}, err
	}
	if resp.StatusCode >= 400 {
		defer resp.Body.Close()
		return RestoreResponse{}, readError(resp)
	}
	var out RestoreResponse
	return out, decodeBody(resp, &out)
}

// RecoverChannel re-forms a channel that lost a majority of its replicas
// for good from its best surviving replica (POST
// /v1/channels/{ch}/recover). confirm must be "i-understand-data-loss":
// writes answered 503 outcome_unknown may appear, and any the survivor
// lacks are lost.
func (c *Client) RecoverChannel(ctx context.Context, channel, confirm string) (RecoverResponse, error) {
	var out RecoverResponse
	_, err := c.doJSON(ctx, http.MethodPost, channelPath(channel)+"/recover", nil, RecoverRequest{Confirm: confirm}, &out)
	return out, err
}
