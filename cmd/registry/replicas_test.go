package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"path"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/minio/minio-go/v7"

	"github.com/berth-registry/berth/internal/miniotest"
	"github.com/berth-registry/berth/storage"
	"github.com/berth-registry/berth/storage/driver/s3"
)

// The replica tests: several registries, each a real server on loopback
// started as `registry serve` starts, share one bucket of a real MinIO and
// must behave as one registry. None of them holds state another needs.

// replicaChunk is the S3 part size the replicas are configured with: the
// smallest S3 allows, so that chunks above and below it stay small.
const replicaChunk = 5 << 20

// replicaRoot is the bucket prefix (storage.s3.rootdirectory) of the tests.
const replicaRoot = "/berth"

// s3Bucket is a fresh bucket of the shared MinIO, and the storage.s3
// section that names it.
type s3Bucket struct {
	srv  *miniotest.Server
	name string
	cfg  S3Config
}

func newS3Bucket(t *testing.T) *s3Bucket {
	t.Helper()
	srv := miniotest.Shared(t)
	name := srv.NewBucket(t)
	secure := false
	return &s3Bucket{srv: srv, name: name, cfg: S3Config{
		RegionEndpoint: srv.Endpoint, ForcePathStyle: true, Bucket: name, Secure: &secure,
		AccessKey: miniotest.AccessKey, SecretKey: miniotest.SecretKey,
		RootDirectory: replicaRoot, ChunkSize: replicaChunk,
	}}
}

// startReplica starts a registry on the bucket; configure, if not nil,
// adjusts its configuration further.
func (b *s3Bucket) startReplica(t *testing.T, configure func(*Config)) *testServer {
	t.Helper()
	return startServerWith(t, t.TempDir(), func(c *Config) {
		c.Storage.S3 = b.cfg
		if configure != nil {
			configure(c)
		}
	}, nil)
}

// store opens a store of the test's own on the bucket, as the
// garbage-collect command beside the replicas does.
func (b *s3Bucket) store(t *testing.T, grace time.Duration) *storage.Store {
	t.Helper()
	d, err := s3.New(t.Context(), b.cfg.s3Options())
	if err != nil {
		t.Fatal(err)
	}
	return storage.NewWithOptions(d, storage.Options{GracePeriod: grace})
}

// key is the object key of a path of the registry's tree.
func (b *s3Bucket) key(p string) string {
	return strings.TrimPrefix(path.Join(replicaRoot, "docker/registry/v2", p), "/")
}

// uploads lists the multipart uploads in progress in the bucket, keyed by
// object key. (MinIO lists uploads by a prefix only when it is empty or a
// whole key, so this lists them all.)
func (b *s3Bucket) uploads(t *testing.T) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	for u := range b.srv.Client(t).ListIncompleteUploads(context.Background(), b.name, "", true) {
		if u.Err != nil {
			t.Fatal(u.Err)
		}
		out[u.Key] = append(out[u.Key], u.UploadID)
	}
	return out
}

// parts returns how many parts upload id of key holds.
func (b *s3Bucket) parts(t *testing.T, key, id string) int {
	t.Helper()
	core := minio.Core{Client: b.srv.Client(t)}
	res, err := core.ListObjectParts(context.Background(), b.name, key, id, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	return len(res.ObjectParts)
}

// randomBlob returns n bytes that differ from run to run, and their digest.
func randomBlob(n int) ([]byte, string) {
	b := make([]byte, n)
	var seed [32]byte
	for i := range 4 {
		v := rand.Uint64()
		for j := range 8 {
			seed[i*8+j] = byte(v >> (8 * j))
		}
	}
	_, _ = rand.NewChaCha8(seed).Read(b)
	return b, sha256Digest(b)
}

func sha256Digest(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// uploadPathOf returns the path and query of a response's Location.
func uploadPathOf(t *testing.T, resp *http.Response) string {
	t.Helper()
	u, err := url.Parse(resp.Header.Get("Location"))
	if err != nil || resp.Header.Get("Location") == "" {
		t.Fatalf("bad Location %q (status %d): %v", resp.Header.Get("Location"), resp.StatusCode, err)
	}
	return u.RequestURI()
}

// withDigest appends ?digest= (or &digest=) to an upload path.
func withDigest(p, dg string) string {
	sep := "?"
	if strings.Contains(p, "?") {
		sep = "&"
	}
	return p + sep + "digest=" + url.QueryEscape(dg)
}

func wantRange(size int) string { return fmt.Sprintf("0-%d", max(size-1, 0)) }

// TestReplicasServeOneBucket: what is pushed, tagged, deleted or referred
// to through one replica is seen by the others at once, with
// go-containerregistry as the client.
func TestReplicasServeOneBucket(t *testing.T) {
	b := newS3Bucket(t)
	ra, rb := b.startReplica(t, nil), b.startReplica(t, nil)
	// The third answers blob downloads with a redirect into the bucket, by
	// a name: go-containerregistry follows no redirect to a loopback IP.
	minioHost, minioPort, _ := net.SplitHostPort(strings.TrimPrefix(b.srv.Endpoint, "http://"))
	const minioName = "minio.berth.test"
	rc := b.startReplica(t, func(c *Config) {
		c.Storage.Redirect.Disable = false
		c.Storage.S3.RedirectEndpoint = "http://" + net.JoinHostPort(minioName, minioPort)
	})
	rc.alias(minioName, minioPort, net.JoinHostPort(minioHost, minioPort))
	const name = "team/app"
	repoA, repoB, repoC := ra.repo(t, name), rb.repo(t, name), rc.repo(t, name)

	// An image with small layers and one larger than a part, pushed to A
	// while B polls for it (whatever B finds of it must be whole), and
	// pulled from B and C as soon as A acknowledged it.
	bigLayer, _ := randomBlob(replicaChunk + 1<<20 + 7)
	img, err := mutate.AppendLayers(randomImage(t, 2), static.NewLayer(bigLayer, types.DockerLayer))
	if err != nil {
		t.Fatal(err)
	}
	want := imageDigest(t, img)
	polled := make(chan error, 1)
	pushed := make(chan struct{})
	go func() {
		for {
			// Only a request sent after A's acknowledgement must find
			// the image: one sent before may be answered 404 after it.
			acked := false
			select {
			case <-pushed:
				acked = true
			default:
			}
			got, err := remote.Image(repoB.Tag("v1"), rb.opts(t)...)
			var terr *transport.Error
			if errors.As(err, &terr) && terr.StatusCode == http.StatusNotFound {
				if acked {
					polled <- errors.New("A acknowledged the push, B still answers 404")
					return
				}
				time.Sleep(10 * time.Millisecond)
				continue
			}
			if err == nil {
				err = verifyImage(got, want)
			}
			polled <- err
			return
		}
	}()
	if err := remote.Write(repoA.Tag("v1"), img, ra.opts(t)...); err != nil {
		t.Fatal(err)
	}
	close(pushed)
	if err := <-polled; err != nil {
		t.Fatalf("B polling for the image A was pushed: %v", err)
	}
	for _, r := range []struct {
		srv  *testServer
		repo string
	}{{rb, "B"}, {rc, "C"}} {
		got, err := remote.Image(r.srv.repo(t, name).Tag("v1"), r.srv.opts(t)...)
		if err != nil {
			t.Fatalf("pull from %s: %v", r.repo, err)
		}
		checkSameImage(t, img, got)
	}
	// C redirected its blob downloads into the bucket; B served them.
	bigDg := sha256Digest(bigLayer)
	noFollow := &http.Client{Transport: rc.tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noFollow.Get(rc.url("/v2/" + name + "/blobs/" + bigDg))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusTemporaryRedirect || !strings.HasPrefix(loc, "http://"+net.JoinHostPort(minioName, minioPort)+"/"+b.name+"/") {
		t.Errorf("GET blob from C: %d, Location %q; want 307 to the bucket", resp.StatusCode, loc)
	}
	resp, body := rb.do(t, http.MethodGet, rb.url("/v2/"+name+"/blobs/"+bigDg), nil, nil)
	if resp.StatusCode != http.StatusOK || !bytes.Equal(body, bigLayer) {
		t.Errorf("GET blob from B: %d, %d bytes (equal %v); want 200 and the layer", resp.StatusCode, len(body), bytes.Equal(body, bigLayer))
	}

	// A multi-platform index, pushed to A, pulled from B by tag and each
	// child from C by digest.
	var adds []mutate.IndexAddendum
	children := map[v1.Hash]v1.Image{}
	for _, arch := range []string{"amd64", "arm64", "s390x"} {
		child := randomImage(t, 2)
		children[imageDigest(t, child)] = child
		adds = append(adds, mutate.IndexAddendum{Add: child, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: arch}}})
	}
	idx := mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex), adds...)
	idxDg, err := idx.Digest()
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteIndex(repoA.Tag("multi"), idx, ra.opts(t)...); err != nil {
		t.Fatal(err)
	}
	gotIdx, err := remote.Index(repoB.Tag("multi"), rb.opts(t)...)
	if err != nil {
		t.Fatal(err)
	}
	im, err := gotIdx.IndexManifest()
	if dg, derr := gotIdx.Digest(); err != nil || derr != nil || dg != idxDg || len(im.Manifests) != len(children) {
		t.Fatalf("index from B: %s (%v, %v), %d children; want %s, %d", dg, err, derr, len(im.Manifests), idxDg, len(children))
	}
	for _, desc := range im.Manifests {
		got, err := remote.Image(repoC.Digest(desc.Digest.String()), rc.opts(t)...)
		if err != nil {
			t.Fatalf("child %s from C: %v", desc.Digest, err)
		}
		checkSameImage(t, children[desc.Digest], got)
	}

	// Tags: made on A, listed on B; moved on B, resolved on C.
	img2 := randomImage(t, 1)
	if err := remote.Write(repoA.Tag("v2"), img2, ra.opts(t)...); err != nil {
		t.Fatal(err)
	}
	if err := remote.Tag(repoA.Tag("latest"), img, ra.opts(t)...); err != nil {
		t.Fatal(err)
	}
	if tags, err := remote.List(repoB, rb.opts(t)...); err != nil || !slices.Equal(tags, []string{"latest", "multi", "v1", "v2"}) {
		t.Errorf("tags on B: %v, %v; want [latest multi v1 v2]", tags, err)
	}
	if err := remote.Tag(repoB.Tag("latest"), img2, rb.opts(t)...); err != nil {
		t.Fatal(err)
	}
	if desc, err := remote.Head(repoC.Tag("latest"), rc.opts(t)...); err != nil || desc.Digest != imageDigest(t, img2) {
		t.Errorf("latest on C after B moved it: %v, %v; want %s", desc, err, imageDigest(t, img2))
	}

	// Referrers: an artifact about img pushed to A is listed on B.
	subject, err := partial.Descriptor(img)
	if err != nil {
		t.Fatal(err)
	}
	art, err := mutate.Append(mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIEmptyJSON),
		mutate.Addendum{Layer: static.NewLayer([]byte("signed by A"), "application/vnd.berth.test.sig"), MediaType: "application/vnd.berth.test.sig"})
	if err != nil {
		t.Fatal(err)
	}
	art = mutate.Subject(art, *subject).(v1.Image)
	artDg := imageDigest(t, art)
	if err := remote.Write(repoA.Digest(artDg.String()), art, ra.opts(t)...); err != nil {
		t.Fatal(err)
	}
	refs, err := remote.Referrers(repoB.Digest(subject.Digest.String()), rb.opts(t)...)
	if err != nil {
		t.Fatal(err)
	}
	if rim, err := refs.IndexManifest(); err != nil || len(rim.Manifests) != 1 || rim.Manifests[0].Digest != artDg {
		t.Errorf("referrers on B: %+v, %v; want just %s", rim, err, artDg)
	}

	// Deletes: the index deleted on B is gone from A at once, with the tag
	// that named it; a tag deleted on C is gone from B.
	if err := remote.Delete(repoB.Digest(idxDg.String()), rb.opts(t)...); err != nil {
		t.Fatal(err)
	}
	checkNotFound(t, repoA.Digest(idxDg.String()), ra.opts(t)...)
	checkNotFound(t, repoA.Tag("multi"), ra.opts(t)...)
	if err := remote.Delete(repoC.Tag("v2"), rc.opts(t)...); err != nil {
		t.Fatal(err)
	}
	checkNotFound(t, repoB.Tag("v2"), rb.opts(t)...)
	for _, r := range []*testServer{ra, rb, rc} {
		if tags, err := remote.List(r.repo(t, name), r.opts(t)...); err != nil || !slices.Equal(tags, []string{"latest", "v1"}) {
			t.Errorf("tags on %s after the deletes: %v, %v; want [latest v1]", r.addr, tags, err)
		}
	}

	// The catalog: repositories made through different replicas, the same
	// list, page by page, from each.
	if err := remote.Write(rb.repo(t, "team/app/sub").Tag("x"), randomImage(t, 1), rb.opts(t)...); err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(rc.repo(t, "other").Tag("x"), randomImage(t, 1), rc.opts(t)...); err != nil {
		t.Fatal(err)
	}
	for _, r := range []*testServer{ra, rb, rc} {
		got, err := remote.Catalog(t.Context(), r.registry(t), append(r.opts(t), remote.WithPageSize(1))...)
		if want := []string{"other", "team/app", "team/app/sub"}; err != nil || !slices.Equal(got, want) {
			t.Errorf("catalog on %s: %v, %v; want %v", r.addr, got, err, want)
		}
	}
}

// TestUploadAcrossReplicas: a chunked upload whose POST, PATCHes, status
// request and PUT each go to another replica, with chunks smaller and
// larger than a part, ends in the blob that was sent.
func TestUploadAcrossReplicas(t *testing.T) {
	b := newS3Bucket(t)
	reps := []*testServer{b.startReplica(t, nil), b.startReplica(t, nil), b.startReplica(t, nil)}
	const name = "team/chunked"
	sizes := []int{100 << 10, replicaChunk + 3, 1, 2 * replicaChunk, 3<<20 + 5, replicaChunk - 1}
	total := 0
	for _, n := range sizes {
		total += n
	}
	blob, dg := randomBlob(total)

	resp, _ := reps[0].do(t, http.MethodPost, reps[0].url("/v2/"+name+"/blobs/uploads/"), nil, nil)
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("POST on A: %d", resp.StatusCode)
	}
	up := uploadPathOf(t, resp)
	off := 0
	for i, n := range sizes {
		r := reps[i%len(reps)]
		resp, body := r.do(t, http.MethodPatch, r.url(up), chunkHeader(off, off+n-1), blob[off:off+n])
		off += n
		if resp.StatusCode != http.StatusAccepted || resp.Header.Get("Range") != wantRange(off) {
			t.Fatalf("PATCH %d (%d bytes) on replica %d: %d, Range %q; want 202, %s\n%s", i, n, i%len(reps), resp.StatusCode, resp.Header.Get("Range"), wantRange(off), body)
		}
		up = uploadPathOf(t, resp)
		// Every replica, asked at once, knows where the upload stands.
		next := reps[(i+1)%len(reps)]
		resp, _ = next.do(t, http.MethodGet, next.url(up), nil, nil)
		if resp.StatusCode != http.StatusNoContent || resp.Header.Get("Range") != wantRange(off) {
			t.Fatalf("GET status after PATCH %d: %d, Range %q; want 204, %s", i, resp.StatusCode, resp.Header.Get("Range"), wantRange(off))
		}
	}
	// A chunk that does not start where the upload ends is refused by a
	// replica that did not take the last one, and the answer says where.
	resp, _ = reps[1].do(t, http.MethodPatch, reps[1].url(up), chunkHeader(off-10, off-1), blob[off-10:])
	if resp.StatusCode != http.StatusRequestedRangeNotSatisfiable || resp.Header.Get("Range") != wantRange(off) {
		t.Errorf("overlapping PATCH on B: %d, Range %q; want 416, %s", resp.StatusCode, resp.Header.Get("Range"), wantRange(off))
	}
	resp, body := reps[2].do(t, http.MethodPut, reps[2].url(withDigest(up, dg)), nil, nil)
	if resp.StatusCode != http.StatusCreated || resp.Header.Get("Docker-Content-Digest") != dg {
		t.Fatalf("PUT on C: %d, digest %q; want 201, %s\n%s", resp.StatusCode, resp.Header.Get("Docker-Content-Digest"), dg, body)
	}
	resp, body = reps[0].do(t, http.MethodGet, reps[0].url("/v2/"+name+"/blobs/"+dg), nil, nil)
	if resp.StatusCode != http.StatusOK || !bytes.Equal(body, blob) {
		t.Fatalf("GET blob from A: %d, %d bytes (equal %v); want 200, the %d bytes sent", resp.StatusCode, len(body), bytes.Equal(body, blob), len(blob))
	}
	for i, r := range reps {
		if resp, _ := r.do(t, http.MethodGet, r.url(up), nil, nil); resp.StatusCode != http.StatusNotFound {
			t.Errorf("upload status on replica %d after the PUT: %d, want 404", i, resp.StatusCode)
		}
	}
	if left := b.uploads(t); len(left) != 0 {
		t.Errorf("multipart uploads left in the bucket: %v", left)
	}
}

// TestUploadWrongDigestAcrossReplicas: a PUT with the wrong digest is
// refused with DIGEST_INVALID, keeps what it carried, and the session goes
// on through the other replicas to the right digest.
func TestUploadWrongDigestAcrossReplicas(t *testing.T) {
	b := newS3Bucket(t)
	ra, rb, rc := b.startReplica(t, nil), b.startReplica(t, nil), b.startReplica(t, nil)
	const name = "team/wrong"
	blob, dg := randomBlob(2*replicaChunk + 3<<20)
	cuts := []int{replicaChunk + 1, replicaChunk + 2<<20, len(blob)} // PATCH on A, PUT with a chunk on C, PATCH on A

	resp, _ := ra.do(t, http.MethodPost, ra.url("/v2/"+name+"/blobs/uploads/"), nil, nil)
	up := uploadPathOf(t, resp)
	resp, _ = ra.do(t, http.MethodPatch, ra.url(up), chunkHeader(0, cuts[0]-1), blob[:cuts[0]])
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("PATCH on A: %d", resp.StatusCode)
	}
	up = uploadPathOf(t, resp)
	// The PUT carries the second chunk and names the digest of the first.
	resp, body := rc.do(t, http.MethodPut, rc.url(withDigest(up, sha256Digest(blob[:cuts[0]]))), chunkHeader(cuts[0], cuts[1]-1), blob[cuts[0]:cuts[1]])
	var errBody struct{ Errors []struct{ Code string } }
	_ = json.Unmarshal(body, &errBody)
	if resp.StatusCode != http.StatusBadRequest || len(errBody.Errors) != 1 || errBody.Errors[0].Code != "DIGEST_INVALID" {
		t.Fatalf("PUT with a wrong digest on C: %d %s; want 400 DIGEST_INVALID", resp.StatusCode, body)
	}
	for _, r := range []*testServer{ra, rb, rc} {
		resp, _ = r.do(t, http.MethodGet, r.url(up), nil, nil)
		if resp.StatusCode != http.StatusNoContent || resp.Header.Get("Range") != wantRange(cuts[1]) {
			t.Fatalf("status on %s after the refused PUT: %d, Range %q; want 204, %s", r.addr, resp.StatusCode, resp.Header.Get("Range"), wantRange(cuts[1]))
		}
	}
	resp, _ = ra.do(t, http.MethodPatch, ra.url(up), chunkHeader(cuts[1], cuts[2]-1), blob[cuts[1]:])
	if resp.StatusCode != http.StatusAccepted || resp.Header.Get("Range") != wantRange(len(blob)) {
		t.Fatalf("PATCH on A after the refused PUT: %d, Range %q", resp.StatusCode, resp.Header.Get("Range"))
	}
	resp, body = rb.do(t, http.MethodPut, rb.url(withDigest(up, dg)), nil, nil)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("PUT with the right digest on B: %d %s", resp.StatusCode, body)
	}
	resp, body = rc.do(t, http.MethodGet, rc.url("/v2/"+name+"/blobs/"+dg), nil, nil)
	if resp.StatusCode != http.StatusOK || !bytes.Equal(body, blob) {
		t.Fatalf("GET blob from C: %d, %d bytes (equal %v); want 200, the %d bytes sent", resp.StatusCode, len(body), bytes.Equal(body, blob), len(blob))
	}
	if left := b.uploads(t); len(left) != 0 {
		t.Errorf("multipart uploads left in the bucket: %v", left)
	}
}
