package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// pushForeignManifest pushes to up's windows/app, as ltsc, a Docker
// manifest whose first layer is foreign (a descriptor with urls, its blob
// not pushed), and returns the image the rest comes from, its manifest, the
// payload, the foreign layer's digest and the manifest's.
func pushForeignManifest(t *testing.T, up *testServer) (base v1.Image, bm *v1.Manifest, payload []byte, foreignDigest, manifestDigest string) {
	t.Helper()
	base = randomImage(t, 1)
	if err := remote.Write(up.repo(t, "windows/app").Tag("base"), base, up.opts(t)...); err != nil {
		t.Fatal(err)
	}
	bm, err := base.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	// The foreign layer's content exists only at its url, never upstream.
	foreign := sha256.Sum256([]byte("a Windows base layer served by its vendor"))
	foreignDigest = "sha256:" + hex.EncodeToString(foreign[:])
	payload = []byte(`{
   "schemaVersion": 2,
   "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
   "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": ` + itoa(bm.Config.Size) + `, "digest": "` + bm.Config.Digest.String() + `"},
   "layers": [
      {
         "mediaType": "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
         "size": 1234567,
         "digest": "` + foreignDigest + `",
         "urls": ["https://mcr.microsoft.com/v2/windows/nanoserver/blobs/` + foreignDigest + `"]
      },
      {"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": ` + itoa(bm.Layers[0].Size) + `, "digest": "` + bm.Layers[0].Digest.String() + `"}
   ]
}`)
	const mt = "application/vnd.docker.distribution.manifest.v2+json"
	resp, body := up.do(t, "PUT", up.url("/v2/windows/app/manifests/ltsc"), http.Header{"Content-Type": {mt}}, payload)
	if resp.StatusCode != 201 {
		t.Fatalf("upstream refused a manifest whose foreign layer it does not hold: %d %s", resp.StatusCode, body)
	}
	sum := sha256.Sum256(payload)
	manifestDigest = "sha256:" + hex.EncodeToString(sum[:])
	return base, bm, payload, foreignDigest, manifestDigest
}

// TestPullThroughForeignBlobByDigest: a client that asks the mirror for
// a foreign layer of a cached manifest by digest gets 404 BLOB_UNKNOWN
// (it takes the layer from the descriptor's urls), and the mirror neither
// asks the upstream for it nor stores it, even though this upstream would
// serve the blob.
func TestPullThroughForeignBlobByDigest(t *testing.T) {
	up := startServer(t, t.TempDir())
	_, _, _, foreignDigest, _ := pushForeignManifest(t, up)
	content := []byte("a Windows base layer served by its vendor")
	if err := remote.WriteLayer(up.repo(t, "windows/app"), static.NewLayer(content, types.DockerLayer), up.opts(t)...); err != nil {
		t.Fatal(err)
	}
	if resp, _ := up.do(t, "GET", up.url("/v2/windows/app/blobs/"+foreignDigest), nil, nil); resp.StatusCode != 200 {
		t.Fatalf("the upstream does not serve the foreign blob (%d): the test shows nothing", resp.StatusCode)
	}
	root := t.TempDir()
	mirror, counters := startMirrorWith(t, root, map[string]*testServer{"mcr": up}, "", "", func(*Config) {})
	c := counters["mcr"]
	const mt = "application/vnd.docker.distribution.manifest.v2+json"
	if resp, body := mirror.do(t, "GET", mirror.url("/v2/mcr/windows/app/manifests/ltsc"), http.Header{"Accept": {mt}}, nil); resp.StatusCode != 200 {
		t.Fatalf("manifest through the mirror: %d %s", resp.StatusCode, body)
	}
	for _, method := range []string{"HEAD", "GET"} {
		resp, body := mirror.do(t, method, mirror.url("/v2/mcr/windows/app/blobs/"+foreignDigest), nil, nil)
		if resp.StatusCode != 404 || (method == "GET" && !bytes.Contains(body, []byte(`"BLOB_UNKNOWN"`))) {
			t.Errorf("%s of the foreign blob from the mirror: %d %s, want 404 BLOB_UNKNOWN", method, resp.StatusCode, body)
		}
	}
	if n := c.count("GET blob "+foreignDigest) + c.count("HEAD blob "+foreignDigest); n != 0 {
		t.Errorf("the mirror asked the upstream for the foreign blob %d times, want 0", n)
	}
	hexDigest := strings.TrimPrefix(foreignDigest, "sha256:")
	err := filepath.Walk(root, func(p string, _ os.FileInfo, err error) error {
		if err == nil && filepath.Base(p) == hexDigest && strings.Contains(filepath.ToSlash(p), "/blobs/") {
			t.Errorf("the foreign blob is stored in the mirror: %s", p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}
