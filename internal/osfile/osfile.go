// Package osfile opens, reads, renames and atomically replaces files so that
// Windows keeps the rules Unix has: a file that is open — read by another
// request, another goroutine or another process — never blocks a rename over
// it or its removal. On Unix these are the os package's functions. On
// Windows files are opened with FILE_SHARE_DELETE and a rename replaces its
// target with POSIX semantics, so readers that have the old file open keep
// reading the old content while new opens see the new one.
//
// Every file Berth replaces while it may be read (storage, the htpasswd
// file, certificates) is opened and replaced through this package.
package osfile

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// Open opens name for reading, like os.Open.
func Open(name string) (*os.File, error) { return OpenFile(name, os.O_RDONLY, 0) }

// WriteFile replaces name with data atomically: a temporary file beside
// it is written with mode perm and synced, renamed over name, and the
// directory is synced. Readers see the old content or the new, never a
// part, and so does the next start after a crash. Missing parent
// directories are created with mode 0700. A perm that gives the group and
// others nothing (0600) makes the file private on Windows too: only its
// owner, SYSTEM and Administrators may open it.
func WriteFile(name string, data []byte, perm os.FileMode) error {
	tmp, err := writeTemp(name, data, perm)
	if err != nil {
		return err
	}
	if err := Rename(tmp, name); err != nil {
		os.Remove(tmp)
		return err
	}
	return SyncDir(filepath.Dir(name))
}

// WriteNew creates name with data atomically, like WriteFile, but never
// replaces a file: when name exists (or appears meanwhile) it fails with
// an error that satisfies errors.Is(err, fs.ErrExist). The complete
// temporary file is hard-linked into place, which fails when name exists.
func WriteNew(name string, data []byte, perm os.FileMode) error {
	tmp, err := writeTemp(name, data, perm)
	if err != nil {
		return err
	}
	defer os.Remove(tmp)
	if err := os.Link(tmp, name); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("%s already exists, not overwriting it: %w", name, fs.ErrExist)
		}
		return err
	}
	return SyncDir(filepath.Dir(name))
}

// writeTemp writes data to a new temporary file beside name, with mode
// perm, syncs it and returns its name.
func writeTemp(name string, data []byte, perm os.FileMode) (tmp string, err error) {
	dir := filepath.Dir(name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	// CreateTemp makes the file 0600: a key is never readable by others,
	// not even for a moment.
	f, err := os.CreateTemp(dir, "."+filepath.Base(name)+".tmp-*")
	if err != nil {
		return "", err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if err = f.Chmod(perm); err != nil {
		return "", err
	}
	if perm&0o077 == 0 {
		if err = makePrivate(f.Name()); err != nil {
			return "", err
		}
	}
	if _, err = f.Write(data); err != nil {
		return "", err
	}
	if err = f.Sync(); err != nil {
		return "", err
	}
	if err = f.Close(); err != nil {
		return "", err
	}
	return f.Name(), nil
}
