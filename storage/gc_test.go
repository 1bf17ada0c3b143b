package storage

import (
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-registry/berth/internal/osfile"
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

// age makes everything in the store look written a month ago.
func age(t testing.TB, root string) {
	t.Helper()
	old := time.Now().Add(-30 * 24 * time.Hour)
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
	t.Parallel() // no test hook
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

// orphan stores an image in repository name, then deletes its manifest, so
// its config and layer are referenced by nothing, and returns its layer.
func orphan(t *testing.T, s *Store, name, seed string) (payload []byte, layer digest.Digest) {
	t.Helper()
	payload = image(t, s, name, seed, nil)
	res, err := s.PutManifest(ctx, name, seed, MediaTypeOCIManifest, payload)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteManifest(ctx, name, res.Digest); err != nil {
		t.Fatal(err)
	}
	doc, _, _ := parseManifest(payload, "")
	return payload, doc.Layers[0].Digest
}

// A client told by HEAD that blobs exist can push the manifest that uses
// them, although they were garbage when it asked and a collection ran in
// between; without the protocol the push fails.
func TestGCKeepsWhatAHeadPromised(t *testing.T) {
	t.Parallel() // no test hook
	for _, unsafe := range []bool{false, true} {
		s, root := newGCStore(t)
		payload, _ := orphan(t, s, "a", "x")
		age(t, root)
		doc, _, _ := parseManifest(payload, "")
		for _, dg := range doc.references() {
			if _, err := s.CheckBlob(ctx, "a", dg); err != nil {
				t.Fatal(err)
			}
		}
		collect(t, s, GCOptions{Unsafe: unsafe})
		_, err := s.PutManifest(ctx, "a", "again", MediaTypeOCIManifest, payload)
		if unsafe {
			var unknown *ManifestBlobUnknownError
			if !errors.As(err, &unknown) {
				t.Errorf("without the protocol the push got %v, want a blob unknown error: did the collection keep the blobs?", err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("push after HEAD and a collection: %v", err)
		}
		pullAll(t, s, "a", "again")
	}
}

// The two orders of the handshake (lease.go): a request that renews the
// lease after the collection marked keeps the blob; a request that comes
// after the doomed marker waits for the collection and then finds the
// blob gone, and says so.
func TestGCHandshake(t *testing.T) {
	t.Run("lease first", func(t *testing.T) {
		s, root := newGCStore(t)
		_, layer := orphan(t, s, "a", "x")
		age(t, root)
		setHook(t, func(stage string, dg digest.Digest) {
			if stage == "marked" {
				if _, err := s.CheckBlob(ctx, "a", layer); err != nil {
					t.Error(err)
				}
			}
		})
		rep, _ := collect(t, s, GCOptions{})
		if _, err := s.CheckBlob(ctx, "a", layer); err != nil {
			t.Errorf("a blob whose lease a request renewed during the collection is gone: %v", err)
		}
		if rep.Kept != 1 {
			t.Errorf("report %+v: want 1 kept", rep)
		}
	})
	t.Run("marker, then lease, then the collection reads it", func(t *testing.T) {
		s, root := newGCStore(t)
		_, layer := orphan(t, s, "a", "x")
		age(t, root)
		answered := make(chan error, 1)
		setHook(t, func(stage string, dg digest.Digest) {
			if stage != "doomed" || dg != layer {
				return
			}
			go func() {
				_, err := s.CheckBlob(ctx, "a", layer)
				answered <- err
			}()
			// Let the request renew the lease and find the marker.
			for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
				if fi, err := os.Stat(filepath.Join(root, filepath.FromSlash(leasePath(layer)))); err == nil && time.Since(fi.ModTime()) < time.Second {
					break
				}
			}
			select {
			case err := <-answered:
				t.Errorf("a request answered (%v) while the collection held the marker", err)
			case <-time.After(100 * time.Millisecond):
			}
		})
		rep, _ := collect(t, s, GCOptions{})
		if err := <-answered; err != nil {
			t.Errorf("the request that renewed the lease first: %v", err)
		}
		if rep.Kept != 1 || rep.BlobsDeleted != 2 || !blobExists(t, s, layer) {
			t.Errorf("report %+v: want the layer kept, the manifest and config deleted", rep)
		}
	})
	t.Run("the collection decides, then the request", func(t *testing.T) {
		s, root := newGCStore(t)
		_, layer := orphan(t, s, "a", "x")
		age(t, root)
		answered := make(chan error, 1)
		setHook(t, func(stage string, dg digest.Digest) {
			if stage != "deleting" || dg != layer {
				return
			}
			go func() {
				_, err := s.CheckBlob(ctx, "a", layer)
				answered <- err
			}()
			select {
			case err := <-answered:
				t.Errorf("a request answered (%v) while the collection held the marker", err)
			case <-time.After(300 * time.Millisecond):
			}
		})
		rep, _ := collect(t, s, GCOptions{})
		if err := <-answered; !errors.Is(err, ErrBlobUnknown) {
			t.Errorf("the request that waited for the collection got %v, want ErrBlobUnknown", err)
		}
		if rep.BlobsDeleted != 3 {
			t.Errorf("%d blobs deleted, want 3", rep.BlobsDeleted)
		}
	})
}

func setHook(t *testing.T, hook func(stage string, dg digest.Digest)) {
	old := testHook
	testHook = hook
	t.Cleanup(func() { testHook = old })
}

// A marker left by a collection that died binds requests only doomedTTL.
func TestStaleDoomedMarkerIsIgnoredAndRemoved(t *testing.T) {
	t.Parallel() // no test hook
	s, root := newGCStore(t)
	layer := putBlob(t, s, "a", v1.MediaTypeImageLayerGzip, []byte("layer")).Digest
	marker := filepath.Join(root, filepath.FromSlash(doomedPath(layer)))
	if err := os.MkdirAll(filepath.Dir(marker), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(marker, []byte("dead"), 0o644); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-2 * doomedTTL)
	if err := os.Chtimes(marker, old, old); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CheckBlob(ctx, "a", layer); err != nil {
		t.Fatal(err)
	}
	collect(t, s, GCOptions{})
	if _, err := os.Stat(marker); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the stale marker is still there: %v", err)
	}
}

// An index pushed with untagged children keeps them through
// DeleteUntagged, as a referrer of a tagged image keeps itself; an
// untagged image that nothing reaches goes, with its blobs.
func TestGCDeleteUntagged(t *testing.T) {
	t.Parallel() // no test hook
	s, root := newGCStore(t)
	var children []v1.Descriptor
	for _, arch := range []string{"amd64", "arm64"} {
		p := image(t, s, "app", arch, nil)
		res, err := s.PutManifest(ctx, "app", digest.FromBytes(p).String(), MediaTypeOCIManifest, p)
		if err != nil {
			t.Fatal(err)
		}
		children = append(children, v1.Descriptor{MediaType: MediaTypeOCIManifest, Digest: res.Digest, Size: int64(len(p)),
			Platform: &v1.Platform{OS: "linux", Architecture: arch}})
	}
	index := mustJSON(t, map[string]any{"schemaVersion": 2, "mediaType": MediaTypeOCIIndex, "manifests": children})
	if _, err := s.PutManifest(ctx, "app", "latest", MediaTypeOCIIndex, index); err != nil {
		t.Fatal(err)
	}
	sig := image(t, s, "app", "signature", func(m map[string]any) {
		m["subject"] = v1.Descriptor{MediaType: MediaTypeOCIIndex, Digest: digest.FromBytes(index), Size: int64(len(index))}
	})
	if _, err := s.PutManifest(ctx, "app", digest.FromBytes(sig).String(), MediaTypeOCIManifest, sig); err != nil {
		t.Fatal(err)
	}
	stray := image(t, s, "app", "stray", nil)
	if _, err := s.PutManifest(ctx, "app", digest.FromBytes(stray).String(), MediaTypeOCIManifest, stray); err != nil {
		t.Fatal(err)
	}
	strayDoc, _, _ := parseManifest(stray, "")

	// Young untagged manifests stay: children are pushed before their index.
	if rep, removed := collect(t, s, GCOptions{DeleteUntagged: true}); rep.ManifestsDeleted != 0 {
		t.Fatalf("removed young untagged manifests: %v", removed)
	}
	age(t, root)
	rep, removed := collect(t, s, GCOptions{DeleteUntagged: true})
	if rep.ManifestsDeleted != 1 || rep.BlobsDeleted != 3 {
		t.Errorf("report %+v, removed %v; want the stray manifest and its 3 blobs", rep, removed)
	}
	pullAll(t, s, "app", "latest")
	if _, err := s.GetManifest(ctx, "app", digest.FromBytes(sig).String()); err != nil {
		t.Errorf("the signature of a tagged index was removed: %v", err)
	}
	refs, err := s.Referrers(ctx, "app", digest.FromBytes(index), "")
	if err != nil || len(refs) != 1 {
		t.Errorf("referrers of the index: %v, %v", refs, err)
	}
	if _, err := s.GetManifest(ctx, "app", digest.FromBytes(stray).String()); !errors.Is(err, ErrManifestUnknown) {
		t.Errorf("the stray manifest: %v, want ErrManifestUnknown", err)
	}
	if blobExists(t, s, strayDoc.Config.Digest) {
		t.Error("the stray manifest's config is still stored")
	}

	// Untag the index: now the children and the signature go too.
	if err := s.Untag(ctx, "app", "latest"); err != nil {
		t.Fatal(err)
	}
	rep, removed = collect(t, s, GCOptions{DeleteUntagged: true})
	if rep.ManifestsDeleted != 4 {
		t.Errorf("after untagging the index: %+v, removed %v; want 4 manifests", rep, removed)
	}
	if refs, err := s.Referrers(ctx, "app", digest.FromBytes(index), ""); err != nil || len(refs) != 0 {
		t.Errorf("referrers of the removed index: %v, %v", refs, err)
	}
	// Without DeleteUntagged, untagged manifests are never removed.
	s2, root2 := newGCStore(t)
	p := image(t, s2, "b", "kept", nil)
	if _, err := s2.PutManifest(ctx, "b", digest.FromBytes(p).String(), MediaTypeOCIManifest, p); err != nil {
		t.Fatal(err)
	}
	age(t, root2)
	if rep, removed := collect(t, s2, GCOptions{}); rep.ManifestsDeleted+rep.BlobsDeleted != 0 {
		t.Errorf("without DeleteUntagged: removed %v", removed)
	}
}

// setTagTime back-dates a tag's push.
func setTagTime(t *testing.T, root, name, tag string, at time.Time) {
	t.Helper()
	p := filepath.Join(root, filepath.FromSlash(tagCurrentPath(name, tag)))
	if err := os.Chtimes(p, at, at); err != nil {
		t.Fatal(err)
	}
}

func TestRetention(t *testing.T) {
	t.Parallel() // no test hook
	s, root := newGCStore(t)
	now := time.Now()
	tags := []string{"v1", "v2", "b1", "b2", "b3", "b4"}
	for _, tag := range tags {
		p := image(t, s, "team/app", tag, nil)
		if _, err := s.PutManifest(ctx, "team/app", tag, MediaTypeOCIManifest, p); err != nil {
			t.Fatal(err)
		}
		if _, err := s.PutManifest(ctx, "other", tag, MediaTypeOCIManifest, image(t, s, "other", "other-"+tag, nil)); err != nil {
			t.Fatal(err)
		}
	}
	age(t, root)
	// v1 oldest … b4 newest; b3 and b4 pushed within 36 hours.
	pushed := []time.Duration{6 * 24 * time.Hour, 5 * 24 * time.Hour, 4 * 24 * time.Hour, 3 * 24 * time.Hour, 30 * time.Hour, time.Hour}
	for i, tag := range tags {
		setTagTime(t, root, "team/app", tag, now.Add(-pushed[i]))
		setTagTime(t, root, "other", tag, now.Add(-pushed[i]))
	}
	rules := []RetentionRule{
		{Repositories: "nomatch", KeepLast: 1},
		{Repositories: "team/*", KeepLast: 1, KeepTags: "^v", TagsOlderThan: 36 * time.Hour, UntaggedOlderThan: time.Hour},
	}
	for i := range rules {
		if err := rules[i].Compile(); err != nil {
			t.Fatal(err)
		}
	}
	dry, removed := collect(t, s, GCOptions{DryRun: true, Retention: rules})
	if dry.TagsDeleted != 2 {
		t.Errorf("dry run: %v", removed)
	}
	if got, _, _ := s.Tags(ctx, "team/app", Page{N: -1}); len(got) != len(tags) {
		t.Fatalf("the dry run removed tags: %v", got)
	}
	rep, removed := collect(t, s, GCOptions{Retention: rules})
	got, _, _ := s.Tags(ctx, "team/app", Page{N: -1})
	// v1, v2 match keeptags; b4 is the newest; b3 is younger than 36 h;
	// b1 and b2 go, and their untagged manifests with them.
	if want := []string{"b3", "b4", "v1", "v2"}; !slices.Equal(got, want) {
		t.Errorf("tags left %v, want %v (removed %v)", got, want, removed)
	}
	if rep.TagsDeleted != 2 || rep.ManifestsDeleted != 2 || rep.BlobsDeleted != 6 {
		t.Errorf("report %+v", rep)
	}
	if got, _, _ := s.Tags(ctx, "other", Page{N: -1}); len(got) != len(tags) {
		t.Errorf("a repository no rule matches lost tags: %v", got)
	}
	for _, tag := range []string{"b3", "b4", "v1", "v2"} {
		pullAll(t, s, "team/app", tag)
	}
}

// A tag pushed again while retention removes it stays, pointing at what
// was pushed last, whether the push lands before the retention pass looks
// at the tag a last time or after it decided.
func TestRetentionKeepsATagPushedMeanwhile(t *testing.T) {
	for _, stage := range []string{"tag doomed", "tag deleting"} {
		t.Run(stage, func(t *testing.T) {
			s, root := newGCStore(t)
			p := image(t, s, "app", "old", nil)
			if _, err := s.PutManifest(ctx, "app", "t", MediaTypeOCIManifest, p); err != nil {
				t.Fatal(err)
			}
			fresh := image(t, s, "app", "new", nil)
			age(t, root)
			pushed := make(chan error, 1)
			setHook(t, func(st string, dg digest.Digest) {
				if st != stage {
					return
				}
				go func() {
					_, err := s.PutManifest(ctx, "app", "t", MediaTypeOCIManifest, fresh)
					pushed <- err
				}()
				// The push writes the tag, then waits for the marker.
				time.Sleep(200 * time.Millisecond)
			})
			rep, _ := collect(t, s, GCOptions{Retention: []RetentionRule{{TagsOlderThan: time.Hour}}})
			if err := <-pushed; err != nil {
				t.Fatal(err)
			}
			if m := mustGet(t, s, "app", "t"); m.Digest != digest.FromBytes(fresh) {
				t.Errorf("tag t points at %s, not at the image pushed last", m.Digest)
			}
			pullAll(t, s, "app", "t")
			if stage == "tag doomed" && (rep.Kept == 0 || rep.TagsDeleted != 0) {
				t.Errorf("report %+v: want the tag kept", rep)
			}
		})
	}
}

// A retention pass that removes a tag right after a push rewrote it, and
// is done before the push looks for its marker, leaves no marker to see:
// the push reads its link back and writes it again.
func TestRetentionDoneBeforeThePushLooks(t *testing.T) {
	s, root := newGCStore(t)
	if _, err := s.PutManifest(ctx, "app", "t", MediaTypeOCIManifest, image(t, s, "app", "old", nil)); err != nil {
		t.Fatal(err)
	}
	fresh := image(t, s, "app", "new", nil)
	age(t, root)
	written := make(chan struct{})
	collected := make(chan struct{})
	pushed := make(chan error, 1)
	setHook(t, func(stage string, dg digest.Digest) {
		switch {
		case stage == "tag deleting":
			go func() {
				_, err := s.PutManifest(ctx, "app", "t", MediaTypeOCIManifest, fresh)
				pushed <- err
			}()
			<-written // the pass deletes the link the push just wrote
		case stage == "tag written" && dg == digest.FromBytes(fresh):
			select {
			case <-written:
			default:
				close(written)
				<-collected // the push looks once the pass is done
			}
		}
	})
	rep, _ := collect(t, s, GCOptions{Retention: []RetentionRule{{TagsOlderThan: time.Hour}}})
	close(collected)
	if err := <-pushed; err != nil {
		t.Fatal(err)
	}
	if rep.TagsDeleted != 1 {
		t.Fatalf("report %+v: want the tag deleted once", rep)
	}
	if m := mustGet(t, s, "app", "t"); m.Digest != digest.FromBytes(fresh) {
		t.Errorf("tag t points at %s, not at the image pushed last", m.Digest)
	}
	pullAll(t, s, "app", "t")
}

// A manifest pushed again while a collection deletes its content: the push
// promises the manifest before it looks for its content, so it waits for
// the collection and stores the content again.
func TestGCDeletesAManifestBeingPushedAgain(t *testing.T) {
	s, root := newGCStore(t)
	payload, _ := orphan(t, s, "a", "x")
	doc, _, _ := parseManifest(payload, "")
	m := digest.FromBytes(payload)
	age(t, root)
	pushed := make(chan error, 1)
	setHook(t, func(stage string, dg digest.Digest) {
		switch {
		case stage == "marked":
			// The references are relied on again (a client's HEADs before
			// the push), so only the manifest is collected.
			for _, ref := range doc.references() {
				if _, err := s.CheckBlob(ctx, "a", ref); err != nil {
					t.Error(err)
				}
			}
		case stage == "deleting" && dg == m:
			go func() {
				_, err := s.PutManifest(ctx, "a", "again", MediaTypeOCIManifest, payload)
				pushed <- err
			}()
			time.Sleep(200 * time.Millisecond) // the push waits for the marker
		}
	})
	rep, _ := collect(t, s, GCOptions{})
	if err := <-pushed; err != nil {
		t.Fatal(err)
	}
	if rep.BlobsDeleted != 1 {
		t.Fatalf("report %+v: want the manifest's content deleted", rep)
	}
	pullAll(t, s, "a", "again")
	pullAll(t, s, "a", m.String())
}

func TestPurgeUploads(t *testing.T) {
	t.Parallel() // no test hook
	s, root := newGCStore(t)
	oldID, err := s.StartUpload(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.AppendUpload(ctx, "a", oldID, 0, strings.NewReader("abandoned")); err != nil {
		t.Fatal(err)
	}
	// Started, as Distribution writes it, and last written a week ago.
	week := time.Now().Add(-8 * 24 * time.Hour)
	started := filepath.Join(root, filepath.FromSlash(uploadStartedPath("a", oldID)))
	if err := os.WriteFile(started, []byte(week.UTC().Format(time.RFC3339)), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{started, filepath.Join(root, filepath.FromSlash(uploadDataPath("a", oldID))),
		filepath.Join(root, filepath.FromSlash(uploadHashStatePath("a", oldID, int64(len("abandoned")))))} {
		if err := os.Chtimes(p, week, week); err != nil {
			t.Fatal(err)
		}
	}
	newID, err := s.StartUpload(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	var seen []string
	opts := PurgeOptions{Age: time.Hour, DryRun: true, OnRemove: func(repo, id string) { seen = append(seen, repo+"/"+id) }}
	rep, err := s.PurgeUploads(ctx, opts)
	if err != nil || rep.Removed != 1 || rep.Sessions != 2 || !slices.Equal(seen, []string{"a/" + oldID}) {
		t.Fatalf("dry run: %+v %v %v", rep, seen, err)
	}
	if _, err := s.UploadSize(ctx, "a", oldID); err != nil {
		t.Fatalf("the dry run removed the session: %v", err)
	}
	opts.DryRun = false
	if rep, err := s.PurgeUploads(ctx, opts); err != nil || rep.Removed != 1 {
		t.Fatalf("purge: %+v %v", rep, err)
	}
	if _, err := s.UploadSize(ctx, "a", oldID); !errors.Is(err, ErrUploadUnknown) {
		t.Errorf("abandoned session: %v, want ErrUploadUnknown", err)
	}
	if _, err := s.UploadSize(ctx, "a", newID); err != nil {
		t.Errorf("new session: %v", err)
	}
}

func TestDeleteRepository(t *testing.T) {
	t.Parallel() // no test hook
	s, root := newGCStore(t)
	shared := putBlob(t, s, "a", v1.MediaTypeImageLayerGzip, []byte("shared"))
	for _, name := range []string{"a", "a/b"} {
		p := image(t, s, name, name, func(m map[string]any) {
			if _, err := s.MountBlob(ctx, name, "a", shared.Digest); err != nil {
				t.Fatal(err)
			}
			m["layers"] = append(m["layers"].([]v1.Descriptor), shared)
		})
		if _, err := s.PutManifest(ctx, name, "v1", MediaTypeOCIManifest, p); err != nil {
			t.Fatal(err)
		}
	}
	aDoc, _, _ := parseManifest(mustGet(t, s, "a", "v1").Payload, "")
	if err := s.DeleteRepository(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteRepository(ctx, "a"); !errors.Is(err, ErrNameUnknown) {
		t.Errorf("deleting it again: %v, want ErrNameUnknown", err)
	}
	if repos, _, _ := s.Catalog(ctx, Page{N: -1}); !slices.Equal(repos, []string{"a/b"}) {
		t.Errorf("catalog %v, want [a/b]", repos)
	}
	age(t, root)
	rep, removed := collect(t, s, GCOptions{})
	if rep.BlobsDeleted != 3 || blobExists(t, s, aDoc.Config.Digest) || !blobExists(t, s, shared.Digest) {
		t.Errorf("after deleting a: %+v %v", rep, removed)
	}
	pullAll(t, s, "a/b", "v1")
}

func mustGet(t *testing.T, s *Store, name, ref string) *Manifest {
	t.Helper()
	m, err := s.GetManifest(ctx, name, ref)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestGCLock(t *testing.T) {
	t.Parallel() // no test hook
	s, root := newGCStore(t)
	// Two at once: one runs, the other is told.
	errs := make(chan error, 2)
	for range 2 {
		go func() {
			_, err := s.CollectGarbage(ctx, GCOptions{})
			errs <- err
		}()
	}
	e1, e2 := <-errs, <-errs
	if (e1 == nil) == (e2 == nil) || !(errors.Is(e1, ErrGCRunning) || errors.Is(e2, ErrGCRunning)) {
		t.Errorf("two collections at once: %v and %v; want one to run and one ErrGCRunning", e1, e2)
	}
	// A lock held by a live process elsewhere stops a collection; one of a
	// dead process of this machine does not.
	host, _ := os.Hostname()
	lockFile := filepath.Join(root, filepath.FromSlash(gcLockPath()))
	write := func(l gcLock) {
		b, _ := json.Marshal(l)
		if err := os.WriteFile(lockFile, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(gcLock{ID: "x", Host: host, PID: os.Getpid(), Expires: time.Now().Add(time.Minute)})
	if _, err := s.CollectGarbage(ctx, GCOptions{}); !errors.Is(err, ErrGCRunning) {
		t.Errorf("with a live holder: %v, want ErrGCRunning", err)
	}
	dead := deadPID(t)
	if ns := osfile.PIDNamespace(); ns != "" {
		// A process of another PID namespace (another container with the
		// same host name) cannot be told dead.
		write(gcLock{ID: "x", Host: host, PID: dead, PIDNS: ns + "-other", Expires: time.Now().Add(time.Minute)})
		if _, err := s.CollectGarbage(ctx, GCOptions{}); !errors.Is(err, ErrGCRunning) {
			t.Errorf("with a holder in another PID namespace: %v, want ErrGCRunning", err)
		}
	}
	write(gcLock{ID: "x", Host: host, PID: dead, PIDNS: osfile.PIDNamespace(), Expires: time.Now().Add(time.Minute)})
	if _, err := s.CollectGarbage(ctx, GCOptions{}); err != nil {
		t.Errorf("with a dead holder: %v", err)
	}
	write(gcLock{ID: "x", Host: "elsewhere", PID: 1, Expires: time.Now().Add(-time.Second)})
	if _, err := s.CollectGarbage(ctx, GCOptions{}); err != nil {
		t.Errorf("with an expired lock: %v", err)
	}
	if _, err := os.Stat(lockFile); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the lock is left after the collection: %v", err)
	}
}

// deadPID returns the id of a process that has exited.
func deadPID(t *testing.T) int {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	return cmd.Process.Pid
}

// A client told by HEAD that an index's child exists can push the index,
// although the child was an old untagged manifest when it asked and a
// collection with DeleteUntagged ran in between.
func TestGCKeepsWhatAManifestHeadPromised(t *testing.T) {
	t.Parallel() // no test hook
	for _, unsafe := range []bool{false, true} {
		s, root := newGCStore(t)
		child := image(t, s, "app", "child", nil)
		res, err := s.PutManifest(ctx, "app", digest.FromBytes(child).String(), MediaTypeOCIManifest, child)
		if err != nil {
			t.Fatal(err)
		}
		age(t, root)
		if _, err := s.CheckManifest(ctx, "app", res.Digest.String()); err != nil {
			t.Fatal(err)
		}
		collect(t, s, GCOptions{DeleteUntagged: true, Unsafe: unsafe})
		index := mustJSON(t, map[string]any{"schemaVersion": 2, "mediaType": MediaTypeOCIIndex,
			"manifests": []v1.Descriptor{{MediaType: MediaTypeOCIManifest, Digest: res.Digest, Size: int64(len(child))}}})
		_, err = s.PutManifest(ctx, "app", "latest", MediaTypeOCIIndex, index)
		if unsafe {
			var unknown *ManifestBlobUnknownError
			if !errors.As(err, &unknown) {
				t.Errorf("without the protocol the index push got %v, want a blob unknown error", err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("index push after HEAD of its child and a collection: %v", err)
		}
		pullAll(t, s, "app", "latest")
	}
}

// A lease without content (an upload that did not match its digest) goes
// once it is older than the grace period; a mount of unknown content
// leases nothing.
func TestGCRemovesStrayLeases(t *testing.T) {
	t.Parallel() // no test hook
	s, root := newGCStore(t)
	claimed := digest.FromString("what the client claimed")
	if _, err := s.PutBlob(ctx, "a", claimed, strings.NewReader("something else")); err == nil {
		t.Fatal("a blob that does not match its digest was stored")
	}
	unknown := digest.FromString("never stored")
	if _, err := s.MountBlob(ctx, "a", "", unknown); !errors.Is(err, ErrBlobUnknown) {
		t.Fatalf("mount of unknown content: %v", err)
	}
	lease := func(dg digest.Digest) string { return filepath.Join(root, filepath.FromSlash(leasePath(dg))) }
	if _, err := os.Stat(lease(unknown)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a mount of unknown content left a lease: %v", err)
	}
	if _, err := os.Stat(lease(claimed)); err != nil {
		t.Fatalf("the failed upload's lease: %v", err)
	}
	collect(t, s, GCOptions{})
	if _, err := os.Stat(lease(claimed)); err != nil {
		t.Errorf("a young stray lease was removed: %v", err)
	}
	age(t, root)
	collect(t, s, GCOptions{})
	if _, err := os.Stat(lease(claimed)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("an old stray lease is still there: %v", err)
	}
}

// leases returns the digests that have a lease.
func leases(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	dir := filepath.Join(root, filepath.FromSlash(berthPath("leases")))
	err := filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err == nil && !e.IsDir() {
			out = append(out, e.Name())
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(out)
	return out
}

// A manifest pushed right after its blobs writes no lease (their data is
// young, and a collection keeps it); one that references blobs stored
// long ago renews their leases and only theirs.
func TestManifestPutLeasesOnlyOldContent(t *testing.T) {
	s, root := newGCStore(t)
	fresh := image(t, s, "a", "fresh", nil)
	before := leases(t, root) // the uploads leased their blobs
	if _, err := s.PutManifest(ctx, "a", "fresh", MediaTypeOCIManifest, fresh); err != nil {
		t.Fatal(err)
	}
	if got := leases(t, root); !slices.Equal(got, before) {
		t.Errorf("a manifest of young blobs wrote leases: %v, before %v", got, before)
	}

	old := image(t, s, "a", "old", nil)
	age(t, root)
	if err := os.RemoveAll(filepath.Join(root, filepath.FromSlash(berthPath("leases")))); err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutManifest(ctx, "a", "old", MediaTypeOCIManifest, old); err != nil {
		t.Fatal(err)
	}
	doc, _, _ := parseManifest(old, "")
	var want []string
	for _, dg := range doc.references() {
		want = append(want, dg.Encoded())
	}
	slices.Sort(want)
	if got := leases(t, root); !slices.Equal(got, want) {
		t.Errorf("leases after a manifest of old blobs: %v, want its references' %v", got, want)
	}
	rep, _ := collect(t, s, GCOptions{})
	if rep.BlobsDeleted != 0 {
		t.Errorf("report %+v: want nothing deleted", rep)
	}
	pullAll(t, s, "a", "fresh")
	pullAll(t, s, "a", "old")
}
