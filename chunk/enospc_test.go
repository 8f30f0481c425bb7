package chunk

import "syscall"

func errNoSpace() error { return syscall.ENOSPC }
