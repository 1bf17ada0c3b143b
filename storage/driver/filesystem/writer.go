package filesystem

import (
	"context"
	"errors"
	"os"
	"path/filepath"

	"github.com/berth-registry/berth/internal/osfile"
	"github.com/berth-registry/berth/storage/driver"
)

// Writer implements driver.Driver.
func (d *Driver) Writer(ctx context.Context, p string, append bool) (driver.FileWriter, error) {
	w, err := d.writer(p, append)
	if err != nil {
		d.noteWrite(err)
		return nil, err
	}
	return w, nil
}

func (d *Driver) writer(p string, append bool) (driver.FileWriter, error) {
	full, err := d.full("write", p)
	if err != nil {
		return nil, err
	}
	if err := d.journal.settle(p); err != nil {
		return nil, wrap("write", p, err)
	}
	if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
		return nil, wrap("write", p, err)
	}
	flags := os.O_WRONLY | os.O_CREATE
	if append {
		flags |= os.O_APPEND
	} else {
		flags |= os.O_TRUNC
	}
	f, err := osfile.OpenFile(full, flags, 0o644)
	if err != nil {
		return nil, wrap("write", p, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, wrap("write", p, err)
	}
	return &fileWriter{d: d, f: f, path: p, size: st.Size(), flushed: st.Size(), synced: st.Size()}, nil
}

type fileWriter struct {
	d         *Driver
	f         *os.File
	path      string
	size      int64
	flushed   int64 // writeback has been started up to here
	synced    int64 // durable up to here
	dirSynced bool
	cancelled bool
}

// writebackEvery is how much a Writer writes before it asks the kernel to
// start writing it to disk. Without it a large blob sits in the page cache
// until Commit's fsync, which then writes all of it while the client
// waits; with it the disk works while the body is still arriving, and the
// fsync has only the tail left.
const writebackEvery = 8 << 20

func (w *fileWriter) Write(b []byte) (int, error) {
	n, err := w.f.Write(b)
	w.size += int64(n)
	if w.size-w.flushed >= writebackEvery {
		startWriteback(w.f, w.flushed, w.size-w.flushed)
		w.flushed = w.size
	}
	if err != nil {
		err = wrap("write", w.path, err)
		w.d.noteWrite(err)
	}
	return n, err
}

func (w *fileWriter) Size() int64 { return w.size }

func (w *fileWriter) Commit(ctx context.Context) error {
	err := w.commit()
	w.d.noteWrite(err)
	return err
}

func (w *fileWriter) commit() error {
	if err := w.f.Sync(); err != nil {
		return wrap("commit", w.path, err)
	}
	w.synced = w.size
	if !w.dirSynced {
		if err := syncDir(filepath.Dir(w.f.Name())); err != nil {
			return wrap("commit", w.path, err)
		}
		w.dirSynced = true
	}
	return nil
}

func (w *fileWriter) Cancel(ctx context.Context) error {
	w.cancelled = true
	w.f.Close()
	return wrap("cancel", w.path, os.Remove(w.f.Name()))
}

// Close makes what was written since the last Commit durable, as the
// interface promises, then closes the file.
func (w *fileWriter) Close() error {
	if w.cancelled {
		return nil
	}
	var err error
	if w.size != w.synced {
		err = w.commit()
		w.d.noteWrite(err)
	}
	if cerr := w.f.Close(); !errors.Is(cerr, os.ErrClosed) && err == nil {
		err = wrap("close", w.path, cerr)
	}
	return err
}
