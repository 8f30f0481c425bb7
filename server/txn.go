package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"github.com/shardnet/shardnet/api"
	"github.com/shardnet/shardnet/fsm"
)

// txn serves POST /v1/channels/{ch}/txn. The body decodes strictly
// (unknown fields and trailing data are refused) and every compare and op
// is checked before anything is proposed.
func (s *Server) txn(ctx context.Context, req *request) (*response, error) {
	if err := validChannel(req.ch); err != nil {
		return nil, err
	}
	var tr api.TxnRequest
	if err := decodeStrict(req.body, &tr); err != nil {
		return nil, err
	}
	txn, err := txnCommand(tr)
	if err != nil {
		return nil, err
	}
	cmd, err := keyed(req, txn)
	if err != nil {
		return nil, err
	}
	res, err := s.propose(ctx, req.ch, cmd)
	if err != nil {
		return nil, fmt.Errorf("txn in channel %s: %w", req.ch, err)
	}
	out := api.TxnResponse{Succeeded: res.Succeeded, Index: res.Index, Results: make([]api.TxnResult, 0, len(res.Ops))}
	for _, op := range res.Ops {
		r := api.TxnResult{Op: opName(op.Type), Key: string(op.Key), Found: op.Found}
		if op.Type == fsm.OpGet && op.Found {
			r.Value, r.CreateIndex, r.ModifyIndex = op.Entry.Value, op.Entry.CreateIndex, op.Entry.ModifyIndex
		}
		out.Results = append(out.Results, r)
	}
	resp := jsonResponse(http.StatusOK, out)
	resp.header.Set(api.HeaderIndex, strconv.FormatUint(res.Index, 10))
	return resp, nil
}

// decodeStrict decodes exactly one JSON value with no unknown fields.
func decodeStrict(body []byte, v any) error {
	if len(bytes.TrimSpace(body)) == 0 {
		return invalid("the request body is empty; it must be a JSON object")
	}
	if err := checkJSONText(body); err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return invalid("the request body is not valid JSON for this endpoint: %v", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return invalid("the request body has data after its JSON object")
	}
	return nil
}

// txnCommand checks a transaction and converts it to the fsm command.
func txnCommand(tr api.TxnRequest) (*fsm.Txn, error) {
	n := len(tr.Compares) + len(tr.Success) + len(tr.Failure)
	if n == 0 {
		return nil, invalid("the txn has no compares and no ops")
	}
	if n > fsm.MaxTxnOps {
		return nil, refuse(fsm.ErrTxnTooLarge, "the txn has %d compares and ops, over the limit of %d", n, fsm.MaxTxnOps)
	}
	cmd := &fsm.Txn{}
	for i, c := range tr.Compares {
		what := fmt.Sprintf("compares[%d]", i)
		key := []byte(c.Key)
		if err := validateKey(key, what+".key"); err != nil {
			return nil, err
		}
		fc := fsm.Compare{Key: key, Value: c.Value, Index: c.Index}
		switch c.Target {
		case api.TargetValue:
			fc.Target = fsm.TargetValue
			if c.Index != 0 {
				return nil, invalid("%s compares the value: it takes a value, not an index", what)
			}
			if len(c.Value) > fsm.MaxValueBytes {
				return nil, refuse(fsm.ErrValueLarge, "%s.value is %d bytes, over the limit of %d", what, len(c.Value), fsm.MaxValueBytes)
			}
		case api.TargetModifyIndex, api.TargetCreateIndex:
			fc.Target = fsm.TargetModifyIndex
			if c.Target == api.TargetCreateIndex {
				fc.Target = fsm.TargetCreateIndex
			}
			if len(c.Value) != 0 {
				return nil, invalid("%s compares %s: it takes an index, not a value", what, c.Target)
			}
		default:
			return nil, invalid("%s.target %q must be value, modify_index or create_index", what, string(c.Target))
		}
		switch c.Result {
		case api.Equal:
			fc.Result = fsm.Equal
		case api.NotEqual:
			fc.Result = fsm.NotEqual
		case api.Greater:
			fc.Result = fsm.Greater
		case api.Less:
			fc.Result = fsm.Less
		default:
			return nil, invalid("%s.result %q must be equal, not_equal, greater or less", what, string(c.Result))
		}
		cmd.Compares = append(cmd.Compares, fc)
	}
	var err error
	if cmd.Success, err = txnOps(tr.Success, "success"); err != nil {
		return nil, err
	}
	if cmd.Failure, err = txnOps(tr.Failure, "failure"); err != nil {
		return nil, err
	}
	return cmd, nil
}

func txnOps(ops []api.TxnOp, list string) ([]fsm.Op, error) {
	out := make([]fsm.Op, 0, len(ops))
	for i, op := range ops {
		what := fmt.Sprintf("%s[%d]", list, i)
		key := []byte(op.Key)
		if err := validateKey(key, what+".key"); err != nil {
			return nil, err
		}
		fo := fsm.Op{Key: key}
		switch op.Op {
		case api.OpPut:
			fo.Type, fo.Value = fsm.OpPut, op.Value
			if len(op.Value) > fsm.MaxValueBytes {
				return nil, refuse(fsm.ErrValueLarge, "%s.value is %d bytes, over the limit of %d", what, len(op.Value), fsm.MaxValueBytes)
			}
			if fo.Value == nil {
				fo.Value = []byte{}
			}
		case api.OpDelete, api.OpGet:
			fo.Type = fsm.OpDelete
			if op.Op == api.OpGet {
				fo.Type = fsm.OpGet
			}
			if len(op.Value) != 0 {
				return nil, invalid("%s is a %s: it takes no value", what, op.Op)
			}
		default:
			return nil, invalid("%s.op %q must be put, delete or get", what, string(op.Op))
		}
		out = append(out, fo)
	}
	return out, nil
}

func opName(t fsm.OpType) api.OpType {
	switch t {
	case fsm.OpPut:
		return api.OpPut
	case fsm.OpDelete:
		return api.OpDelete
	case fsm.OpGet:
		return api.OpGet
	}
	return api.OpType(fmt.Sprintf("op-%d", t))
}
