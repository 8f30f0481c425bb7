//go:build !(linux || darwin || freebsd || netbsd || openbsd)

package cluster

import "errors"

// fsStats is not measured here (data nodes run on unix): a node here
// offers -disk-bytes and reports no free space; without -disk-bytes its
// reserve is 0 and the allocator checks no free space.
func fsStats(string) (size, free uint64, err error) {
	return 0, 0, errors.New("cluster: file system stats are not supported on this platform")
}
