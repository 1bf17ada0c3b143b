package filesystem

import (
	"os"

	"golang.org/x/sys/unix"
)

// syncfsAvailable: syncAll flushes the whole filesystem and needs no names.
const syncfsAvailable = true

// syncAll makes every change under root durable, with one syncfs(2).
func syncAll(root string, _ []string) error {
	f, err := os.Open(root)
	if err != nil {
		return err
	}
	defer f.Close()
	return unix.Syncfs(int(f.Fd()))
}

// datasync makes f's data durable; the journal's files are preallocated,
// so no metadata needs to follow.
func datasync(f *os.File) error { return unix.Fdatasync(int(f.Fd())) }

// startWriteback asks the kernel to start writing the range to disk,
// without waiting for it (sync_file_range(2)). It is a hint: errors
// surface at the fsync.
func startWriteback(f *os.File, off, n int64) {
	_ = unix.SyncFileRange(int(f.Fd()), off, n, unix.SYNC_FILE_RANGE_WRITE)
}
