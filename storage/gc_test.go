package storage

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-registry/berth/storage/driver/filesystem"
)

// testGrace is the grace period of the collection tests: short, so they
// can let it pass.
const testGrace = 5 * time.Second

// newGCStore returns a store with the test grace period and its root.
func newGCStore(t testing.TB) (*Store, string) {
	t.Helper()
	root := t.TempDir()
	d, err := filesystem.New(root)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return NewWithOptions(d, Options{GracePeriod: testGrace}), root
}

// age makes everything in the store look written before the grace period.
func age(t testing.TB, root string) {
	t.Helper()
	old := time.Now().Add(-10 * testGrace)
	err := filepath.Walk(root, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Chtimes(p, old, old)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func collect(t testing.TB, s *Store, opts GCOptions) (GCReport, []Removal) {
	t.Helper()
	var mu sync.Mutex
	var removed []Removal
	opts.OnRemove = func(r Removal) {
		mu.Lock()
		removed = append(removed, r)
		mu.Unlock()
	}
	rep, err := s.CollectGarbage(ctx, opts)
	if err != nil {
		t.Fatalf("CollectGarbage: %v", err)
	}
	return rep, removed
}

func blobExists(t testing.TB, s *Store, dg digest.Digest) bool {
	t.Helper()
	ok, err := s.exists(ctx, blobDataPath(dg))
	if err != nil {
		t.Fatal(err)
	}
	return ok
}

// pullAll reads a manifest and every blob and child it references, as a
// client pulling it would.
func pullAll(t testing.TB, s *Store, name, ref string) {
	t.Helper()
	m, err := s.GetManifest(ctx, name, ref)
	if err != nil {
		t.Fatalf("pull %s:%s: %v", name, ref, err)
	}
	doc, _, err := parseManifest(m.Payload, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range doc.references() {
		if slices.ContainsFunc(doc.Manifests, func(d v1.Descriptor) bool { return d.Digest == b }) {
			pullAll(t, s, name, b.String())
			continue
		}
		r, _, err := s.OpenBlob(ctx, name, b, 0)
		if err != nil {
			t.Fatalf("pull %s:%s: blob %s: %v", name, ref, b, err)
		}
		r.Close()
	}
}

func TestGCRemovesWhatNothingReferences(t *testing.T) {
	s, root := newGCStore(t)
	shared := putBlob(t, s, "a", v1.MediaTypeImageLayerGzip, []byte("shared layer"))
	keep := image(t, s, "a", "keep", func(m map[string]any) {
		m["layers"] = append(m["layers"].([]v1.Descriptor), shared)
	})
	drop := image(t, s, "b", "drop", func(m map[string]any) {
		if _, err := s.MountBlob(ctx, "b", "a", shared.Digest); err != nil {
			t.Fatal(err)
		}
		m["layers"] = append(m["layers"].([]v1.Descriptor), shared)
	})
	for _, p := range []struct {
		name    string
		payload []byte
	}{{"a", keep}, {"b", drop}} {
		if _, err := s.PutManifest(ctx, p.name, "v1", MediaTypeOCIManifest, p.payload); err != nil {
			t.Fatal(err)
		}
	}
	dropDoc, _, _ := parseManifest(drop, "")
	if err := s.DeleteManifest(ctx, "b", digest.FromBytes(drop)); err != nil {
		t.Fatal(err)
	}

	// Within the grace period nothing goes.
	if rep, removed := collect(t, s, GCOptions{}); len(removed) != 0 || rep.BlobsDeleted != 0 {
		t.Fatalf("a collection within the grace period removed %v", removed)
	}
	age(t, root)
	dry, removed := collect(t, s, GCOptions{DryRun: true})
	if dry.BlobsDeleted != 3 { // drop's manifest, config and own layer
		t.Errorf("dry run: %d blobs would go, want 3: %v", dry.BlobsDeleted, removed)
	}
	if !blobExists(t, s, dropDoc.Config.Digest) {
		t.Fatal("the dry run removed a blob")
	}
	rep, removed := collect(t, s, GCOptions{})
	if rep.BlobsDeleted != 3 || rep.LinksDeleted != 2 || rep.BytesFreed == 0 || rep.Failed != 0 {
		t.Errorf("report %+v, removed %v", rep, removed)
	}
	for _, dg := range []digest.Digest{digest.FromBytes(drop), dropDoc.Config.Digest, dropDoc.Layers[0].Digest} {
		if blobExists(t, s, dg) {
			t.Errorf("unreferenced %s is still stored", dg)
		}
	}
	if !blobExists(t, s, shared.Digest) {
		t.Error("the shared layer was removed")
	}
	pullAll(t, s, "a", "v1")
	if _, err := s.StatBlob(ctx, "b", shared.Digest); err != nil {
		t.Errorf("b's link to the shared layer, still stored, was removed: %v", err)
	}
	// Nothing left to do.
	if rep, removed := collect(t, s, GCOptions{}); rep.BlobsDeleted+rep.LinksDeleted != 0 {
		t.Errorf("a second collection removed %v", removed)
	}
	if _, err := os.Stat(filepath.Join(root, "docker/registry/v2/_berth/doomed/blobs/sha256", dropDoc.Config.Digest.Encoded())); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a doomed marker is left: %v", err)
	}
}
