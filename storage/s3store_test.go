package storage

import (
	"bytes"
	"crypto/rand"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/internal/miniotest"
	"github.com/berth-registry/berth/storage/driver/s3"
)

// The store on the S3 driver, against a real MinIO: the storage tests that
// need no filesystem, and what only an object store can get wrong.

// storesOn, while set, is where newStore and reopen open their stores:
// given "", on fresh storage, whose name it returns; given that name, on
// the same storage again (another replica).
var storesOn func(t testing.TB, where string) (*Store, string)

// s3Store opens a store on bucket with the smallest part size S3 allows.
func s3Store(t testing.TB, srv *miniotest.Server, bucket string, opts Options) (*Store, *s3.Driver) {
	t.Helper()
	secure := false
	d, err := s3.New(ctx, s3.Options{
		RegionEndpoint: srv.Endpoint, Bucket: bucket, ForcePathStyle: true, Secure: &secure,
		AccessKey: miniotest.AccessKey, SecretKey: miniotest.SecretKey,
		RootDirectory: "/registry", ChunkSize: 5 << 20,
	})
	if err != nil {
		t.Fatal(err)
	}
	return NewWithOptions(d, opts), d
}

// TestStoreOnS3 runs storage tests of uploads, manifests, tags, referrers
// and the catalog on a store whose driver is S3, each on a bucket of its
// own; the tests that reopen the store open a second one on the bucket.
func TestStoreOnS3(t *testing.T) {
	srv := miniotest.Shared(t)
	storesOn = func(t testing.TB, bucket string) (*Store, string) {
		if bucket == "" {
			bucket = srv.NewBucket(t)
		}
		s, _ := s3Store(t, srv, bucket, Options{})
		return s, bucket
	}
	t.Cleanup(func() { storesOn = nil })
	for _, tc := range []struct {
		name string
		run  func(*testing.T)
	}{
		{"ChunkOutOfOrder", TestChunkOutOfOrder},
		{"UnknownUpload", TestUnknownUpload},
		{"ResumeOnAnotherStore", TestResumeOnAnotherStore},
		{"SHA512Blob", TestSHA512Blob},
		{"ConcurrentUploadsOfOneBlob", TestConcurrentUploadsOfOneBlob},
		{"ConcurrentChunksOfOneUpload", TestConcurrentChunksOfOneUpload},
		{"ManifestRefusals", TestManifestRefusals},
		{"MediaTypeInference", TestMediaTypeInference},
		{"IndexAndForeignLayers", TestIndexAndForeignLayers},
		{"DeleteManifestAndTags", TestDeleteManifestAndTags},
		{"TagsAndCatalogPages", TestTagsAndCatalogPages},
		{"Referrers", TestReferrers},
		{"ManifestContentType", TestManifestContentType},
	} {
		t.Run(tc.name, tc.run)
	}
}

func randomBytes(t testing.TB, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// incompleteUploads returns the keys of the bucket's multipart uploads in
// progress (MinIO lists them by an empty prefix or a whole key only).
func incompleteUploads(t testing.TB, srv *miniotest.Server, bucket string) []string {
	t.Helper()
	var keys []string
	for u := range srv.Client(t).ListIncompleteUploads(ctx, bucket, "", true) {
		if u.Err != nil {
			t.Fatal(u.Err)
		}
		keys = append(keys, u.Key)
	}
	return keys
}

// objectsUnder returns the keys of the objects under a directory of the
// store's tree.
func objectsUnder(t testing.TB, srv *miniotest.Server, bucket, dir string) []string {
	t.Helper()
	var keys []string
	prefix := "registry" + dir + "/"
	for o := range srv.Client(t).ListObjects(ctx, bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
		if o.Err != nil {
			t.Fatal(o.Err)
		}
		keys = append(keys, o.Key)
	}
	return keys
}

// TestS3UploadLosesItsHashState: when the sha256 state saved after a
// chunk is missing (the replica died between keeping the chunk and saving
// the state, or Distribution began the upload), the next replica commits
// what the bucket holds, rehashes it, and appends by a server-side copy;
// the replica that took the first chunk then completes from the state the
// second saved, not the one it remembers.
func TestS3UploadLosesItsHashState(t *testing.T) {
	srv := miniotest.Shared(t)
	bucket := srv.NewBucket(t)
	s1, d := s3Store(t, srv, bucket, Options{})
	s2, _ := s3Store(t, srv, bucket, Options{})
	content := randomBytes(t, 13<<20+5)
	dg := digest.FromBytes(content)
	cut1, cut2 := 7<<20+1, 11<<20+3
	id, err := s1.StartUpload(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s1.AppendUpload(ctx, "a", id, 0, bytes.NewReader(content[:cut1])); err != nil {
		t.Fatal(err)
	}
	if err := d.Delete(ctx, uploadHashStatesPath("a", id)); err != nil {
		t.Fatalf("removing the saved states: %v", err)
	}
	if n, err := s2.AppendUpload(ctx, "a", id, int64(cut1), bytes.NewReader(content[cut1:cut2])); err != nil || n != int64(cut2) {
		t.Fatalf("append on the second store: %d, %v", n, err)
	}
	if _, err := s1.CompleteUpload(ctx, "a", id, int64(cut2), bytes.NewReader(content[cut2:]), dg); err != nil {
		t.Fatalf("complete on the first store: %v", err)
	}
	if !bytes.Equal(readBlob(t, s2, "a", dg), content) {
		t.Fatal("the blob differs from what was uploaded")
	}
	if left := incompleteUploads(t, srv, bucket); len(left) != 0 {
		t.Errorf("multipart uploads left: %v", left)
	}
	if left := objectsUnder(t, srv, bucket, uploadPath("a", id)); len(left) != 0 {
		t.Errorf("objects of the finished session left: %v", left)
	}
}

// TestS3PurgeUploads: purging removes abandoned sessions on S3 with their
// multipart uploads, also one whose replica died before it kept a chunk,
// and keeps a session that still grows, upload and all.
func TestS3PurgeUploads(t *testing.T) {
	srv := miniotest.Shared(t)
	bucket := srv.NewBucket(t)
	s, d := s3Store(t, srv, bucket, Options{})
	const age = 2 * time.Second
	start := func() string {
		id, err := s.StartUpload(ctx, "a")
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	// Abandoned after a chunk larger than a part: a multipart upload and
	// a pending object.
	kept := start()
	if _, err := s.AppendUpload(ctx, "a", kept, 0, bytes.NewReader(randomBytes(t, 6<<20))); err != nil {
		t.Fatal(err)
	}
	// Abandoned by a replica that died while its first chunk arrived: a
	// multipart upload and nothing that names it but the driver's marker.
	died := start()
	w, err := d.Writer(ctx, uploadDataPath("a", died), true)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(randomBytes(t, 6<<20)); err != nil {
		t.Fatal(err)
	}
	// Begun as long ago, but it grows.
	active := start()
	content := randomBytes(t, 11<<20)
	if _, err := s.AppendUpload(ctx, "a", active, 0, bytes.NewReader(content[:6<<20])); err != nil {
		t.Fatal(err)
	}
	if n := len(incompleteUploads(t, srv, bucket)); n != 3 {
		t.Fatalf("%d multipart uploads in progress, want 3", n)
	}

	time.Sleep(age + 1500*time.Millisecond) // the bucket's times are whole seconds
	if _, err := s.AppendUpload(ctx, "a", active, 6<<20, bytes.NewReader(content[6<<20:10<<20])); err != nil {
		t.Fatal(err)
	}
	var removed []string
	rep, err := s.PurgeUploads(ctx, PurgeOptions{Age: age, OnRemove: func(_, id string) { removed = append(removed, id) }})
	if err != nil || rep.Sessions != 3 || rep.Removed != 2 || rep.Failed != 0 {
		t.Fatalf("purge: %+v, %v; want 3 sessions seen, 2 removed", rep, err)
	}
	for _, id := range []string{kept, died} {
		if _, err := s.UploadSize(ctx, "a", id); !errors.Is(err, ErrUploadUnknown) {
			t.Errorf("abandoned session %s: %v, want ErrUploadUnknown", id, err)
		}
		if left := objectsUnder(t, srv, bucket, uploadPath("a", id)); len(left) != 0 {
			t.Errorf("objects of purged session %s left: %v", id, left)
		}
	}
	left := incompleteUploads(t, srv, bucket)
	if len(left) != 1 || !strings.Contains(left[0], active) {
		t.Errorf("multipart uploads after the purge: %v, want only that of session %s", left, active)
	}
	if _, err := s.CompleteUpload(ctx, "a", active, 10<<20, bytes.NewReader(content[10<<20:]), digest.FromBytes(content)); err != nil {
		t.Fatalf("completing the session the purge kept: %v", err)
	}
	if !bytes.Equal(readBlob(t, s, "a", digest.FromBytes(content)), content) {
		t.Fatal("the blob differs from what was uploaded")
	}
	if left := incompleteUploads(t, srv, bucket); len(left) != 0 {
		t.Errorf("multipart uploads left at the end: %v", left)
	}
}
