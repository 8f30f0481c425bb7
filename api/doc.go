// Package api owns the wire format of shardnet's HTTP API v1 (the JSON types,
// header names, error codes and key escaping) and the one typed Go client that
// the CLI and the integration tests use.
//
// It leaves serving the API to package server and what the data means to the
// packages behind it; it imports only the standard library so that programs
// can use the client without pulling in the node. docs/api.md describes every
// endpoint.
package api
