package server

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"

	"github.com/shardnet/shardnet/api"
)

// PATCH /v1/channels/{ch}: a malformed body is refused before the backend
// hears of it; a valid one reaches it as given.
func TestChangeChannelValidation(t *testing.T) {
	f := newFake("nft")
	var got []api.ChangeChannelRequest
	f.changeChannel = func(ctx context.Context, name string, req api.ChangeChannelRequest) (api.Channel, error) {
		got = append(got, req)
		return f.mem.ChangeChannel(ctx, name, req)
	}
	_, hs := testServer(t, Config{Backend: f})
	for _, c := range []struct {
		body string
		want int
	}{
		{``, http.StatusBadRequest},
		{`{}`, http.StatusBadRequest},
		{`{"replicas":0}`, http.StatusBadRequest},
		{`{"replicas":8}`, http.StatusBadRequest},
		{`{"replicas":-1}`, http.StatusBadRequest},
		{`{"replicas":"5"}`, http.StatusBadRequest},
		{`{"replicas":5,"zones":["a"]}`, http.StatusBadRequest},
		{`{"quota_bytes":-1}`, http.StatusBadRequest},
		{`{"replicas":5}`, http.StatusOK},
		{`{"replicas":4,"quota_bytes":1024}`, http.StatusOK},
		{`{"quota_bytes":0}`, http.StatusOK},
	} {
		resp := do(t, hs.URL, http.MethodPatch, "/v1/channels/nft", []byte(c.body), nil)
		if resp.StatusCode != c.want {
			t.Errorf("PATCH %s: %d, want %d", c.body, resp.StatusCode, c.want)
		}
		if c.want == http.StatusOK {
			var ch api.Channel
			if err := json.NewDecoder(resp.Body).Decode(&ch); err != nil || ch.Name != "nft" {
				t.Errorf("PATCH %s: answer %+v (%v)", c.body, ch, err)
			}
		} else {
			errorBody(t, resp)
		}
		resp.Body.Close()
	}
	if len(got) != 3 || *got[0].Replicas != 5 || *got[1].QuotaBytes != 1024 || got[2].Replicas != nil || *got[2].QuotaBytes != 0 {
		t.Fatalf("the backend got %d changes: %+v", len(got), got)
	}
	resp := do(t, hs.URL, http.MethodPatch, "/v1/channels/nope", []byte(`{"replicas":3}`), nil)
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("PATCH of an unknown channel: %d", resp.StatusCode)
	}
	resp.Body.Close()
}
