package tlsutil

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// writeTemp writes data to a new temporary file next to name, with the given
// mode, and flushes it to stable storage. The caller moves it into place.
func writeTemp(name string, data []byte, mode os.FileMode) (string, error) {
	dir := filepath.Dir(name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	// os.CreateTemp creates the file 0600, so a key is never readable by
	// others, not even for a moment.
	f, err := os.CreateTemp(dir, "."+filepath.Base(name)+".tmp*")
	if err != nil {
		return "", err
	}
	tmp := f.Name()
	fail := func(err error) (string, error) {
		f.Close()
		os.Remove(tmp)
		return "", err
	}
	if err := f.Chmod(mode); err != nil {
		return fail(err)
	}
	if _, err := f.Write(data); err != nil {
		return fail(err)
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return "", err
	}
	return tmp, nil
}

// replaceFile atomically writes data to name (temp file, fsync, rename),
// replacing any existing file.
func replaceFile(name string, data []byte, mode os.FileMode) error {
	tmp, err := writeTemp(name, data, mode)
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, name); err != nil {
		os.Remove(tmp)
		return err
	}
	syncDir(filepath.Dir(name))
	return nil
}

// createFile atomically writes data to name but never replaces an existing
// file: the complete temp file is hard-linked into place, which fails when
// name exists. The error then satisfies errors.Is(err, fs.ErrExist).
func createFile(name string, data []byte, mode os.FileMode) error {
	tmp, err := writeTemp(name, data, mode)
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
	syncDir(filepath.Dir(name))
	return nil
}

// syncDir flushes a directory entry change (best effort: not every platform
// can open a directory for syncing).
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
}

// fileExists reports whether name exists; other stat errors count as
// existing so that nothing is overwritten by mistake.
func fileExists(name string) bool {
	_, err := os.Stat(name)
	return !errors.Is(err, fs.ErrNotExist)
}
