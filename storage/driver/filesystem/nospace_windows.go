//go:build windows

package filesystem

import (
	"errors"
	"syscall"

	"golang.org/x/sys/windows"
)

// isNoSpace reports whether err says the volume or a quota is full: the
// Windows errors, and syscall.ENOSPC (Go's own name for it, which code
// that is not Windows-specific returns).
func isNoSpace(err error) bool {
	return errors.Is(err, windows.ERROR_DISK_FULL) || errors.Is(err, windows.ERROR_HANDLE_DISK_FULL) ||
		errors.Is(err, windows.ERROR_DISK_QUOTA_EXCEEDED) || errors.Is(err, syscall.ENOSPC)
}
