package storage

import (
	"bytes"
	"context"
	"crypto/sha512"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/storage/driver/filesystem"
)

var ctx = context.Background()

// newStore returns a store on a fresh filesystem driver and the driver's root
// (while storesOn is set, a store on what it opens; see s3store_test.go).
func newStore(t testing.TB) (*Store, string) {
	t.Helper()
	if storesOn != nil {
		return storesOn(t, "")
	}
	root := t.TempDir()
	d, err := filesystem.New(root)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return New(d), root
}

// reopen returns a second store on the same directory, as a restarted
// registry would have.
func reopen(t *testing.T, root string) *Store {
	t.Helper()
	if storesOn != nil {
		s, _ := storesOn(t, root)
		return s
	}
	d, err := filesystem.New(root)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return New(d)
}

func readBlob(t *testing.T, s *Store, name string, dg digest.Digest) []byte {
	t.Helper()
	r, size, err := s.OpenBlob(ctx, name, dg, 0)
	if err != nil {
		t.Fatalf("OpenBlob(%s, %s): %v", name, dg, err)
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil || int64(len(b)) != size {
		t.Fatalf("read %d bytes of %d: %v", len(b), size, err)
	}
	return b
}

func TestPutBlobLayout(t *testing.T) {
	s, root := newStore(t)
	content := []byte("hello, layer")
	dg := digest.FromBytes(content)
	size, err := s.PutBlob(ctx, "team/app", dg, bytes.NewReader(content))
	if err != nil || size != int64(len(content)) {
		t.Fatalf("PutBlob = %d, %v", size, err)
	}
	if got := readBlob(t, s, "team/app", dg); !bytes.Equal(got, content) {
		t.Fatalf("read back %q", got)
	}
	// Distribution's layout, to the byte.
	hex := dg.Encoded()
	data, err := os.ReadFile(filepath.Join(root, "docker/registry/v2/blobs/sha256", hex[:2], hex, "data"))
	if err != nil || !bytes.Equal(data, content) {
		t.Fatalf("blob data file: %q, %v", data, err)
	}
	link, err := os.ReadFile(filepath.Join(root, "docker/registry/v2/repositories/team/app/_layers/sha256", hex, "link"))
	if err != nil || string(link) != dg.String() {
		t.Fatalf("layer link: %q, %v", link, err)
	}
	uploads, _ := os.ReadDir(filepath.Join(root, "docker/registry/v2/repositories/team/app/_uploads"))
	if len(uploads) != 0 {
		t.Fatalf("upload session left behind: %v", uploads)
	}
	// Another repository does not see it until it is mounted.
	if _, err := s.StatBlob(ctx, "other", dg); !errors.Is(err, ErrBlobUnknown) {
		t.Fatalf("blob visible in another repository: %v", err)
	}
	if _, err := s.MountBlob(ctx, "other", "team/app", dg); err != nil {
		t.Fatal(err)
	}
	if got := readBlob(t, s, "other", dg); !bytes.Equal(got, content) {
		t.Fatal("mounted blob differs")
	}
}

func TestWrongDigestStoresNothing(t *testing.T) {
	s, root := newStore(t)
	content := []byte("actual content")
	claimed := digest.FromString("something else")
	id, err := s.StartUpload(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.CompleteUpload(ctx, "a", id, 0, bytes.NewReader(content), claimed)
	var mm *DigestMismatchError
	if !errors.As(err, &mm) || mm.Want != claimed || mm.Got != digest.FromBytes(content) {
		t.Fatalf("CompleteUpload = %v, want DigestMismatchError with both digests", err)
	}
	for _, dg := range []digest.Digest{claimed, digest.FromBytes(content)} {
		if _, err := s.StatBlob(ctx, "a", dg); !errors.Is(err, ErrBlobUnknown) {
			t.Errorf("blob %s visible after a failed upload: %v", dg, err)
		}
		hex := dg.Encoded()
		if _, err := os.Stat(filepath.Join(root, "docker/registry/v2/blobs/sha256", hex[:2], hex)); !os.IsNotExist(err) {
			t.Errorf("blob %s stored after a failed upload", dg)
		}
	}
	// The session is still there and can be completed with the right digest.
	if size, err := s.UploadSize(ctx, "a", id); err != nil || size != int64(len(content)) {
		t.Fatalf("UploadSize after mismatch = %d, %v", size, err)
	}
	if _, err := s.CompleteUpload(ctx, "a", id, -1, nil, digest.FromBytes(content)); err != nil {
		t.Fatalf("completing with the right digest: %v", err)
	}
}

// shortReader yields n bytes and then fails as a cut-off HTTP body does.
type shortReader struct {
	r io.Reader
}

func (s *shortReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if err == io.EOF {
		return n, io.ErrUnexpectedEOF
	}
	return n, err
}

func TestShortBodyKeepsWhatArrived(t *testing.T) {
	s, root := newStore(t)
	content := bytes.Repeat([]byte("0123456789"), 300_000) // 3 MB: several buffers
	dg := digest.FromBytes(content)
	id, _ := s.StartUpload(ctx, "a")
	_, err := s.AppendUpload(ctx, "a", id, 0, &shortReader{bytes.NewReader(content[:2_000_000])})
	if !errors.Is(err, ErrUploadInvalid) {
		t.Fatalf("AppendUpload of a cut-off body = %v, want ErrUploadInvalid", err)
	}
	size, err := s.UploadSize(ctx, "a", id)
	if err != nil || size != 2_000_000 {
		t.Fatalf("UploadSize = %d, %v; want the 2000000 bytes that arrived", size, err)
	}
	// A failed monolithic upload leaves no blob and no session.
	if _, err := s.PutBlob(ctx, "a", dg, &shortReader{bytes.NewReader(content[:10])}); !errors.Is(err, ErrUploadInvalid) {
		t.Fatalf("PutBlob of a cut-off body = %v", err)
	}
	// Resume where the status says, on a restarted store.
	s2 := reopen(t, root)
	if _, err := s2.CompleteUpload(ctx, "a", id, size, bytes.NewReader(content[size:]), dg); err != nil {
		t.Fatalf("resume: %v", err)
	}
	if got := readBlob(t, s2, "a", dg); !bytes.Equal(got, content) {
		t.Fatal("resumed blob differs")
	}
	entries, _ := os.ReadDir(filepath.Join(root, "docker/registry/v2/repositories/a/_uploads"))
	if len(entries) != 0 {
		t.Fatalf("%d upload sessions left, want 0", len(entries))
	}
}

func TestChunkOutOfOrder(t *testing.T) {
	s, _ := newStore(t)
	id, _ := s.StartUpload(ctx, "a")
	if _, err := s.AppendUpload(ctx, "a", id, 0, strings.NewReader("abc")); err != nil {
		t.Fatal(err)
	}
	for _, start := range []int64{0, 2, 4} {
		_, err := s.AppendUpload(ctx, "a", id, start, strings.NewReader("def"))
		var re *RangeError
		if !errors.As(err, &re) || re.Size != 3 {
			t.Errorf("chunk at %d: %v, want RangeError with size 3", start, err)
		}
	}
	if size, _ := s.UploadSize(ctx, "a", id); size != 3 {
		t.Fatalf("a refused chunk changed the upload: size %d", size)
	}
	// A streamed chunk (no range) appends.
	if size, err := s.AppendUpload(ctx, "a", id, -1, strings.NewReader("def")); err != nil || size != 6 {
		t.Fatalf("streamed append = %d, %v", size, err)
	}
}

func TestUnknownUpload(t *testing.T) {
	s, _ := newStore(t)
	for _, id := range []string{"00000000-0000-4000-8000-000000000000", "../../_layers", "a/b", "", strings.Repeat("x", 200)} {
		if _, err := s.UploadSize(ctx, "a", id); !errors.Is(err, ErrUploadUnknown) {
			t.Errorf("UploadSize(%q) = %v", id, err)
		}
		if _, err := s.AppendUpload(ctx, "a", id, -1, strings.NewReader("x")); !errors.Is(err, ErrUploadUnknown) {
			t.Errorf("AppendUpload(%q) = %v", id, err)
		}
		if _, err := s.CompleteUpload(ctx, "a", id, -1, nil, digest.FromString("")); !errors.Is(err, ErrUploadUnknown) {
			t.Errorf("CompleteUpload(%q) = %v", id, err)
		}
		if err := s.CancelUpload(ctx, "a", id); !errors.Is(err, ErrUploadUnknown) {
			t.Errorf("CancelUpload(%q) = %v", id, err)
		}
	}
	// An upload belongs to its repository.
	id, _ := s.StartUpload(ctx, "a")
	if _, err := s.UploadSize(ctx, "b", id); !errors.Is(err, ErrUploadUnknown) {
		t.Errorf("upload of a visible from b: %v", err)
	}
	if err := s.CancelUpload(ctx, "a", id); err != nil {
		t.Fatal(err)
	}
	if _, err := s.UploadSize(ctx, "a", id); !errors.Is(err, ErrUploadUnknown) {
		t.Errorf("cancelled upload still known: %v", err)
	}
}

func TestResumeOnAnotherStore(t *testing.T) {
	s, root := newStore(t)
	content := bytes.Repeat([]byte("x"), 3<<20+17)
	dg := digest.FromBytes(content)
	id, _ := s.StartUpload(ctx, "a")
	if _, err := s.AppendUpload(ctx, "a", id, 0, bytes.NewReader(content[:1<<20])); err != nil {
		t.Fatal(err)
	}
	// A restarted registry, another replica, or an upload Distribution
	// began: no hash state in memory, so the store rehashes what is there.
	s2 := reopen(t, root)
	if _, err := s2.AppendUpload(ctx, "a", id, 1<<20, bytes.NewReader(content[1<<20:2<<20])); err != nil {
		t.Fatal(err)
	}
	if _, err := s2.CompleteUpload(ctx, "a", id, 2<<20, bytes.NewReader(content[2<<20:]), dg); err != nil {
		t.Fatalf("complete on another store: %v", err)
	}
	if !bytes.Equal(readBlob(t, s2, "a", dg), content) {
		t.Fatal("content differs")
	}
}

// TestHashStateFollowsTheDisk: if the data file is changed behind the
// store's back (a crash that lost an unsynced tail, another replica's
// append), the remembered state no longer matches its size and the store
// rehashes instead of trusting it.
func TestHashStateFollowsTheDisk(t *testing.T) {
	s, root := newStore(t)
	id, _ := s.StartUpload(ctx, "a")
	if _, err := s.AppendUpload(ctx, "a", id, 0, strings.NewReader("0123456789")); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(root, "docker/registry/v2/repositories/a/_uploads", id, "data")
	if err := os.Truncate(data, 4); err != nil { // the crash kept 4 bytes
		t.Fatal(err)
	}
	size, err := s.UploadSize(ctx, "a", id)
	if err != nil || size != 4 {
		t.Fatalf("size after the loss: %d, %v", size, err)
	}
	if _, err := s.CompleteUpload(ctx, "a", id, 4, strings.NewReader("456789"), digest.FromString("0123456789")); err != nil {
		t.Fatalf("resume after the loss: %v", err)
	}
}

func TestSHA512Blob(t *testing.T) {
	s, _ := newStore(t)
	content := []byte("sha512 content")
	sum := sha512.Sum512(content)
	dg := digest.NewDigestFromBytes(digest.SHA512, sum[:])
	if _, err := s.PutBlob(ctx, "a", dg, bytes.NewReader(content)); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readBlob(t, s, "a", dg), content) {
		t.Fatal("content differs")
	}
	if _, err := s.PutBlob(ctx, "a", digest.NewDigestFromBytes(digest.SHA512, make([]byte, 64)), bytes.NewReader(content)); err == nil {
		t.Fatal("wrong sha512 digest accepted")
	}
}

func TestConcurrentUploadsOfOneBlob(t *testing.T) {
	s, _ := newStore(t)
	content := bytes.Repeat([]byte("same layer "), 200_000)
	dg := digest.FromBytes(content)
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			repo := fmt.Sprintf("repo%d", i%4)
			if _, err := s.PutBlob(ctx, repo, dg, bytes.NewReader(content)); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for i := range 4 {
		if !bytes.Equal(readBlob(t, s, fmt.Sprintf("repo%d", i), dg), content) {
			t.Fatalf("repo%d reads different content", i)
		}
	}
}

func TestConcurrentChunksOfOneUpload(t *testing.T) {
	s, _ := newStore(t)
	id, _ := s.StartUpload(ctx, "a")
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _ = s.AppendUpload(ctx, "a", id, -1, bytes.NewReader(bytes.Repeat([]byte("z"), 100_000)))
		}()
	}
	wg.Wait()
	size, err := s.UploadSize(ctx, "a", id)
	if err != nil || size != 800_000 {
		t.Fatalf("size %d, %v: chunks interleaved or lost", size, err)
	}
	if _, err := s.CompleteUpload(ctx, "a", id, -1, nil, digest.FromBytes(bytes.Repeat([]byte("z"), 800_000))); err != nil {
		t.Fatalf("hash state out of step with the data: %v", err)
	}
}

// TestCrashBetweenSteps plants what a crash leaves at each step of a
// blob upload and checks the store stays readable and consistent.
func TestCrashBetweenSteps(t *testing.T) {
	s, root := newStore(t)
	content := []byte("crash test layer")
	dg := digest.FromBytes(content)
	hex := dg.Encoded()
	blobDir := filepath.Join(root, "docker/registry/v2/blobs/sha256", hex[:2], hex)

	// Crash after moving the data into place, before linking it: the
	// repository does not have the blob, and a retry completes.
	if err := os.MkdirAll(blobDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(blobDir, "data"), content, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := s.StatBlob(ctx, "a", dg); !errors.Is(err, ErrBlobUnknown) {
		t.Fatalf("unlinked blob visible: %v", err)
	}
	if _, err := s.PutBlob(ctx, "a", dg, bytes.NewReader(content)); err != nil {
		t.Fatalf("retry after crash: %v", err)
	}
	if !bytes.Equal(readBlob(t, s, "a", dg), content) {
		t.Fatal("content differs after retry")
	}

	// Crash in the middle of writing a link (a temp file beside it).
	linkDir := filepath.Join(root, "docker/registry/v2/repositories/a/_manifests/tags/v1/current")
	if err := os.MkdirAll(linkDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(linkDir, ".tmp-42"), []byte("sha256:"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetManifest(ctx, "a", "v1"); !errors.Is(err, ErrManifestUnknown) {
		t.Fatalf("half-written tag visible: %v", err)
	}
	// Tag listings read the tags directory alone (as Distribution's do),
	// so the tag is listed until it is written again or deleted.
	if tags, _, err := s.Tags(ctx, "a", Page{N: -1}); err != nil || !slices.Equal(tags, []string{"v1"}) {
		t.Fatalf("Tags = %v, %v", tags, err)
	}
	if err := s.Untag(ctx, "a", "v1"); err != nil {
		t.Fatalf("deleting the half-written tag: %v", err)
	}
	if tags, _, err := s.Tags(ctx, "a", Page{N: -1}); err != nil || len(tags) != 0 {
		t.Fatalf("Tags after Untag = %v, %v", tags, err)
	}
}

// TestUploadBusy: a call on an upload session that another call holds (its
// body still arriving) waits no longer than Options.UploadWait or its
// context, then fails with ErrUploadBusy; once the holder ends, waiters go
// on and see exactly what it stored.
func TestUploadBusy(t *testing.T) {
	root := t.TempDir()
	d, err := filesystem.New(root)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	// hold starts an append whose body delivers part, then nothing until
	// cut is called; done yields the append's error.
	hold := func(s *Store, id string, part string) (cut func(), done <-chan error) {
		pr, pw := io.Pipe()
		errc := make(chan error, 1)
		go func() {
			_, err := s.AppendUpload(ctx, "a", id, -1, pr)
			errc <- err
		}()
		if _, err := pw.Write([]byte(part)); err != nil { // returns once the holder reads
			t.Fatal(err)
		}
		return func() { pw.CloseWithError(io.ErrUnexpectedEOF) }, errc
	}

	bounded := NewWithOptions(d, Options{UploadWait: 20 * time.Millisecond})
	id, err := bounded.StartUpload(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	cut, done := hold(bounded, id, "abc")
	if _, err := bounded.UploadSize(ctx, "a", id); !errors.Is(err, ErrUploadBusy) {
		t.Fatalf("UploadSize of a held session = %v, want ErrUploadBusy", err)
	}
	gone, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := bounded.AppendUpload(gone, "a", id, 0, strings.NewReader("x")); !errors.Is(err, ErrUploadBusy) || !errors.Is(err, context.Canceled) {
		t.Fatalf("AppendUpload with a cancelled context = %v, want ErrUploadBusy and the cause", err)
	}
	cut()
	if err := <-done; !errors.Is(err, ErrUploadInvalid) {
		t.Fatalf("holder: %v, want ErrUploadInvalid", err)
	}

	// Without a bound, waiters wait for the holder, and then see exactly
	// what it stored.
	patient := New(d)
	cut, done = hold(patient, id, "def")
	sizes := make(chan int64, 1)
	go func() {
		size, err := patient.UploadSize(ctx, "a", id)
		if err != nil {
			t.Error(err)
		}
		sizes <- size
	}()
	cut()
	if err := <-done; !errors.Is(err, ErrUploadInvalid) {
		t.Fatalf("holder: %v, want ErrUploadInvalid", err)
	}
	if size := <-sizes; size != 6 {
		t.Fatalf("waiter saw size %d, want the 6 bytes that arrived", size)
	}
	if _, err := patient.CompleteUpload(ctx, "a", id, 6, strings.NewReader("ghi"), digest.FromString("abcdefghi")); err != nil {
		t.Fatalf("resume after the cuts: %v", err)
	}
	// A call that waited for a session its holder completed finds it gone.
	if _, err := patient.UploadSize(ctx, "a", id); !errors.Is(err, ErrUploadUnknown) {
		t.Fatalf("completed session: %v", err)
	}
}
