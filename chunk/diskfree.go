package chunk

import (
	"fmt"
	"syscall"
)

// freeBytes returns the space an unprivileged process may still write on
// dir's file system.
func freeBytes(dir string) (uint64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, fmt.Errorf("chunk: statfs %s: %w", dir, err)
	}
	return st.Bavail * uint64(st.Bsize), nil
}
