//go:build !windows

package osfile

import (
	"errors"
	"os"
	"syscall"
)

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

// makePrivate does nothing on Unix: the file's mode already says who may
// open it.
func makePrivate(string) error { return nil }

// IsPrivate reports whether only the file's owner may read and write it:
// its mode gives the group and others nothing.
func IsPrivate(name string) (bool, error) {
	st, err := os.Stat(name)
	if err != nil {
		return false, err
	}
	return st.Mode().Perm()&0o077 == 0, nil
}

// Lock takes an exclusive lock on the file name, creating it if needed,
// and waits while another process or another Lock holds it. The lock ends
// with unlock, or when the process dies.
func Lock(name string) (unlock func(), err error) {
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	for {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX)
		if err != syscall.EINTR {
			break
		}
	}
	if err != nil {
		f.Close()
		return nil, &os.PathError{Op: "lock", Path: name, Err: err}
	}
	return func() { f.Close() }, nil
}

// RemoveAll removes path and everything below it, like os.RemoveAll.
func RemoveAll(path string) error { return os.RemoveAll(path) }

// ProcessAlive reports whether a process with this id runs on this
// machine (in this PID namespace).
func ProcessAlive(pid int) bool {
	if pid <= 0 {
		return false
	}
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// PIDNamespace names this process's PID namespace on Linux (processes in
// different containers on one host may share a host name but not a PID
// namespace); "" where it cannot be told.
func PIDNamespace() string {
	ns, err := os.Readlink("/proc/self/ns/pid")
	if err != nil {
		return ""
	}
	return ns
}
