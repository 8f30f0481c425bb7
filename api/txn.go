package api

// A transaction (POST /v1/channels/{ch}/txn) is shaped like etcd's: every
// compare is evaluated against the state before the transaction; if all hold
// the success ops run, otherwise the failure ops, atomically in one Raft
// entry. A failed compare is not an error: the answer is 200 with
// "succeeded": false.
//
// Keys are JSON strings (keys are UTF-8). Values are []byte, so JSON carries
// them in base64 (standard alphabet, padded), as encoding/json does.

// CompareTarget is what a Compare looks at.
type CompareTarget string

const (
	TargetValue       CompareTarget = "value"        // the value bytes, compared lexicographically
	TargetModifyIndex CompareTarget = "modify_index" // 0 when the key is absent
	TargetCreateIndex CompareTarget = "create_index" // 0 when the key is absent
)

// CompareResult is the relation a Compare requires between the key's target
// and the given value or index.
type CompareResult string

const (
	Equal    CompareResult = "equal"
	NotEqual CompareResult = "not_equal"
	Greater  CompareResult = "greater"
	Less     CompareResult = "less"
)

// OpType names a transaction operation.
type OpType string

const (
	OpPut    OpType = "put"
	OpDelete OpType = "delete"
	OpGet    OpType = "get"
)

// Compare holds when (Target of Key) Result (Value or Index). A missing key
// has an empty value and indexes 0, as in etcd. Value is used with
// TargetValue only, Index with the index targets only.
type Compare struct {
	Key    string        `json:"key"`
	Target CompareTarget `json:"target"`
	Result CompareResult `json:"result"`
	Value  []byte        `json:"value,omitempty"`
	Index  uint64        `json:"index,omitempty"`
}

// TxnOp is one operation of a transaction. Value is used by put only.
type TxnOp struct {
	Op    OpType `json:"op"`
	Key   string `json:"key"`
	Value []byte `json:"value,omitempty"`
}

// TxnRequest is the body of POST /v1/channels/{ch}/txn. At most 128
// compares and ops together.
type TxnRequest struct {
	Compares []Compare `json:"compares,omitempty"`
	Success  []TxnOp   `json:"success,omitempty"`
	Failure  []TxnOp   `json:"failure,omitempty"`
}

// TxnResponse is the answer to a transaction: whether the compares held, the
// Raft index of its entry, and one result per op that ran.
type TxnResponse struct {
	Succeeded bool        `json:"succeeded"`
	Index     uint64      `json:"index"`
	Results   []TxnResult `json:"results"`
}

// TxnResult is the outcome of one op. Found says, for get and delete, whether
// the key existed; a get that found its key carries the value and indexes as
// seen inside the transaction, after the ops before it.
type TxnResult struct {
	Op          OpType `json:"op"`
	Key         string `json:"key"`
	Found       bool   `json:"found,omitempty"`
	Value       []byte `json:"value,omitempty"`
	CreateIndex uint64 `json:"create_index,omitempty"`
	ModifyIndex uint64 `json:"modify_index,omitempty"`
}
