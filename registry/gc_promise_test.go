package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/storage"
	"github.com/berth-registry/berth/storage/driver"
	"github.com/berth-registry/berth/storage/driver/filesystem"
)

// Tests of garbage collection through the HTTP API: what a client was told
// (a HEAD 200, a manifest PUT 201) must stay true while collections run,
// and, to show that the protocol in storage/lease.go is what makes it so,
// it must not with GCOptions.Unsafe.

// acceptManifests is the Accept header of a client that pulls any kind of
// manifest.
const acceptManifests = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, " +
	"application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json"

// gcServer is a registry on a fresh filesystem store, serving over a real
// HTTP server.
type gcServer struct {
	root   string
	d      *filesystem.Driver
	store  *storage.Store
	srv    *httptest.Server
	client *http.Client
	// mounted counts cross-repository mounts the registry made (POST
	// ?mount= answered 201).
	mounted atomic.Int64
}

func newGCServer(t *testing.T, grace time.Duration) *gcServer {
	t.Helper()
	root := t.TempDir()
	d, err := filesystem.New(root)
	if err != nil {
		t.Fatal(err)
	}
	s := storage.NewWithOptions(d, storage.Options{GracePeriod: grace})
	g := &gcServer{root: root, d: d, store: s}
	h := New(Config{Store: s, DeleteEnabled: true})
	g.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Query().Get("mount") == "" {
			h.ServeHTTP(w, r)
			return
		}
		sw := &statusWriter{ResponseWriter: w}
		h.ServeHTTP(sw, r)
		if sw.status == http.StatusCreated {
			g.mounted.Add(1)
		}
	}))
	g.client = g.srv.Client()
	t.Cleanup(func() {
		g.srv.Close()
		d.Close()
	})
	return g
}

// statusWriter remembers the status of a response.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(status int) {
	w.status = status
	w.ResponseWriter.WriteHeader(status)
}

// do sends one request and returns its status, body and headers.
func (g *gcServer) do(method, p, contentType string, body []byte) (int, []byte, http.Header, error) {
	req, err := http.NewRequest(method, g.srv.URL+p, bytes.NewReader(body))
	if err != nil {
		return 0, nil, nil, err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	req.Header.Set("Accept", acceptManifests)
	res, err := g.client.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return res.StatusCode, b, res.Header, err
}

// pushBlob uploads content to repository name in one request.
func (g *gcServer) pushBlob(t *testing.T, name string, content []byte) manifestRef {
	t.Helper()
	dg := digest.FromBytes(content)
	status, body, _, err := g.do("POST", "/v2/"+name+"/blobs/uploads/?digest="+dg.String(), "application/octet-stream", content)
	if err != nil || status != http.StatusCreated {
		t.Fatalf("blob upload to %s: %d %s %v", name, status, body, err)
	}
	return manifestRef{MediaType: "application/vnd.oci.image.layer.v1.tar", Digest: dg, Size: int64(len(content))}
}

// manifestRef is a descriptor, as far as these tests read one.
type manifestRef struct {
	MediaType string        `json:"mediaType"`
	Digest    digest.Digest `json:"digest"`
	Size      int64         `json:"size"`
}

// ociImage returns the payload of an OCI image manifest; note makes
// manifests of the same blobs differ.
func ociImage(config manifestRef, note string, layers ...manifestRef) []byte {
	config.MediaType = "application/vnd.oci.image.config.v1+json"
	b, _ := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.manifest.v1+json",
		"config":        config,
		"layers":        layers,
		"annotations":   map[string]string{"note": note},
	})
	return b
}

// putManifest pushes payload as name:ref and returns the status and, on
// failure, the OCI error code.
func (g *gcServer) putManifest(name, ref string, payload []byte) (int, string, error) {
	status, body, _, err := g.do("PUT", "/v2/"+name+"/manifests/"+ref, "application/vnd.oci.image.manifest.v1+json", payload)
	if err != nil || status == http.StatusCreated {
		return status, "", err
	}
	var e struct{ Errors []struct{ Code string } }
	if json.Unmarshal(body, &e) == nil && len(e.Errors) > 0 {
		return status, e.Errors[0].Code, nil
	}
	return status, string(body), nil
}

// pull reads manifest name:ref and everything it references (an index's
// children, recursively), checking each digest and size against what
// references it, as a careful client would. It returns the manifest's
// digest.
func (g *gcServer) pull(name, ref string) (digest.Digest, error) {
	status, payload, hdr, err := g.do("GET", "/v2/"+name+"/manifests/"+ref, "", nil)
	if err != nil {
		return "", err
	}
	if status != http.StatusOK {
		return "", fmt.Errorf("manifest %s:%s: status %d", name, ref, status)
	}
	dg := digest.FromBytes(payload)
	if hdr.Get("Docker-Content-Digest") != dg.String() {
		return "", fmt.Errorf("manifest %s:%s: Docker-Content-Digest %s, content hashes to %s", name, ref, hdr.Get("Docker-Content-Digest"), dg)
	}
	if want, err := digest.Parse(ref); err == nil && want != dg {
		return "", fmt.Errorf("manifest %s:%s: content hashes to %s", name, ref, dg)
	}
	var m struct {
		Config    *manifestRef  `json:"config"`
		Layers    []manifestRef `json:"layers"`
		Manifests []manifestRef `json:"manifests"`
	}
	if err := json.Unmarshal(payload, &m); err != nil {
		return "", fmt.Errorf("manifest %s:%s: %v", name, ref, err)
	}
	for _, c := range m.Manifests {
		if _, err := g.pull(name, c.Digest.String()); err != nil {
			return "", fmt.Errorf("child of %s:%s: %w", name, ref, err)
		}
	}
	blobs := m.Layers
	if m.Config != nil {
		blobs = append(blobs, *m.Config)
	}
	for _, b := range blobs {
		status, content, _, err := g.do("GET", "/v2/"+name+"/blobs/"+b.Digest.String(), "", nil)
		if err != nil {
			return "", err
		}
		if status != http.StatusOK {
			return "", fmt.Errorf("blob %s of %s:%s: status %d", b.Digest, name, ref, status)
		}
		if got := digest.FromBytes(content); got != b.Digest || int64(len(content)) != b.Size {
			return "", fmt.Errorf("blob %s of %s:%s: got %d bytes hashing to %s, want %d", b.Digest, name, ref, len(content), got, b.Size)
		}
	}
	return dg, nil
}

// ageTree makes every file and directory under root look last written by
// ago: content, leases and markers alike, so that the grace period has
// passed for all of it.
func ageTree(t *testing.T, root string, by time.Duration) {
	t.Helper()
	old := time.Now().Add(-by)
	err := filepath.Walk(root, func(p string, _ os.FileInfo, err error) error {
		if os.IsNotExist(err) {
			return nil // removed meanwhile
		}
		if err != nil {
			return err
		}
		if err := os.Chtimes(p, old, old); err != nil && !os.IsNotExist(err) {
			return err
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// blobFile is the driver path of blob dg's content in Distribution's layout
// (see storage/paths.go).
func blobFile(dg digest.Digest) string {
	return "/docker/registry/v2/blobs/" + dg.Algorithm().String() + "/" + dg.Encoded()[:2] + "/" + dg.Encoded() + "/data"
}

// statHook is the collection's view of a store: the first time the
// collection looks at one of paths, hook runs first. The collection first
// looks at a blob's content in its sweep, after its mark: the hook is a
// request that arrives in between.
type statHook struct {
	driver.Driver
	paths map[string]bool
	once  sync.Once
	hook  func()
}

func (d *statHook) Stat(ctx context.Context, p string) (driver.FileInfo, error) {
	if d.paths[p] {
		d.once.Do(d.hook)
	}
	return d.Driver.Stat(ctx, p)
}

// TestGCKeepsPromises pins down, one request at a time, the two promises
// a registry makes while a collection runs, and shows that without the
// protocol (GCOptions.Unsafe) the collection breaks both:
//
//   - before: a client HEADs the layers of an image whose manifest was
//     deleted long ago (200), a collection runs, and the client pushes a
//     manifest using them; the push must succeed.
//   - during: a client pushes a manifest of old, unreferenced blobs after
//     the collection's mark and before its sweep (201); the image must
//     then pull.
//
// The stress test (TestGCStress) exercises the same protocol with many
// clients and aims at these interleavings; this test hits them every
// time.
func TestGCKeepsPromises(t *testing.T) {
	for _, unsafe := range []bool{false, true} {
		name := "protocol"
		if unsafe {
			name = "unsafe"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			// The grace period is long: whatever the test has not aged is
			// young, whatever it aged is old, however slow the machine.
			g := newGCServer(t, time.Hour)
			type img struct {
				name            string
				config, layer   manifestRef
				manifest, again []byte
				manifestDigest  digest.Digest
			}
			mk := func(name string) img {
				i := img{name: name}
				i.config = g.pushBlob(t, name, []byte(`{"architecture":"amd64","os":"linux","note":"`+name+`"}`))
				i.layer = g.pushBlob(t, name, []byte("layer of "+name))
				i.manifest = ociImage(i.config, "first", i.layer)
				i.again = ociImage(i.config, "again", i.layer)
				if status, code, err := g.putManifest(name, "v1", i.manifest); err != nil || status != http.StatusCreated {
					t.Fatalf("push %s: %d %s %v", name, status, code, err)
				}
				i.manifestDigest = digest.FromBytes(i.manifest)
				if status, body, _, err := g.do("DELETE", "/v2/"+name+"/manifests/"+i.manifestDigest.String(), "", nil); err != nil || status != http.StatusAccepted {
					t.Fatalf("delete %s: %d %s %v", name, status, body, err)
				}
				return i
			}
			before, during := mk("a/before"), mk("b/during")
			ageTree(t, g.root, 24*time.Hour)

			for _, b := range []manifestRef{before.config, before.layer} {
				if status, _, _, err := g.do("HEAD", "/v2/"+before.name+"/blobs/"+b.Digest.String(), "", nil); err != nil || status != http.StatusOK {
					t.Fatalf("HEAD %s: %d %v", b.Digest, status, err)
				}
			}
			hooked := &statHook{Driver: g.d, paths: map[string]bool{
				blobFile(during.config.Digest): true,
				blobFile(during.layer.Digest):  true,
			}}
			var duringStatus int
			var duringCode string
			var duringErr error
			hooked.hook = func() {
				duringStatus, duringCode, duringErr = g.putManifest(during.name, "v2", during.again)
			}
			// One worker: the sweep reaches one blob of during's at a
			// time, so the hook runs before the collection touches any.
			gc := storage.NewWithOptions(hooked, storage.Options{GracePeriod: time.Hour})
			rep, err := gc.CollectGarbage(context.Background(), storage.GCOptions{Workers: 1, Unsafe: unsafe})
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("collection: %+v", rep)

			// During: the push was acknowledged in either case.
			if duringErr != nil || duringStatus != http.StatusCreated {
				t.Fatalf("push of %s during the collection: %d %s %v (hook ran: %v)", during.name, duringStatus, duringCode, duringErr, duringStatus != 0)
			}
			_, duringPull := g.pull(during.name, "v2")
			// Before: the push after the collection relies on the HEADs.
			beforeStatus, beforeCode, err := g.putManifest(before.name, "v2", before.again)
			if err != nil {
				t.Fatal(err)
			}

			if !unsafe {
				if duringPull != nil {
					t.Errorf("an image pushed during the collection (201) does not pull: %v", duringPull)
				}
				if beforeStatus != http.StatusCreated {
					t.Errorf("push relying on HEADs before the collection: %d %s, want 201", beforeStatus, beforeCode)
				} else if _, err := g.pull(before.name, "v2"); err != nil {
					t.Errorf("an image pushed after HEADs before the collection does not pull: %v", err)
				}
				// What no request relied on did go: both first manifests.
				if rep.BlobsDeleted != 2 {
					t.Errorf("%d blobs deleted, want 2 (the two deleted manifests)", rep.BlobsDeleted)
				}
				return
			}
			// Without the protocol, both promises are broken.
			if duringPull == nil {
				t.Errorf("unsafe: the image pushed during the collection still pulls; the test shows nothing")
			} else {
				t.Logf("unsafe: acknowledged image %s:v2 is broken: %v", during.name, duringPull)
			}
			if beforeStatus != http.StatusBadRequest || beforeCode != "MANIFEST_BLOB_UNKNOWN" {
				t.Errorf("unsafe: push relying on HEADs: %d %s, want 400 MANIFEST_BLOB_UNKNOWN", beforeStatus, beforeCode)
			}
		})
	}
}
