package registry

import (
	"context"
	"fmt"
	"sync"
	"syscall"
	"testing"

	"github.com/berth-registry/berth/storage"
	"github.com/berth-registry/berth/storage/driver"
	"github.com/berth-registry/berth/storage/driver/filesystem"
)

// fullDriver is a filesystem driver whose small writes fail as on a full
// disk while full is set, and which reports that through Writable.
type fullDriver struct {
	*filesystem.Driver
	mu   sync.Mutex
	full bool
}

func (d *fullDriver) setFull(full bool) {
	d.mu.Lock()
	d.full = full
	d.mu.Unlock()
}

func (d *fullDriver) err() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.full {
		return fmt.Errorf("%w: %w", driver.ErrStorageFull, syscall.ENOSPC)
	}
	return nil
}

func (d *fullDriver) PutContent(ctx context.Context, p string, b []byte) error {
	if err := d.err(); err != nil {
		return &driver.PathError{Op: "put", Path: p, Err: err}
	}
	return d.Driver.PutContent(ctx, p, b)
}

func (d *fullDriver) Writable() error {
	if err := d.err(); err != nil {
		return err
	}
	return d.Driver.Writable()
}

// TestReadiness: while storage cannot take writes, a write answers 503
// UNAVAILABLE with Retry-After and /readyz answers 503, while /healthz and
// pulls go on; once writes work again, both recover without a restart.
func TestReadiness(t *testing.T) {
	fs, err := filesystem.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fs.Close() })
	d := &fullDriver{Driver: fs}
	h := New(Config{Store: storage.New(d)})
	run(t, h, []step{
		{method: "GET", path: "/readyz", status: 200},
		{method: "POST", path: "/v2/a/blobs/uploads/", status: 202},
	})
	d.setFull(true)
	run(t, h, []step{
		{method: "POST", path: "/v2/a/blobs/uploads/", status: 503, code: "UNAVAILABLE", want: map[string]string{"Retry-After": "30"}},
		{method: "GET", path: "/readyz", status: 503, wantBody: "not ready: storage is full"},
		{method: "GET", path: "/healthz", status: 200},
		{method: "GET", path: "/v2/", status: 200},
	})
	d.setFull(false)
	run(t, h, []step{
		{method: "GET", path: "/readyz", status: 200},
		{method: "POST", path: "/v2/a/blobs/uploads/", status: 202},
	})
}
