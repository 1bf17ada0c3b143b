package storage

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/storage/driver"
	"github.com/berth-registry/berth/storage/driver/filesystem"
)

// fileStater is a filesystem driver that is a driver.FileStater and
// records which paths were looked up with Stat.
type fileStater struct {
	*filesystem.Driver
	mu        sync.Mutex
	stats     []string
	statFiles int
}

func (d *fileStater) Stat(ctx context.Context, p string) (driver.FileInfo, error) {
	d.mu.Lock()
	d.stats = append(d.stats, p)
	d.mu.Unlock()
	return d.Driver.Stat(ctx, p)
}

func (d *fileStater) StatFile(ctx context.Context, p string) (driver.FileInfo, error) {
	d.mu.Lock()
	d.statFiles++
	d.mu.Unlock()
	fi, err := d.Driver.Stat(ctx, p)
	if err == nil && fi.IsDir {
		return driver.FileInfo{}, &driver.PathError{Op: "stat", Path: p, Err: driver.ErrNotFound}
	}
	return fi, err
}

// A push and a pull look up only files (links, blob data, leases, doomed
// markers), so on a FileStater they never pay for Stat's directory lookup,
// which on S3 is a listing after every HEAD that finds nothing: a manifest
// PUT took 16 HEADs and 6 listings on MinIO, now the HEADs alone.
func TestPushAndPullStatOnlyFiles(t *testing.T) {
	fsd, err := filesystem.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fsd.Close() })
	d := &fileStater{Driver: fsd}
	s := New(d)

	payload := image(t, s, "a", "1", nil) // blob uploads, monolithic
	id, err := s.StartUpload(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	chunked := bytes.Repeat([]byte("chunk"), 1000)
	if _, err := s.AppendUpload(ctx, "a", id, 0, bytes.NewReader(chunked[:3000])); err != nil {
		t.Fatal(err)
	}
	if _, err := s.UploadSize(ctx, "a", id); err != nil {
		t.Fatal(err)
	}
	chunkedDg := digest.FromBytes(chunked)
	if _, err := s.CompleteUpload(ctx, "a", id, 3000, bytes.NewReader(chunked[3000:]), chunkedDg); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CheckBlob(ctx, "a", chunkedDg); err != nil {
		t.Fatal(err)
	}
	if _, err := s.MountBlob(ctx, "b", "a", chunkedDg); err != nil {
		t.Fatal(err)
	}
	res, err := s.PutManifest(ctx, "a", "v1", MediaTypeOCIManifest, payload)
	if err != nil {
		t.Fatal(err)
	}
	s2 := New(d) // no cached manifest
	for _, ref := range []string{"v1", res.Digest.String()} {
		if _, err := s2.GetManifest(ctx, "a", ref); err != nil {
			t.Fatal(err)
		}
		if _, err := s2.CheckManifest(ctx, "a", ref); err != nil {
			t.Fatal(err)
		}
	}
	rc, _, err := s.OpenBlob(ctx, "a", chunkedDg, 0)
	if err != nil {
		t.Fatal(err)
	}
	rc.Close()
	if tags, _, err := s.Tags(ctx, "a", Page{N: -1}); err != nil || len(tags) != 1 {
		t.Fatalf("Tags = %v, %v", tags, err)
	}

	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.stats) != 0 || d.statFiles == 0 {
		t.Errorf("Stat of %q (and %d StatFile calls): want files looked up with StatFile only", d.stats, d.statFiles)
	}
}

// On a driver without StatFile, a directory where a file is looked for is
// not that file.
func TestStatFileWithoutFileStater(t *testing.T) {
	s, root := newStore(t)
	if err := os.MkdirAll(filepath.Join(root, "dir", "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "dir", "file"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if fi, err := s.statFile(ctx, "/dir/file"); err != nil || fi.Size != 1 {
		t.Errorf("statFile(file) = %+v, %v", fi, err)
	}
	for _, p := range []string{"/dir/sub", "/dir/missing"} {
		if _, err := s.statFile(ctx, p); !errors.Is(err, driver.ErrNotFound) {
			t.Errorf("statFile(%s) = %v, want ErrNotFound", p, err)
		}
		if ok, err := s.fileExists(ctx, p); ok || err != nil {
			t.Errorf("fileExists(%s) = %v, %v", p, ok, err)
		}
	}
	if ok, err := s.exists(ctx, "/dir/sub"); !ok || err != nil {
		t.Errorf("exists(directory) = %v, %v", ok, err)
	}
}
