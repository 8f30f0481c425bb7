// Package server owns shardnet's HTTP API v1: routing on the escaped path,
// validation, authentication, the one table that maps errors to statuses,
// forwarding a request one hop to the node that can serve it, blocking reads,
// and the node's /metrics.
//
// It leaves every decision about data and placement to the Backend it is
// given (package cluster implements it), and the wire types and the Go client
// to package api. docs/api.md is the reference of what it serves.
package server
