package main

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/storage"
	"github.com/berth-registry/berth/storage/driver/filesystem"
)

// TestPullThroughGC: garbage collection over a mirror's cache, one image
// pulled whole and one of which only the manifest was pulled (its blobs
// never fetched), fails on nothing and removes nothing: both manifests are
// still served from the cache and the pulled blobs are not fetched again.
// Once the whole image is deleted from the mirror's store, a collection
// removes its blobs, and nothing of the other.
func TestPullThroughGC(t *testing.T) {
	up := startServer(t, t.TempDir())
	whole, partial := randomImage(t, 2), randomImage(t, 2)
	if err := remote.Write(up.repo(t, "app/whole").Tag("v1"), whole, up.opts(t)...); err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(up.repo(t, "app/partial").Tag("v1"), partial, up.opts(t)...); err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	counter := newUpstreamCounter(up.tr)
	mirror := startServerWith(t, root, func(c *Config) {
		c.Proxy.Upstreams = []UpstreamConfig{{Prefix: "up", RemoteURL: "https://" + up.addr}}
		c.Proxy.TTL = time.Hour
		c.proxyTransport = counter
	}, nil)

	pullWhole := func() {
		t.Helper()
		got, err := remote.Image(mirror.repo(t, "up/app/whole").Tag("v1"), mirror.opts(t)...)
		if err != nil {
			t.Fatal(err)
		}
		checkSameImage(t, whole, got)
	}
	// getManifest asks the mirror for a manifest and checks it is img's.
	getManifest := func(repo, ref string, img v1.Image) {
		t.Helper()
		want, err := img.RawManifest()
		if err != nil {
			t.Fatal(err)
		}
		mt, err := img.MediaType()
		if err != nil {
			t.Fatal(err)
		}
		resp, body := mirror.do(t, "GET", mirror.url("/v2/"+repo+"/manifests/"+ref), http.Header{"Accept": {string(mt)}}, nil)
		if resp.StatusCode != 200 || string(body) != string(want) {
			t.Errorf("GET %s:%s from the mirror: %d %s, want 200 and the upstream's manifest", repo, ref, resp.StatusCode, body)
		}
	}
	pullWhole()
	getManifest("up/app/partial", "v1", partial)
	if n := counter.count("GET blob"); n != 3 {
		t.Fatalf("blob GETs upstream = %d, want 3 (the whole image's config and layers)", n)
	}

	// A month passes: everything is past the grace period.
	backdate := func() {
		t.Helper()
		old := time.Now().Add(-30 * 24 * time.Hour)
		err := filepath.Walk(root, func(p string, _ os.FileInfo, err error) error {
			if err != nil {
				return err
			}
			return os.Chtimes(p, old, old)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	d, err := filesystem.New(root)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	store := storage.NewWithOptions(d, storage.Options{GracePeriod: time.Second})
	var mu sync.Mutex
	var removed []storage.Removal
	collect := func() storage.GCReport {
		t.Helper()
		mu.Lock()
		removed = nil
		mu.Unlock()
		rep, err := store.CollectGarbage(context.Background(), storage.GCOptions{DeleteUntagged: true,
			OnRemove: func(r storage.Removal) { mu.Lock(); removed = append(removed, r); mu.Unlock() }})
		if err != nil {
			t.Fatalf("collection over the mirror's cache: %v", err)
		}
		if rep.Failed != 0 {
			t.Errorf("collection: %d removals failed", rep.Failed)
		}
		return rep
	}

	backdate()
	if rep := collect(); len(removed) != 0 {
		t.Errorf("a collection with every cached image tagged removed %v (%+v)", removed, rep)
	}
	manifestGETs := counter.count("GET manifest")
	getManifest("up/app/partial", "v1", partial)
	getManifest("up/app/partial", imageDigest(t, partial).String(), partial)
	getManifest("up/app/whole", "v1", whole)
	pullWhole()
	if n := counter.count("GET blob"); n != 3 {
		t.Errorf("after the collection the whole image's blobs were fetched again: %d blob GETs upstream, want 3", n)
	}
	if n := counter.count("GET manifest"); n != manifestGETs {
		t.Errorf("after the collection the mirror asked the upstream for manifests %d times", n-manifestGETs)
	}

	// The whole image is deleted from the mirror (the registry refuses
	// deletes in mirrored repositories; an operator uses the store).
	wholeDigest := digest.Digest(imageDigest(t, whole).String())
	if err := store.DeleteManifest(context.Background(), "up/app/whole", wholeDigest); err != nil {
		t.Fatal(err)
	}
	backdate()
	collect()
	want := []string{wholeDigest.String()}
	wm, err := whole.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	want = append(want, wm.Config.Digest.String())
	for _, l := range wm.Layers {
		want = append(want, l.Digest.String())
	}
	var gotBlobs, gotLinks []string
	for _, r := range removed {
		switch r.Kind {
		case "blob":
			gotBlobs = append(gotBlobs, r.Digest.String())
		case "link":
			if r.Repository != "up/app/whole" {
				t.Errorf("removed a link of %s: %v", r.Repository, r)
			}
			gotLinks = append(gotLinks, r.Digest.String())
		default:
			t.Errorf("removed %v, want only the deleted image's blobs and links", r)
		}
	}
	slices.Sort(want)
	slices.Sort(gotBlobs)
	if !slices.Equal(gotBlobs, want) {
		t.Errorf("blobs removed after the delete: %v, want the deleted image's manifest, config and layers %v", gotBlobs, want)
	}
	if len(gotLinks) != 3 {
		t.Errorf("links removed: %v, want the deleted image's config and 2 layers", gotLinks)
	}
	// And they are gone from the disk, not only reported.
	gone := map[string]bool{}
	for _, dg := range want {
		gone[digest.Digest(dg).Encoded()] = true
	}
	err = filepath.Walk(root, func(p string, _ os.FileInfo, err error) error {
		if err == nil && gone[filepath.Base(p)] && strings.Contains(filepath.ToSlash(p), "/blobs/") {
			t.Errorf("%s is still on disk", p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	getManifest("up/app/partial", "v1", partial)
	if n := counter.count("GET manifest"); n != manifestGETs {
		t.Errorf("the manifest-only image was fetched again after the second collection")
	}

	// Pulled again, the deleted image comes from the upstream once more.
	pullWhole()
	if n := counter.count("GET blob"); n != 6 {
		t.Errorf("blob GETs upstream = %d, want 6 (the deleted image fetched again)", n)
	}
}
