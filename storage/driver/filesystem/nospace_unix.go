//go:build unix

package filesystem

import (
	"errors"
	"syscall"
)

// isNoSpace reports whether err says the filesystem or a quota is full.
func isNoSpace(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}
