//go:build !(linux || darwin || freebsd || netbsd || openbsd)

package cluster

import "errors"

// fsStats is not measured here: data nodes run on unix. A node here
// reports no free space, so the allocator gives it no replicas.
func fsStats(string) (size, free uint64, err error) {
	return 0, 0, errors.New("cluster: file system stats are not supported on this platform")
}
