package s3_test

import (
	"strings"
	"testing"

	"github.com/minio/minio-go/v7"

	"github.com/berth-registry/berth/internal/miniotest"
)

// A writer that dies before its first Close (a replica killed while the
// first chunk of an upload streamed in) leaves a multipart upload that no
// pending object names. Deleting the file, or a directory above it (an
// upload session cancelled or purged), must abort that upload: S3 keeps
// and bills its parts until then, and MinIO cannot list the uploads under
// a directory to find it.
func TestDeleteAbortsUploadsOfWritersThatNeverClosed(t *testing.T) {
	srv := miniotest.Shared(t)
	bucket := srv.NewBucket(t)
	d := newDriver(t, srv, bucket, "/registry")

	// Died during its first chunk, in a directory with other files.
	if err := d.PutContent(ctx, "/s/1/startedat", []byte("now")); err != nil {
		t.Fatal(err)
	}
	w, err := d.Writer(ctx, "/s/1/data", true)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(random(t, 6<<20)); err != nil {
		t.Fatal(err)
	}
	// Died after appending to a committed file: the upload that copies
	// the file is named by no pending object either.
	if err := d.PutContent(ctx, "/s/2/data", random(t, 6<<20)); err != nil {
		t.Fatal(err)
	}
	w, err = d.Writer(ctx, "/s/2/data", true)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(random(t, 10)); err != nil {
		t.Fatal(err)
	}
	// Died during its first chunk, the file deleted by its own path.
	w, err = d.Writer(ctx, "/f", true)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(random(t, 5<<20)); err != nil {
		t.Fatal(err)
	}
	if n := countUploads(t, srv, bucket); n != 3 {
		t.Fatalf("%d multipart uploads in progress, want the 3 the dead writers began", n)
	}

	if err := d.Delete(ctx, "/s"); err != nil {
		t.Fatal(err)
	}
	if n := countUploads(t, srv, bucket); n != 1 {
		t.Fatalf("after deleting /s, %d multipart uploads in progress, want only that of /f", n)
	}
	if err := d.Delete(ctx, "/f"); err != nil {
		t.Fatal(err)
	}
	assertNoUploads(t, srv, bucket)
	assertNoObjects(t, srv, bucket)
}

// A file written through a multipart upload and committed leaves nothing
// of the writer's in the bucket.
func TestCommitLeavesOnlyTheObject(t *testing.T) {
	srv := miniotest.Shared(t)
	bucket := srv.NewBucket(t)
	d := newDriver(t, srv, bucket, "")
	w, err := d.Writer(ctx, "/u/data", true)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(random(t, 6<<20)); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	// Another replica's writer finishes it.
	w, err = newDriver(t, srv, bucket, "").Writer(ctx, "/u/data", true)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	assertNoUploads(t, srv, bucket)
	var keys []string
	for o := range srv.Client(t).ListObjects(ctx, bucket, minio.ListObjectsOptions{Recursive: true}) {
		if o.Err != nil {
			t.Fatal(o.Err)
		}
		keys = append(keys, o.Key)
	}
	if len(keys) != 1 || keys[0] != "u/data" {
		t.Errorf("objects after the commit: %v, want [u/data]", keys)
	}
}

func countUploads(t *testing.T, srv *miniotest.Server, bucket string) int {
	t.Helper()
	n := 0
	for u := range srv.Client(t).ListIncompleteUploads(ctx, bucket, "", true) {
		if u.Err != nil {
			t.Fatal(u.Err)
		}
		n++
	}
	return n
}

func assertNoObjects(t *testing.T, srv *miniotest.Server, bucket string) {
	t.Helper()
	var left []string
	for o := range srv.Client(t).ListObjects(ctx, bucket, minio.ListObjectsOptions{Recursive: true}) {
		if o.Err != nil {
			t.Fatal(o.Err)
		}
		left = append(left, o.Key)
	}
	if len(left) != 0 {
		t.Errorf("objects left: %s", strings.Join(left, ", "))
	}
}
