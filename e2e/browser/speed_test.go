package browser

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/storage"
	"github.com/berth-registry/berth/storage/driver/filesystem"
)

// manyRepositories is how many repositories the speed test's registry holds.
const manyRepositories = 10_000

// fillRepositories writes n repositories public/svc-00000… into root (a
// filesystem storage root), each with the tag latest on one small image.
// The first goes through the storage API; the others are copies of its
// directory (links only: the blobs are shared), which is what the API
// would write for each and takes seconds instead of minutes of fsyncs.
func fillRepositories(t *testing.T, root string, n int) {
	t.Helper()
	ctx := context.Background()
	drv, err := filesystem.New(root)
	if err != nil {
		t.Fatal(err)
	}
	store := storage.New(drv)
	first := repoName(0)
	cfg := []byte(`{"architecture":"amd64","os":"linux","created":"2026-11-30T12:00:00Z","rootfs":{"type":"layers","diff_ids":[]}}`)
	layer := bytes.Repeat([]byte("berth"), 200)
	for _, blob := range [][]byte{cfg, layer} {
		if _, err := store.PutBlob(ctx, first, digest.FromBytes(blob), bytes.NewReader(blob)); err != nil {
			t.Fatal(err)
		}
	}
	manifest, err := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.manifest.v1+json",
		"config":        map[string]any{"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest.FromBytes(cfg), "size": len(cfg)},
		"layers":        []any{map[string]any{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest.FromBytes(layer), "size": len(layer)}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.PutManifest(ctx, first, "latest", "application/vnd.oci.image.manifest.v1+json", manifest); err != nil {
		t.Fatal(err)
	}
	if err := drv.Close(); err != nil {
		t.Fatal(err)
	}
	// The files of the first repository (its links), written again under
	// each other name.
	repos := filepath.Join(root, "docker", "registry", "v2", "repositories")
	src := filepath.Join(repos, filepath.FromSlash(first))
	files := map[string][]byte{}
	err = filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err == nil {
			files[rel], err = os.ReadFile(p)
		}
		return err
	})
	if err != nil || len(files) == 0 {
		t.Fatalf("reading %s: %d files, %v", src, len(files), err)
	}
	start := time.Now()
	for i := 1; i < n; i++ {
		dir := filepath.Join(repos, filepath.FromSlash(repoName(i)))
		for rel, content := range files {
			p := filepath.Join(dir, rel)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, content, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	t.Logf("wrote %d repositories (%d files each) in %s", n, len(files), time.Since(start).Round(time.Millisecond))
}

// scratchDir is a directory for the 10,000 repositories: in /dev/shm
// (memory) where there is one, since writing and removing 150,000 small
// files on a busy disk takes minutes, and the store's disk is not what the
// test measures; else a temporary directory.
func scratchDir(t *testing.T) string {
	t.Helper()
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		if dir, err := os.MkdirTemp("/dev/shm", "berth-ui-speed-"); err == nil {
			t.Cleanup(func() { os.RemoveAll(dir) })
			return dir
		}
	}
	return t.TempDir()
}

func repoName(i int) string { return fmt.Sprintf("public/svc-%05d", i) }

// The repositories page of a registry of 10,000 repositories, its search
// and its next page, loaded in Chromium: the navigation timing of each is
// logged (a measurement, not a pass/fail threshold: times depend on the
// machine). The test checks what the pages hold.
func TestTenThousandRepositories(t *testing.T) {
	if testing.Short() {
		t.Skip("fills a store with 10,000 repositories; not in -short")
	}
	s := newSite(t, scratchDir(t), func(root string) { fillRepositories(t, root, manyRepositories) })
	b := newBrowser(t, s.base(), s.pin, desktopWidth, desktopHeight)
	t.Cleanup(func() { b.checkCSP() })

	// Anonymous visitors may pull public/*: every repository is theirs.
	if status := b.open("/ui/"); status != 200 {
		t.Fatalf("GET /ui/: %d", status)
	}
	first := b.repositories()
	b.logTiming(fmt.Sprintf("/ui/ of %d repositories (%d rows)", manyRepositories, len(first)))
	if len(first) != 50 || first[0] != repoName(0) || first[49] != repoName(49) {
		t.Errorf("the first page lists %d repositories, %q…; want 50 from %s", len(first), first, repoName(0))
	}
	if !b.exists("a#next") {
		t.Fatal("the first page of 10,000 repositories has no a#next")
	}
	b.screenshot("repositories-10000")

	b.clickAndLoad("a#next")
	second := b.repositories()
	b.logTiming("/ui/ next page")
	if len(second) != 50 || second[0] != repoName(50) {
		t.Errorf("the second page lists %d repositories from %q, want 50 from %s", len(second), second, repoName(50))
	}

	// A search matching ten names at the end of the list.
	b.open("/ui/?q=svc-0999")
	found := b.repositories()
	b.logTiming("/ui/?q=svc-0999 (10 matches)")
	var want []string
	for i := 9990; i < manyRepositories; i++ {
		want = append(want, repoName(i))
	}
	wantSet(t, "search q=svc-0999", found, want)

	// The last repository's page.
	b.open("/ui/r/" + repoName(manyRepositories-1) + "/")
	b.do("wait for the tag", chromedp.WaitReady(chromedp.CSS(`tr[data-tag="latest"]`)))
	b.logTiming("/ui/r/" + repoName(manyRepositories-1) + "/")
}
