//go:build windows

package filesystem

import "golang.org/x/sys/windows"

var platformNoSpace error = windows.ERROR_DISK_FULL
