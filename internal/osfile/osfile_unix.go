//go:build !windows

package osfile

import "os"

// OpenFile opens a file like os.OpenFile.
func OpenFile(name string, flag int, perm os.FileMode) (*os.File, error) {
	return os.OpenFile(name, flag, perm)
}

// Rename renames oldpath to newpath, replacing newpath, like os.Rename.
func Rename(oldpath, newpath string) error { return os.Rename(oldpath, newpath) }

// SyncDir makes the entries of directory dir durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// ReadFile reads the whole file, like os.ReadFile.
func ReadFile(name string) ([]byte, error) { return os.ReadFile(name) }
