// Package api owns the wire format of shardnet's HTTP API v1 (the JSON types,
// header names, error codes and key escaping) and the one typed Go client that
// the CLI and the integration tests use.
//
// It leaves serving the API to package server and what the data means to the
// packages behind it; it imports only the standard library so that programs
// can use the client without pulling in the node. docs/api.md describes every
// endpoint.
//
// Every write the client sends (Put, Delete, Txn) carries an
// Idempotency-Key: the caller's (WithIdempotencyKey) or a random one of its
// own. A client made with WithRetries sends a write again under the same
// key when its outcome is unknown, so a write is applied at most once
// however often it is sent (docs/api.md "Idempotency keys").
package api
