//go:build !linux

package filesystem

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/berth-registry/berth/internal/osfile"
)

// syncfsAvailable: syncAll needs the paths that changed.
const syncfsAvailable = false

// syncAll makes the files at paths (driver paths under root) and the
// directories holding them durable. A path that is gone needs only its
// directory synced.
func syncAll(root string, paths []string) error {
	dirs := map[string]bool{}
	for _, p := range paths {
		full := filepath.Join(root, filepath.FromSlash(p))
		if err := syncFile(full); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		for d := filepath.Dir(full); len(d) > len(root) && !dirs[d]; d = filepath.Dir(d) {
			dirs[d] = true
		}
	}
	for d := range dirs {
		if err := syncDir(d); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return nil
}

func syncFile(name string) error {
	if st, err := os.Stat(name); err != nil || st.IsDir() {
		if err == nil {
			err = syncDir(name)
		}
		return err
	}
	f, err := osfile.OpenFile(name, os.O_RDWR, 0) // Windows flushes only what it may write
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// datasync makes f's data durable.
func datasync(f *os.File) error { return f.Sync() }

// startWriteback is a no-op where sync_file_range(2) does not exist.
func startWriteback(*os.File, int64, int64) {}
