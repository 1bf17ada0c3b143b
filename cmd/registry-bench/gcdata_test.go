package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-registry/berth/storage"
	"github.com/berth-registry/berth/storage/driver/filesystem"
)

func tinyGCData(t *testing.T, seed uint64) (string, gcDataSummary) {
	t.Helper()
	dir := t.TempDir()
	sum, err := writeGCData(context.Background(), gcDataOptions{Dir: dir, Repos: 5, Blobs: 50,
		Unreferenced: 0.2, Untagged: 0.1, Seed: seed, Age: 30 * 24 * time.Hour, Workers: 4})
	if err != nil {
		t.Fatal(err)
	}
	return dir, sum
}

// gcTree is what a test reads back from a generated directory.
type gcTree struct {
	blobs map[digest.Digest][]byte
	// per repository: revisions with a link, tags' current targets, layer links
	revisions map[string][]digest.Digest
	tags      map[string][]digest.Digest
	layers    map[string]map[digest.Digest]bool
}

func readGCTree(t *testing.T, dir string) gcTree {
	t.Helper()
	v2 := filepath.Join(dir, "docker", "registry", "v2")
	tr := gcTree{blobs: map[digest.Digest][]byte{}, revisions: map[string][]digest.Digest{},
		tags: map[string][]digest.Digest{}, layers: map[string]map[digest.Digest]bool{}}
	old := time.Now().Add(-29 * 24 * time.Hour)
	err := filepath.WalkDir(v2, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if fi.ModTime().After(old) {
			t.Errorf("%s: mtime %v is not in the past", p, fi.ModTime())
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel := filepath.ToSlash(strings.TrimPrefix(p, v2+string(filepath.Separator)))
		parts := strings.Split(rel, "/")
		if parts[0] == "blobs" {
			sum := sha256.Sum256(b)
			h := hex.EncodeToString(sum[:])
			if len(parts) != 5 || parts[1] != "sha256" || parts[2] != h[:2] || parts[3] != h || parts[4] != "data" {
				t.Errorf("blob at %s has digest sha256:%s", rel, h)
			}
			tr.blobs[digest.NewDigestFromEncoded(digest.SHA256, h)] = b
			return nil
		}
		dg, err := digest.Parse(string(b))
		if err != nil || parts[len(parts)-1] != "link" {
			t.Errorf("%s: not a link (%q)", rel, b)
			return nil
		}
		i := slices.IndexFunc(parts, func(s string) bool { return strings.HasPrefix(s, "_") })
		repo, kind := strings.Join(parts[1:i], "/"), strings.Join(parts[i:min(i+2, len(parts))], "/")
		switch {
		case kind == "_layers/sha256":
			if tr.layers[repo] == nil {
				tr.layers[repo] = map[digest.Digest]bool{}
			}
			tr.layers[repo][dg] = true
		case kind == "_manifests/revisions":
			tr.revisions[repo] = append(tr.revisions[repo], dg)
		case kind == "_manifests/tags" && parts[len(parts)-2] == "current":
			tr.tags[repo] = append(tr.tags[repo], dg)
		case kind == "_manifests/tags" && parts[len(parts)-4] == "index":
		default:
			t.Errorf("unexpected file %s", rel)
		}
		if dir := parts[len(parts)-2]; dir != "current" && dir != dg.Encoded() {
			t.Errorf("%s links %s", rel, dg)
		}
		if _, err := os.Stat(filepath.Join(v2, "blobs", "sha256", dg.Encoded()[:2], dg.Encoded(), "data")); err != nil {
			t.Errorf("%s: its target %v", rel, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

func TestGCDataShape(t *testing.T) {
	dir, sum := tinyGCData(t, 7)
	tr := readGCTree(t, dir)
	if len(tr.blobs) != 50 || sum.Blobs != 50 || len(tr.revisions) != 5 || sum.Repos != 5 {
		t.Fatalf("%d blobs and %d repositories with manifests, want 50 and 5 (summary %+v)", len(tr.blobs), len(tr.revisions), sum)
	}
	if sum.Deleted == 0 || sum.OrphanLayers == 0 || sum.Untagged == 0 {
		t.Fatalf("no deleted images, orphans or untagged images: %+v", sum)
	}
	// Every manifest is an OCI image manifest whose descriptors match the
	// blobs exactly and are linked into its repository.
	for repo, revs := range tr.revisions {
		for _, m := range revs {
			var man v1.Manifest
			if err := json.Unmarshal(tr.blobs[m], &man); err != nil {
				t.Fatalf("%s@%s: %v", repo, m, err)
			}
			if man.SchemaVersion != 2 || man.MediaType != v1.MediaTypeImageManifest || man.Config.MediaType != v1.MediaTypeImageConfig || len(man.Layers) == 0 {
				t.Fatalf("%s@%s: %s", repo, m, tr.blobs[m])
			}
			var cfg v1.Image
			if err := json.Unmarshal(tr.blobs[man.Config.Digest], &cfg); err != nil || cfg.OS != "linux" {
				t.Errorf("config %s: %v %s", man.Config.Digest, err, tr.blobs[man.Config.Digest])
			}
			for _, d := range append([]v1.Descriptor{man.Config}, man.Layers...) {
				if d.MediaType != v1.MediaTypeImageConfig && d.MediaType != v1.MediaTypeImageLayerGzip {
					t.Errorf("%s: media type %s", d.Digest, d.MediaType)
				}
				if b, ok := tr.blobs[d.Digest]; !ok || int64(len(b)) != d.Size {
					t.Errorf("%s@%s: descriptor %s of %d bytes, blob present %v", repo, m, d.Digest, d.Size, ok)
				}
				if !tr.layers[repo][d.Digest] {
					t.Errorf("%s: %s is not linked", repo, d.Digest)
				}
			}
		}
		for _, tag := range tr.tags[repo] {
			if !slices.Contains(revs, tag) {
				t.Errorf("%s: a tag points at %s, which has no revision link", repo, tag)
			}
		}
	}
	// A mark of what was read back removes what the summary says.
	for _, c := range []struct {
		roots map[string][]digest.Digest
		want  int
	}{{tr.revisions, sum.Unreferenced}, {tr.tags, sum.UnreferencedUntagged}} {
		reachable := map[digest.Digest]bool{}
		for _, ms := range c.roots {
			for _, m := range ms {
				var man v1.Manifest
				_ = json.Unmarshal(tr.blobs[m], &man)
				reachable[m], reachable[man.Config.Digest] = true, true
				for _, l := range man.Layers {
					reachable[l.Digest] = true
				}
			}
		}
		if got := len(tr.blobs) - len(reachable); got != c.want {
			t.Errorf("%d blobs unreferenced, the summary says %d", got, c.want)
		}
	}
	if sum.Unreferenced != 10 || sum.UnreferencedUntagged <= sum.Unreferenced {
		t.Errorf("unreferenced %d (want 10, a fifth), with untagged %d", sum.Unreferenced, sum.UnreferencedUntagged)
	}
}

func TestGCDataDeterministic(t *testing.T) {
	a, _ := tinyGCData(t, 3)
	b, _ := tinyGCData(t, 3)
	c, _ := tinyGCData(t, 4)
	list := func(dir string) []string {
		var out []string
		_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				out = append(out, strings.TrimPrefix(p, dir))
			}
			return err
		})
		return out
	}
	if !slices.Equal(list(a), list(b)) {
		t.Fatal("one seed wrote two different trees")
	}
	if slices.Equal(list(a), list(c)) {
		t.Fatal("two seeds wrote one tree")
	}
}

// Berth's collection removes exactly what the summary says.
func TestGCDataBerthCollects(t *testing.T) {
	for _, untagged := range []bool{false, true} {
		dir, sum := tinyGCData(t, 11)
		d, err := filesystem.New(dir)
		if err != nil {
			t.Fatal(err)
		}
		s := storage.NewWithOptions(d, storage.Options{GracePeriod: time.Minute})
		rep, err := s.CollectGarbage(context.Background(), storage.GCOptions{DeleteUntagged: untagged})
		if cerr := d.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			t.Fatal(err)
		}
		want, wantBytes := sum.Unreferenced, sum.UnreferencedBytes
		if untagged {
			want, wantBytes = sum.UnreferencedUntagged, sum.UnreferencedUntaggedBytes
		}
		if rep.BlobsDeleted != want || rep.BytesFreed != wantBytes || rep.Failed != 0 {
			t.Errorf("delete-untagged %v: %+v, want %d blobs, %d bytes", untagged, rep, want, wantBytes)
		}
	}
}

func TestGCDataTooFewBlobs(t *testing.T) {
	if _, err := planGCData(gcDataOptions{Repos: 10, Blobs: 20, Workers: 1}); err == nil {
		t.Fatal("10 repositories in 20 blobs: no error")
	}
}
