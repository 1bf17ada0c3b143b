package s3_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/minio/minio-go/v7"

	"github.com/berth-registry/berth/internal/miniotest"
	"github.com/berth-registry/berth/storage/driver"
	"github.com/berth-registry/berth/storage/driver/drivertest"
	"github.com/berth-registry/berth/storage/driver/s3"
)

var ctx = context.Background()

// newDriver returns a driver on a fresh bucket of the shared MinIO, with
// the smallest chunk S3 allows so that multipart paths run on small data.
func newDriver(t testing.TB, srv *miniotest.Server, bucket, root string) *s3.Driver {
	t.Helper()
	secure := false
	d, err := s3.New(ctx, s3.Options{
		RegionEndpoint: srv.Endpoint, Bucket: bucket, ForcePathStyle: true,
		AccessKey: miniotest.AccessKey, SecretKey: miniotest.SecretKey,
		RootDirectory: root, Secure: &secure, ChunkSize: 5 << 20,
	})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestDriverSuite(t *testing.T) {
	srv := miniotest.Shared(t)
	drivertest.Run(t, func(t *testing.T) driver.Driver {
		return newDriver(t, srv, srv.NewBucket(t), "/registry")
	})
}

func random(t testing.TB, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// A file written in pieces by writers on different drivers (replicas),
// with pieces smaller and larger than a part, and a Close between each:
// every writer continues exactly where the last one stopped, and the
// committed object is the concatenation.
func TestWriterResumesAcrossDrivers(t *testing.T) {
	srv := miniotest.Shared(t)
	bucket := srv.NewBucket(t)
	a, b := newDriver(t, srv, bucket, ""), newDriver(t, srv, bucket, "")
	var want []byte
	pieces := []int{100, 3 << 20, 6 << 20, 1, 5 << 20, 12 << 20, 7}
	for i, n := range pieces {
		d := a
		if i%2 == 1 {
			d = b
		}
		w, err := d.Writer(ctx, "/up/data", true)
		if err != nil {
			t.Fatal(err)
		}
		if w.Size() != int64(len(want)) {
			t.Fatalf("piece %d: resumed at %d, want %d", i, w.Size(), len(want))
		}
		p := random(t, n)
		if _, err := w.Write(p); err != nil {
			t.Fatal(err)
		}
		want = append(want, p...)
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	}
	// Nothing is visible before Commit.
	if _, err := a.Stat(ctx, "/up/data"); !errors.Is(err, driver.ErrNotFound) {
		t.Fatalf("Stat of an unfinished file = %v, want not found", err)
	}
	w, err := b.Writer(ctx, "/up/data", true)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	w.Close()
	got, err := a.GetContent(ctx, "/up/data")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("committed %d bytes, want %d (equal: %v)", len(got), len(want), bytes.Equal(got, want))
	}
	// The driver's own objects are gone and never listed.
	entries, err := a.ListPage(ctx, "/up", "", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Name != "data" {
		t.Fatalf("listing after commit: %+v", entries)
	}
	assertNoUploads(t, srv, bucket)
}

// A writer whose Close never came (its replica died mid-request) leaves
// parts the next writer must not count: it resumes from the last Close.
func TestWriterIgnoresPartsOfADeadWriter(t *testing.T) {
	srv := miniotest.Shared(t)
	bucket := srv.NewBucket(t)
	d := newDriver(t, srv, bucket, "")
	w, err := d.Writer(ctx, "/f", false)
	if err != nil {
		t.Fatal(err)
	}
	first := random(t, 6<<20)
	w.Write(first)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	// The dying writer uploads two more parts and never closes.
	w, err = d.Writer(ctx, "/f", true)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(random(t, 11<<20)); err != nil {
		t.Fatal(err)
	}
	w2, err := d.Writer(ctx, "/f", true)
	if err != nil {
		t.Fatal(err)
	}
	if w2.Size() != int64(len(first)) {
		t.Fatalf("resumed at %d, want %d", w2.Size(), len(first))
	}
	last := random(t, 5<<20+3)
	w2.Write(last)
	if err := w2.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	w2.Close()
	got, err := d.GetContent(ctx, "/f")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, append(first, last...)) {
		t.Fatalf("got %d bytes, want %d", len(got), len(first)+len(last))
	}
	// The dead writer cannot complete over it: its parts were replaced.
	if err := w.Commit(ctx); err == nil {
		got2, _ := d.GetContent(ctx, "/f")
		if !bytes.Equal(got2, got) {
			t.Fatal("a stale writer's commit replaced the file")
		}
	}
}

// Appending to a committed file copies it into a new upload on the server
// (or reads it back when it is smaller than a part).
func TestWriterAppendsAfterCommit(t *testing.T) {
	srv := miniotest.Shared(t)
	d := newDriver(t, srv, srv.NewBucket(t), "")
	for _, size := range []int{10, 7 << 20} {
		first := random(t, size)
		if err := d.PutContent(ctx, "/g", first); err != nil {
			t.Fatal(err)
		}
		w, err := d.Writer(ctx, "/g", true)
		if err != nil {
			t.Fatal(err)
		}
		more := random(t, 1<<20)
		w.Write(more)
		if err := w.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		w.Close()
		got, err := d.GetContent(ctx, "/g")
		if err != nil || !bytes.Equal(got, append(first, more...)) {
			t.Fatalf("size %d: got %d bytes (%v), want %d", size, len(got), err, size+len(more))
		}
	}
}

// Cancel and Delete leave no multipart upload behind.
func TestCancelAndDeleteAbortUploads(t *testing.T) {
	srv := miniotest.Shared(t)
	bucket := srv.NewBucket(t)
	d := newDriver(t, srv, bucket, "")
	w, _ := d.Writer(ctx, "/u/1/data", false)
	w.Write(random(t, 6<<20))
	w.Close()
	w, _ = d.Writer(ctx, "/u/2/data", false)
	w.Write(random(t, 6<<20))
	if err := w.Cancel(ctx); err != nil {
		t.Fatal(err)
	}
	if err := d.Delete(ctx, "/u/1"); err != nil {
		t.Fatal(err)
	}
	assertNoUploads(t, srv, bucket)
	if err := d.Delete(ctx, "/u"); !errors.Is(err, driver.ErrNotFound) {
		t.Fatalf("Delete of an emptied tree = %v, want not found", err)
	}
}

// Distribution's layout: the driver path /docker/… is the key
// <rootdirectory>/docker/…, so either registry reads the other's bucket.
func TestObjectLayout(t *testing.T) {
	srv := miniotest.Shared(t)
	bucket := srv.NewBucket(t)
	d := newDriver(t, srv, bucket, "/some/root/")
	if err := d.PutContent(ctx, "/docker/registry/v2/x", []byte("1")); err != nil {
		t.Fatal(err)
	}
	if _, err := srv.Client(t).StatObject(ctx, bucket, "some/root/docker/registry/v2/x", minio.StatObjectOptions{}); err != nil {
		t.Fatalf("object not at Distribution's key: %v", err)
	}
}

// Move of a file larger than the copy threshold goes through a multipart
// copy (the path of blobs larger than 5 GiB).
func TestMoveMultipartCopy(t *testing.T) {
	srv := miniotest.Shared(t)
	bucket := srv.NewBucket(t)
	secure := false
	d, err := s3.New(ctx, s3.Options{
		RegionEndpoint: srv.Endpoint, Bucket: bucket, ForcePathStyle: true,
		AccessKey: miniotest.AccessKey, SecretKey: miniotest.SecretKey, Secure: &secure,
		MultipartCopyThresholdSize: 5 << 20, MultipartCopyChunkSize: 5 << 20,
	})
	if err != nil {
		t.Fatal(err)
	}
	content := random(t, 12<<20+1)
	if err := d.PutContent(ctx, "/src", content); err != nil {
		t.Fatal(err)
	}
	if err := d.Move(ctx, "/src", "/dst/data"); err != nil {
		t.Fatal(err)
	}
	got, err := d.GetContent(ctx, "/dst/data")
	if err != nil || !bytes.Equal(got, content) {
		t.Fatalf("moved %d bytes (%v), want %d", len(got), err, len(content))
	}
	if _, err := d.Stat(ctx, "/src"); !errors.Is(err, driver.ErrNotFound) {
		t.Fatalf("src after move: %v", err)
	}
}

// A presigned redirect URL serves the file without credentials.
func TestRedirectURL(t *testing.T) {
	srv := miniotest.Shared(t)
	d := newDriver(t, srv, srv.NewBucket(t), "")
	if err := d.PutContent(ctx, "/blob", []byte("presigned")); err != nil {
		t.Fatal(err)
	}
	u, err := d.RedirectURL(ctx, "/blob")
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(body) != "presigned" {
		t.Fatalf("GET presigned: %d %q", resp.StatusCode, body)
	}
	if !strings.Contains(u, "X-Amz-Signature=") {
		t.Fatalf("URL is not presigned: %s", u)
	}
}

func assertNoUploads(t *testing.T, srv *miniotest.Server, bucket string) {
	t.Helper()
	for u := range srv.Client(t).ListIncompleteUploads(ctx, bucket, "", true) {
		if u.Err != nil {
			t.Fatal(u.Err)
		}
		t.Errorf("multipart upload left behind: %s", u.Key)
	}
}

// Two writers on one file at once (a chunk sent to two replicas): the
// first Close keeps its bytes, the second fails with ErrConcurrentWriter
// and keeps nothing, so the saved state always matches one writer's bytes.
func TestConcurrentWritersOneCloseWins(t *testing.T) {
	srv := miniotest.Shared(t)
	d := newDriver(t, srv, srv.NewBucket(t), "")
	for _, start := range []string{"", "already here "} {
		p := fmt.Sprintf("/c/%d", len(start))
		if start != "" {
			w, _ := d.Writer(ctx, p, false)
			w.Write([]byte(start))
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
		}
		a, err := d.Writer(ctx, p, true)
		if err != nil {
			t.Fatal(err)
		}
		b, err := d.Writer(ctx, p, true)
		if err != nil {
			t.Fatal(err)
		}
		a.Write([]byte("from a"))
		b.Write([]byte("from b"))
		if err := a.Close(); err != nil {
			t.Fatalf("first Close: %v", err)
		}
		if err := b.Close(); !errors.Is(err, s3.ErrConcurrentWriter) {
			t.Fatalf("second Close = %v, want ErrConcurrentWriter", err)
		}
		w, err := d.Writer(ctx, p, true)
		if err != nil {
			t.Fatal(err)
		}
		if err := w.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		if got, _ := d.GetContent(ctx, p); string(got) != start+"from a" {
			t.Fatalf("content %q, want %q", got, start+"from a")
		}
	}
}

// What a Close leaves over becomes a part when it may be one, so the next
// writer reads nothing back: pushes in chunks of 5 MiB or more never go
// through the pending object.
func TestCloseMakesLeftoverAPart(t *testing.T) {
	srv := miniotest.Shared(t)
	bucket := srv.NewBucket(t)
	secure := false
	d, err := s3.New(ctx, s3.Options{
		RegionEndpoint: srv.Endpoint, Bucket: bucket, ForcePathStyle: true,
		AccessKey: miniotest.AccessKey, SecretKey: miniotest.SecretKey, Secure: &secure,
		ChunkSize: 8 << 20,
	})
	if err != nil {
		t.Fatal(err)
	}
	mc := srv.Client(t)
	var want []byte
	// Left over after each Close: 14-8 = 6 MiB (a part), then 3 MiB
	// (pending), then 3+6-8 = 1 MiB (pending), then 1+5 = 6 MiB (a part).
	for i, piece := range []struct {
		n       int
		pending int64
	}{{14 << 20, 0}, {3 << 20, 3 << 20}, {6 << 20, 1 << 20}, {5 << 20, 0}} {
		w, err := d.Writer(ctx, "/up/data", true)
		if err != nil {
			t.Fatal(err)
		}
		if w.Size() != int64(len(want)) {
			t.Fatalf("piece %d: resumed at %d, want %d", i, w.Size(), len(want))
		}
		p := random(t, piece.n)
		if n, err := w.Write(p); n != len(p) || err != nil {
			t.Fatalf("Write = %d, %v", n, err)
		}
		want = append(want, p...)
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		if w.Size() != int64(len(want)) {
			t.Errorf("piece %d: Size after Close = %d, want %d", i, w.Size(), len(want))
		}
		info, err := mc.StatObject(ctx, bucket, "up/data#pending", minio.StatObjectOptions{})
		if err != nil || info.Size != piece.pending {
			t.Errorf("piece %d: pending object of %d bytes (%v), want %d", i, info.Size, err, piece.pending)
		}
	}
	w, err := d.Writer(ctx, "/up/data", true)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	w.Close()
	got, err := d.GetContent(ctx, "/up/data")
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("committed %d bytes (%v), want %d (equal: %v)", len(got), err, len(want), bytes.Equal(got, want))
	}
	assertNoUploads(t, srv, bucket)
}
