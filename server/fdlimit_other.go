//go:build !unix

package server

// MaxConnsForFDs is DefaultMaxConns where the descriptor limit is not read.
func MaxConnsForFDs() int { return DefaultMaxConns }
