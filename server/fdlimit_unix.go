//go:build unix

package server

import "syscall"

// MaxConnsForFDs is the default MaxConns of a node: half of the process's
// file descriptor limit (Go raises the soft limit to the hard one at
// start), so that HTTP clients can never take the descriptors the node
// needs for its own files and peers. Between 256 and 65,536.
func MaxConnsForFDs() int {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil || rl.Cur == 0 {
		return DefaultMaxConns
	}
	return int(min(max(rl.Cur/2, 256), 65536))
}
