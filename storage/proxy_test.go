package storage

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
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
