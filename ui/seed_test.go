package ui_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	godigest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-registry/berth/storage"
)

// seed writes repositories straight into the filesystem store at dir,
// each with tag "latest" on one small image: the first through the store,
// the others as link files written without the store's fsyncs, so that
// 10,000 take seconds (on tmpfs: TMPDIR=/dev/shm).
func seed(tb testing.TB, dir string, store *storage.Store, names []string) {
	tb.Helper()
	ctx := context.Background()
	cfg := []byte(`{"architecture":"amd64","os":"linux","created":"2025-01-01T00:00:00Z","rootfs":{"type":"layers","diff_ids":[]}}`)
	layer := []byte("a layer")
	cfgDg, layerDg := godigest.FromBytes(cfg), godigest.FromBytes(layer)
	for _, b := range []struct {
		dg   godigest.Digest
		data []byte
	}{{cfgDg, cfg}, {layerDg, layer}} {
		if _, err := store.PutBlob(ctx, names[0], b.dg, bytes.NewReader(b.data)); err != nil {
			tb.Fatal(err)
		}
	}
	m := fmt.Sprintf(`{"schemaVersion":2,"mediaType":%q,"config":{"mediaType":%q,"digest":%q,"size":%d},"layers":[{"mediaType":%q,"digest":%q,"size":%d}]}`,
		ocispec.MediaTypeImageManifest, ocispec.MediaTypeImageConfig, cfgDg, len(cfg), ocispec.MediaTypeImageLayer, layerDg, len(layer))
	res, err := store.PutManifest(ctx, names[0], "latest", ocispec.MediaTypeImageManifest, []byte(m))
	if err != nil {
		tb.Fatal(err)
	}
	link := func(name string, elem ...string) {
		p := filepath.Join(append([]string{dir, "docker/registry/v2/repositories", name}, elem...)...)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			tb.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(res.Digest.String()), 0o644); err != nil {
			tb.Fatal(err)
		}
	}
	mhex := res.Digest.Encoded()
	// What the pages read: the manifest in the repository and its tag
	// (not the blob links a pull reads, nor the tag's history).
	for _, name := range names[1:] {
		link(name, "_manifests", "revisions", "sha256", mhex, "link")
		link(name, "_manifests", "tags", "latest", "current", "link")
	}
}

// repoNames are n names in a few namespaces: ns0/repo00000, …
func repoNames(n int) []string {
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("ns%d/repo%05d", i%10, i)
	}
	return names
}
