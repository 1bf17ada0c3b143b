package main

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/berth-registry/berth/internal/miniotest"
)

// s3ChunkSize is the part size both registries upload with: S3's
// smallest, so that a layer of a few MiB already takes a multipart upload.
const s3ChunkSize = 5 << 20

// bigLayerSize is the layer that crosses several parts: two whole parts
// and a short last one.
const bigLayerSize = 2*s3ChunkSize + 3<<20 + 123

// TestS3InteropOneBucket runs Distribution and Berth at the same time on
// one bucket and root directory of a MinIO: what either pushes, the other
// serves, byte for byte, and both list the same tags. Distribution reads
// the objects itself (redirects off), so the keys, not only presigned
// URLs, are what it finds.
func TestS3InteropOneBucket(t *testing.T) {
	bin := distributionBinary(t)
	minio := miniotest.Shared(t)
	bucket := minio.NewBucket(t)
	const root = "/interop"

	distAddr, _ := startDistributionWith(t, bin, fmt.Sprintf(`  s3:
    regionendpoint: %s
    bucket: %s
    accesskey: %s
    secretkey: %s
    region: us-east-1
    forcepathstyle: true
    secure: false
    v4auth: true
    rootdirectory: %s
    chunksize: %d
  redirect:
    disable: true
`, minio.Endpoint, bucket, miniotest.AccessKey, miniotest.SecretKey, root, s3ChunkSize))
	berth := startServerWith(t, t.TempDir(), func(c *Config) {
		c.Storage.Filesystem.RootDirectory = defaultConfig().Storage.Filesystem.RootDirectory
		secure := false
		c.Storage.S3 = S3Config{
			RegionEndpoint: minio.Endpoint, Bucket: bucket, Region: "us-east-1",
			AccessKey: miniotest.AccessKey, SecretKey: miniotest.SecretKey,
			ForcePathStyle: true, Secure: &secure, V4Auth: true,
			RootDirectory: root, ChunkSize: s3ChunkSize,
		}
	}, nil)
	distRepo := func(repo string) name.Repository {
		t.Helper()
		r, err := name.NewRepository(distAddr+"/"+repo, name.Insecure)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}

	// Distribution → Berth, with a layer Distribution sends to the store
	// as a multipart upload of its own.
	fromDist := newContent(t)
	fromDist.push(t, distRepo("interop/from-distribution"))
	bigFromDist := bigImage(t)
	if err := remote.Write(distRepo("interop/big-from-distribution").Tag("big"), bigFromDist); err != nil {
		t.Fatalf("push to Distribution: %v", err)
	}
	fromDist.check(t, berth.repo(t, "interop/from-distribution"), berth.opts(t)...)
	checkPull(t, berth.repo(t, "interop/big-from-distribution").Tag("big"), bigFromDist, berth.opts(t)...)

	// Berth → Distribution, with a layer pushed in PATCHes of 3 MiB, which
	// Berth's writer turns into 5 MiB parts across requests.
	fromBerth := newContent(t)
	fromBerth.push(t, berth.repo(t, "interop/from-berth"), berth.opts(t)...)
	bigFromBerth := bigImage(t)
	bigRepo := berth.repo(t, "interop/big-from-berth")
	pushLayersChunked(t, berth, bigRepo.RepositoryStr(), bigFromBerth, 3<<20)
	if err := remote.Write(bigRepo.Tag("big"), bigFromBerth, berth.opts(t)...); err != nil {
		t.Fatalf("push to Berth: %v", err)
	}
	fromBerth.check(t, distRepo("interop/from-berth"))
	checkPull(t, distRepo("interop/big-from-berth").Tag("big"), bigFromBerth)

	// Both list the same tags in every repository, whoever wrote them.
	for _, repo := range []string{"interop/from-distribution", "interop/big-from-distribution", "interop/from-berth", "interop/big-from-berth"} {
		viaDist, err := remote.List(distRepo(repo))
		if err != nil {
			t.Fatalf("tags of %s from Distribution: %v", repo, err)
		}
		viaBerth, err := remote.List(berth.repo(t, repo), berth.opts(t)...)
		if err != nil {
			t.Fatalf("tags of %s from Berth: %v", repo, err)
		}
		if len(viaBerth) == 0 || !slices.Equal(viaDist, viaBerth) {
			t.Errorf("tags of %s: Distribution lists %v, Berth %v", repo, viaDist, viaBerth)
		}
	}
}

// bigImage is an image with one random layer of bigLayerSize bytes.
func bigImage(t *testing.T) v1.Image {
	t.Helper()
	img, err := random.Image(bigLayerSize, 1)
	if err != nil {
		t.Fatal(err)
	}
	ls, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	if size, err := ls[0].Size(); err != nil || size <= 2*s3ChunkSize {
		t.Fatalf("the big layer has %d bytes (%v), want more than two parts", size, err)
	}
	return img
}

// checkPull pulls ref and compares it with want.
func checkPull(t *testing.T, ref name.Reference, want v1.Image, opts ...remote.Option) {
	t.Helper()
	got, err := remote.Image(ref, opts...)
	if err != nil {
		t.Fatalf("pull %s: %v", ref, err)
	}
	checkSameImage(t, want, got)
}

// pushLayersChunked uploads img's layers to repo on s in PATCHes of chunk
// bytes, each with its Content-Range, then a PUT ?digest= without a body.
func pushLayersChunked(t *testing.T, s *testServer, repo string, img v1.Image, chunk int) {
	t.Helper()
	ls, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range ls {
		dg, err := l.Digest()
		if err != nil {
			t.Fatal(err)
		}
		rc, err := l.Compressed()
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		resp, _ := s.do(t, http.MethodPost, s.url("/v2/"+repo+"/blobs/uploads/"), nil, nil)
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("POST uploads: status %d, want 202", resp.StatusCode)
		}
		loc := requestURI(t, resp.Header.Get("Location"))
		for off := 0; off < len(data); off += chunk {
			end := min(off+chunk, len(data))
			resp, _ = s.do(t, http.MethodPatch, s.url(loc), chunkHeader(off, end-1), data[off:end])
			if resp.StatusCode != http.StatusAccepted || resp.Header.Get("Range") != fmt.Sprintf("0-%d", end-1) {
				t.Fatalf("PATCH %d-%d: status %d, Range %q", off, end-1, resp.StatusCode, resp.Header.Get("Range"))
			}
			loc = requestURI(t, resp.Header.Get("Location"))
		}
		sep := "?"
		if strings.Contains(loc, "?") {
			sep = "&"
		}
		resp, body := s.do(t, http.MethodPut, s.url(loc+sep+"digest="+url.QueryEscape(dg.String())), nil, nil)
		if resp.StatusCode != http.StatusCreated {
			t.Fatalf("PUT ?digest=%s: status %d: %s", dg, resp.StatusCode, bytes.TrimSpace(body))
		}
	}
}

// requestURI is the path and query of an upload's Location, which may be
// relative.
func requestURI(t *testing.T, loc string) string {
	t.Helper()
	u, err := url.Parse(loc)
	if err != nil || loc == "" {
		t.Fatalf("upload Location %q: %v", loc, err)
	}
	return u.RequestURI()
}
