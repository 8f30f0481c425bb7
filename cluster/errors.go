package cluster

import "errors"

// Sentinel errors of the control plane, mapped to HTTP statuses in server.
var (
	ErrNotMetaLeader   = errors.New("cluster: not the meta leader")
	ErrNoMetaLeader    = errors.New("cluster: no meta leader")
	ErrChannelExists   = errors.New("cluster: channel already exists")
	ErrChannelNotFound = errors.New("cluster: channel not found")
	ErrNotEnoughNodes  = errors.New("cluster: not enough eligible nodes")
	ErrInvalidRequest  = errors.New("cluster: invalid request")
	ErrNodeNotFound    = errors.New("cluster: node not found")
	ErrQuotaExceeded   = errors.New("cluster: channel quota exceeded")
	// ErrRepairSource: a repair could not get the leader's state.
	ErrRepairSource = errors.New("cluster: cannot get the leader's state to rebuild the replica from")
	ErrNotReady     = errors.New("cluster: this node's copy of the meta state is still catching up")
	// ErrPlacementChanged: a channel change raced another (scaling,
	// repair, drain); nothing was applied.
	ErrPlacementChanged = errors.New("cluster: the channel changed meanwhile; read it and try again")
)

// Errors of channel tokens (tokens.go).
var (
	ErrTokenNotFound = errors.New("cluster: token not found")
	ErrTooManyTokens = errors.New("cluster: too many tokens in the channel")
)
