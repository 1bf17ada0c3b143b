//go:build unix

package filesystem

import "syscall"

var platformNoSpace error = syscall.ENOSPC
