package osfile

import (
	"os"
	"runtime"
)

// fileMode is the mode a file made with perm reports: Windows keeps only
// the read-only bit, so 0600 reads back as 0666.
func fileMode(perm os.FileMode) os.FileMode {
	if runtime.GOOS == "windows" {
		if perm&0o200 == 0 {
			return 0o444
		}
		return 0o666
	}
	return perm
}
