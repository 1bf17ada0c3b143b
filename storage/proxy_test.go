package storage

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
)

// A mirrored manifest is stored without its blobs (a normal push of it is
// refused), is served by tag and digest, and a wrong digest stores nothing.
func TestPutMirroredManifest(t *testing.T) {
	s, _ := newStore(t)
	src, _ := newStore(t)
	payload := image(t, src, "elsewhere", "1", nil) // blobs stored in another store only
	if _, err := s.PutManifest(ctx, "hub/a", "v1", MediaTypeOCIManifest, payload); !errors.As(err, new(*ManifestBlobUnknownError)) {
		t.Fatalf("PutManifest without blobs: %v, want ManifestBlobUnknownError", err)
	}
	if _, err := s.PutMirroredManifest(ctx, "hub/a", digest.FromString("other").String(), MediaTypeOCIManifest, payload); !errors.As(err, new(*DigestMismatchError)) {
		t.Fatalf("PutMirroredManifest under a wrong digest: %v, want DigestMismatchError", err)
	}
	res, err := s.PutMirroredManifest(ctx, "hub/a", "v1", MediaTypeOCIManifest, payload)
	if err != nil {
		t.Fatal(err)
	}
	for _, ref := range []string{"v1", res.Digest.String()} {
		m, err := s.GetManifest(ctx, "hub/a", ref)
		if err != nil || !bytes.Equal(m.Payload, payload) {
			t.Fatalf("GetManifest(%s) = %v, %v", ref, m, err)
		}
	}
}

func TestTagFetched(t *testing.T) {
	s, _ := newStore(t)
	if at, err := s.TagFetched(ctx, "hub/a", "v1"); err != nil || !at.IsZero() {
		t.Fatalf("TagFetched before any record = %v, %v; want zero, nil", at, err)
	}
	now := time.Now()
	if err := s.SetTagFetched(ctx, "hub/a", "v1", now); err != nil {
		t.Fatal(err)
	}
	if at, err := s.TagFetched(ctx, "hub/a", "v1"); err != nil || !at.Equal(now) {
		t.Fatalf("TagFetched = %v, %v; want %v", at, err, now)
	}
	if at, _ := s.TagFetched(ctx, "hub/a", "v2"); !at.IsZero() {
		t.Fatalf("another tag has a record: %v", at)
	}
	// The record is not a repository, nor a tag.
	repos, _, err := s.Catalog(ctx, Page{N: 100})
	if err != nil || len(repos) != 0 {
		t.Fatalf("catalog = %v, %v; want none", repos, err)
	}
	if err := s.SetTagFetched(ctx, "hub/a", "bad tag", now); !errors.Is(err, ErrTagInvalid) {
		t.Fatalf("SetTagFetched with a bad tag: %v", err)
	}
}

// foreignImage stores a manifest of repository name (a mirror's: without
// its blobs) with a foreign layer, under tag, and returns that layer's
// digest and the manifest's.
func foreignImage(t *testing.T, s *Store, name, tag string) (foreign, manifest digest.Digest) {
	t.Helper()
	src, _ := newStore(t)
	foreign = digest.FromString("a Windows base layer " + name)
	payload := image(t, src, name, tag, func(m map[string]any) {
		m["layers"] = append(m["layers"].([]v1.Descriptor), v1.Descriptor{MediaType: "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
			Digest: foreign, Size: 100, URLs: []string{"https://example.com/layer"}})
	})
	res, err := s.PutMirroredManifest(ctx, name, tag, MediaTypeOCIManifest, payload)
	if err != nil {
		t.Fatal(err)
	}
	return foreign, res.Digest
}

// A mirror's records go with what they describe: the fetch record with
// its tag (untagged, or the repository deleted), the foreign-layer record
// with the repository; records of a nested repository stay; and a
// collection removes those whose tag or manifest is gone.
func TestProxyRecordsGoWithTheirContent(t *testing.T) {
	s, root := newGCStore(t)
	now := time.Now()
	fetched := func(name, tag string) bool {
		t.Helper()
		at, err := s.TagFetched(ctx, name, tag)
		if err != nil {
			t.Fatal(err)
		}
		return !at.IsZero()
	}
	isForeign := func(name string, dg digest.Digest) bool {
		t.Helper()
		ok, err := s.IsForeign(ctx, name, dg)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}

	// Untag: the record goes.
	foreignA, _ := foreignImage(t, s, "hub/a", "v1")
	if err := s.SetTagFetched(ctx, "hub/a", "v1", now); err != nil {
		t.Fatal(err)
	}
	if !isForeign("hub/a", foreignA) || isForeign("hub/a", digest.FromString("other")) || isForeign("hub/b", foreignA) {
		t.Fatal("IsForeign: want the foreign layer of hub/a's manifest only, in hub/a only")
	}
	if err := s.Untag(ctx, "hub/a", "v1"); err != nil {
		t.Fatal(err)
	}
	if fetched("hub/a", "v1") {
		t.Error("the fetch record of an untagged tag is still there")
	}

	// Repository delete: its records go, a nested repository's stay.
	foreignW, _ := foreignImage(t, s, "hub/w", "ltsc")
	foreignSub, _ := foreignImage(t, s, "hub/w/sub", "ltsc")
	for _, name := range []string{"hub/w", "hub/w/sub"} {
		if err := s.SetTagFetched(ctx, name, "ltsc", now); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.DeleteRepository(ctx, "hub/w"); err != nil {
		t.Fatal(err)
	}
	if fetched("hub/w", "ltsc") || isForeign("hub/w", foreignW) {
		t.Error("a deleted repository's records are still there")
	}
	if !fetched("hub/w/sub", "ltsc") || !isForeign("hub/w/sub", foreignSub) {
		t.Error("deleting hub/w removed the records of hub/w/sub")
	}

	// Strays (a record whose tag is gone, a foreign record whose manifest
	// is gone) go in a collection, once past the grace period; the records
	// of what stays, stay.
	if err := s.SetTagFetched(ctx, "hub/w/sub", "gone", now); err != nil {
		t.Fatal(err)
	}
	if err := s.SetTagFetched(ctx, "hub/ghost", "v1", now); err != nil { // no such repository
		t.Fatal(err)
	}
	foreignX, manifestX := foreignImage(t, s, "hub/x", "v1")
	if err := s.Untag(ctx, "hub/x", "v1"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteManifest(ctx, "hub/x", manifestX); err != nil {
		t.Fatal(err)
	}
	collect(t, s, GCOptions{})
	if !fetched("hub/w/sub", "gone") || !isForeign("hub/x", foreignX) || !fetched("hub/ghost", "v1") {
		t.Fatal("a collection removed records younger than the grace period")
	}
	age(t, root)
	collect(t, s, GCOptions{})
	if fetched("hub/w/sub", "gone") || isForeign("hub/x", foreignX) || fetched("hub/ghost", "v1") {
		t.Error("a collection left stray records")
	}
	if !fetched("hub/w/sub", "ltsc") || !isForeign("hub/w/sub", foreignSub) {
		t.Error("a collection removed the records of a kept tag and manifest")
	}
}
