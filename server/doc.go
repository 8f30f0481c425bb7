// Package server owns shardnet's HTTP API v1: routing on the escaped path,
// validation, authentication, the one table that maps errors to statuses,
// blocking reads, and the node's /metrics.
//
// It leaves every decision about data and placement, and where a request is
// served, to the Backend it is given (package cluster implements it), and the wire types and the Go client
// to package api. docs/api.md is the reference of what it serves.
package server
