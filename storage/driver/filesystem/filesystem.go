// Package filesystem is the storage driver for a local directory, with the
// same on-disk shape as CNCF Distribution's filesystem driver: the driver path
// "/docker/registry/v2/…" is the file "<root>/docker/registry/v2/…".
package filesystem

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/berth-registry/berth/internal/osfile"
	"github.com/berth-registry/berth/storage/driver"
)

// tempPrefix marks temporary files. PutContent writes its files in one
// directory, <root>/.journal/tmp, and renames them from there (the same
// filesystem), so cleaning up after a crash lists one directory instead of
// walking the whole tree. List never returns files with this prefix, so
// those an older version left beside their targets stay invisible; they
// are not searched for, since that walk costs as much as the registry is
// large.
const tempPrefix = ".tmp-"

// Driver stores files under a root directory. Create it with New and
// Close it when done: Close makes journaled writes durable in place, so
// the next New has nothing to replay.
type Driver struct {
	root    string
	journal *journal

	mu       sync.Mutex
	writeErr error // the last write's failure; nil once a write succeeded

	stop chan struct{} // closed by Close: the maintenance goroutine ends
	done chan struct{} // closed when it has ended
}

var (
	_ driver.Driver      = (*Driver)(nil)
	_ driver.Writability = (*Driver)(nil)
)

// probeInterval is how often, while writes fail, the driver tries to
// write on its own (see probe); a variable for tests.
var probeInterval = 2 * time.Second

// cleanInterval is how often the driver removes leftovers of crashed
// processes (see journal.clean); a variable for tests.
var cleanInterval = 10 * time.Minute

// Options tunes a Driver. The zero value is what New uses.
type Options struct {
	// Registerer receives the journal's metrics
	// (berth_filesystem_journal_*: commits, failed commits, group-commit
	// latency, checkpoints). Nil: none are registered.
	Registerer prometheus.Registerer
}

// New returns a driver rooted at dir, creating dir if needed. It first
// replays what a crashed process left in dir's journal (see journal.go).
func New(dir string) (*Driver, error) {
	return NewWithOptions(dir, Options{})
}

// NewWithOptions is New tuned by opts.
func NewWithOptions(dir string, opts Options) (*Driver, error) {
	if dir == "" {
		return nil, errors.New("filesystem driver: root directory is empty")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return nil, err
	}
	m, err := newJournalMetrics(opts.Registerer)
	if err != nil {
		return nil, fmt.Errorf("filesystem driver: metrics: %w", err)
	}
	j, err := openJournal(abs, m)
	if err != nil {
		return nil, err
	}
	d := &Driver{root: abs, journal: j, stop: make(chan struct{}), done: make(chan struct{})}
	go d.maintain()
	return d, nil
}

// Close makes every journaled write durable in place and removes the
// journal. Writes after Close fail; reads go on working.
func (d *Driver) Close() error {
	d.mu.Lock()
	select {
	case <-d.stop:
	default:
		close(d.stop)
	}
	d.mu.Unlock()
	<-d.done
	return d.journal.close()
}

// maintain runs in the background until Close: while writes fail it
// probes whether they work again, and every cleanInterval it removes
// leftovers (see journal.clean).
func (d *Driver) maintain() {
	defer close(d.done)
	t := time.NewTicker(min(probeInterval, cleanInterval))
	lastClean := time.Now()
	defer t.Stop()
	for {
		select {
		case <-d.stop:
			return
		case <-t.C:
		}
		if d.Writable() != nil {
			d.probe()
		}
		if time.Since(lastClean) >= cleanInterval {
			d.journal.clean()
			lastClean = time.Now()
		}
	}
}

// Writable implements driver.Writability: it returns the failure of the
// last write when no write has succeeded since, or the failure of the
// last journal checkpoint when none has succeeded since. Writes that fail
// for the caller's reasons (a path not found, an invalid path) do not
// count.
func (d *Driver) Writable() error {
	d.mu.Lock()
	err := d.writeErr
	d.mu.Unlock()
	if err != nil {
		return err
	}
	return d.journal.checkpointErr()
}

// noteWrite records the outcome of a write for Writable.
func (d *Driver) noteWrite(err error) {
	if errors.Is(err, driver.ErrNotFound) || errors.Is(err, driver.ErrInvalidPath) || errors.Is(err, errJournalClosed) {
		return
	}
	d.mu.Lock()
	d.writeErr = err
	d.mu.Unlock()
}

// probe tries, while writes fail, whether they work again, so that a
// registry that readiness took out of service (and so gets no writes)
// comes back once the cause is gone: it makes a journal generation if
// there is none, retries the checkpoints that failed, and writes and
// syncs a small file in the journal directory. Success clears the error
// Writable reports.
func (d *Driver) probe() {
	err := d.journal.ensureCurrent()
	if err == nil {
		err = d.journal.checkpointRetired()
	}
	if err == nil {
		err = probeWrite(d.journal.dir)
	}
	d.noteWrite(wrap("probe", "/"+journalDir, err))
}

// probeWrite writes and syncs a file of 64 KiB in dir, then removes it.
func probeWrite(dir string) error {
	f, err := os.CreateTemp(filepath.Join(dir, journalTempDir), tempPrefix+"probe-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	_, err = f.Write(make([]byte, 64<<10))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// Root is the directory the driver stores files under.
func (d *Driver) Root() string { return d.root }

func (d *Driver) full(op, p string) (string, error) {
	if err := driver.CheckPath(op, p); err != nil {
		return "", err
	}
	if p == "/"+journalDir || strings.HasPrefix(p, "/"+journalDir+"/") {
		return "", &driver.PathError{Op: op, Path: p, Err: driver.ErrInvalidPath}
	}
	return filepath.Join(d.root, filepath.FromSlash(p)), nil
}

// wrap turns a filesystem error into a driver error.
func wrap(op, p string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, fs.ErrNotExist) {
		err = driver.ErrNotFound
	} else if isNoSpace(err) && !errors.Is(err, driver.ErrStorageFull) {
		err = fmt.Errorf("%w: %w", driver.ErrStorageFull, err)
	}
	return &driver.PathError{Op: op, Path: p, Err: err}
}

// GetContent implements driver.Driver.
func (d *Driver) GetContent(ctx context.Context, p string) ([]byte, error) {
	full, err := d.full("get", p)
	if err != nil {
		return nil, err
	}
	b, err := osfile.ReadFile(full)
	return b, wrap("get", p, err)
}

// PutContent implements driver.Driver: the content goes to a temp file
// beside path, the journal makes it durable (shared fsync), and a rename
// puts it in place.
func (d *Driver) PutContent(ctx context.Context, p string, content []byte) error {
	full, err := d.full("put", p)
	if err != nil {
		return err
	}
	err = d.putContent(full, p, content)
	d.noteWrite(err)
	return err
}

func (d *Driver) putContent(full, p string, content []byte) error {
	tmp, err := writeTemp(d.journal.tmp, full, content)
	if err != nil {
		return wrap("put", p, err)
	}
	done, err := d.journal.commit(opPut, p, content)
	if err == nil {
		err = osfile.Rename(tmp, full)
		done()
	}
	if err != nil {
		_ = os.Remove(tmp)
		return wrap("put", p, err)
	}
	return nil
}

// writeTemp writes content to a new temp file in tmpDir, creates the
// directory of full (where the file is renamed to) if needed, and returns
// the temp file's name.
func writeTemp(tmpDir, full string, content []byte) (string, error) {
	if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
		return "", err
	}
	tmp, err := os.CreateTemp(tmpDir, tempPrefix+"*")
	if err != nil {
		return "", err
	}
	_, err = tmp.Write(content)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(tmp.Name())
		return "", err
	}
	return tmp.Name(), nil
}

// Reader implements driver.Driver. The reader is an *os.File, so copying it
// to a network connection can use sendfile.
func (d *Driver) Reader(ctx context.Context, p string, offset int64) (io.ReadCloser, error) {
	full, err := d.full("read", p)
	if err != nil {
		return nil, err
	}
	f, err := osfile.Open(full)
	if err != nil {
		return nil, wrap("read", p, err)
	}
	if offset > 0 {
		if _, err := f.Seek(offset, io.SeekStart); err != nil {
			f.Close()
			return nil, wrap("read", p, err)
		}
	}
	return f, nil
}

// Stat implements driver.Driver.
func (d *Driver) Stat(ctx context.Context, p string) (driver.FileInfo, error) {
	full, err := d.full("stat", p)
	if err != nil {
		return driver.FileInfo{}, err
	}
	st, err := os.Stat(full)
	if err != nil {
		return driver.FileInfo{}, wrap("stat", p, err)
	}
	return driver.FileInfo{Path: p, Size: st.Size(), ModTime: st.ModTime(), IsDir: st.IsDir()}, nil
}

// Move implements driver.Driver with a rename followed by an fsync of the
// destination directory (moves are not journaled: they carry blobs).
func (d *Driver) Move(ctx context.Context, src, dst string) error {
	err := d.move(src, dst)
	d.noteWrite(err)
	return err
}

func (d *Driver) move(src, dst string) error {
	fsrc, err := d.full("move", src)
	if err != nil {
		return err
	}
	fdst, err := d.full("move", dst)
	if err != nil {
		return err
	}
	if _, err := os.Stat(fsrc); err != nil {
		return wrap("move", src, err)
	}
	if err := d.journal.settle(src, dst); err != nil {
		return wrap("move", dst, err)
	}
	dir := filepath.Dir(fdst)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return wrap("move", dst, err)
	}
	if err := osfile.Rename(fsrc, fdst); err != nil {
		return wrap("move", dst, err)
	}
	return wrap("move", dst, syncDir(dir))
}

// Delete implements driver.Driver; the removal is journaled.
func (d *Driver) Delete(ctx context.Context, p string) error {
	err := d.delete(p)
	d.noteWrite(err)
	return err
}

func (d *Driver) delete(p string) error {
	full, err := d.full("delete", p)
	if err != nil {
		return err
	}
	if full == d.root {
		return &driver.PathError{Op: "delete", Path: p, Err: driver.ErrInvalidPath}
	}
	if _, err := os.Lstat(full); err != nil {
		return wrap("delete", p, err)
	}
	done, err := d.journal.commit(opDelete, p, nil)
	if err != nil {
		return wrap("delete", p, err)
	}
	defer done()
	return wrap("delete", p, osfile.RemoveAll(full))
}

// syncDir makes a directory's entries durable (nothing to do on Windows,
// where NTFS journals metadata itself).
func syncDir(dir string) error { return osfile.SyncDir(dir) }
