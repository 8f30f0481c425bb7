//go:build linux || darwin || freebsd || netbsd || openbsd

package cluster

import (
	"fmt"
	"syscall"
)

// fsStats is the size and the free bytes (for unprivileged users) of the
// file system holding dir.
func fsStats(dir string) (size, free uint64, err error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, 0, fmt.Errorf("cluster: statfs %s: %w", dir, err)
	}
	bs := uint64(st.Bsize) //nolint:unconvert // int64 on linux, uint32 on darwin
	return uint64(st.Blocks) * bs, uint64(st.Bavail) * bs, nil
}
