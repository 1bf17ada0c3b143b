package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/berth-registry/berth/storage/driver"
)

// gate holds the upstream requests whose "METHOD kind" (as upstreamCounter
// names them) begins with a prefix, from hold until release; with broken
// set, the body of a held request fails after its first bytes.
type gate struct {
	inner   http.RoundTripper
	mu      sync.Mutex
	match   string
	open    chan struct{}
	arrived atomic.Int32
	broken  atomic.Bool
}

// gateCounter puts a gate between counter and its upstream.
func gateCounter(c *upstreamCounter) *gate {
	c.mu.Lock()
	defer c.mu.Unlock()
	g := &gate{inner: c.inner}
	c.inner = g
	return g
}

func (g *gate) hold(prefix string) {
	g.mu.Lock()
	g.match, g.open = prefix, make(chan struct{})
	g.mu.Unlock()
	g.arrived.Store(0)
}

func (g *gate) release() {
	g.mu.Lock()
	close(g.open)
	g.match = ""
	g.mu.Unlock()
}

func (g *gate) RoundTrip(req *http.Request) (*http.Response, error) {
	kind := req.Method + " other"
	if i := strings.LastIndex(req.URL.Path, "/blobs/"); i >= 0 {
		kind = req.Method + " blob " + req.URL.Path[i+len("/blobs/"):]
	} else if i := strings.LastIndex(req.URL.Path, "/manifests/"); i >= 0 {
		kind = req.Method + " manifest " + req.URL.Path[i+len("/manifests/"):]
	}
	g.mu.Lock()
	held := g.match != "" && strings.HasPrefix(kind, g.match)
	open := g.open
	g.mu.Unlock()
	if held {
		g.arrived.Add(1)
		select {
		case <-open:
		case <-req.Context().Done():
			return nil, req.Context().Err()
		}
	}
	resp, err := g.inner.RoundTrip(req)
	if err == nil && held && g.broken.Load() && resp.StatusCode == http.StatusOK {
		resp.Body = &brokenBody{ReadCloser: resp.Body, left: 100}
	}
	return resp, err
}

// brokenBody fails after left bytes, as a connection cut short.
type brokenBody struct {
	io.ReadCloser
	left int
}

func (b *brokenBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		return 0, io.ErrUnexpectedEOF
	}
	if len(p) > b.left {
		p = p[:b.left]
	}
	n, err := b.ReadCloser.Read(p)
	b.left -= n
	return n, err
}

// waitHeld waits until the gate holds a request; then it lets the others,
// which the mirror should keep waiting for that one, reach the mirror.
func (g *gate) waitHeld(t *testing.T) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); g.arrived.Load() == 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no upstream request reached the gate within 10s")
		}
	}
	time.Sleep(300 * time.Millisecond)
}

// answer is a response as a concurrent client saw it.
type answer struct {
	status int
	body   []byte
	err    error
}

// getAll sends n GETs of path to the mirror at once and returns what each
// got.
func getAll(s *testServer, n int, path string, header http.Header) []answer {
	out := make([]answer, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			req, err := http.NewRequestWithContext(context.Background(), "GET", s.url(path), nil)
			if err != nil {
				out[i].err = err
				return
			}
			req.Header = header.Clone()
			resp, err := (&http.Client{Transport: s.tr}).Do(req)
			if err != nil {
				out[i].err = err
				return
			}
			defer resp.Body.Close()
			out[i].status = resp.StatusCode
			out[i].body, out[i].err = io.ReadAll(resp.Body)
		})
	}
	wg.Wait()
	return out
}

func sha256Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// TestPullThroughManifestOnce: concurrent pulls of one manifest through a
// mirror of an upstream behind the real token server make one upstream
// request: a GET for a tag not cached, a HEAD for a cached tag, a GET for
// a digest not cached.
func TestPullThroughManifestOnce(t *testing.T) {
	up, _ := startTokenAuthRegistry(t, nil)
	alice := append(up.opts(t), remote.WithAuth(&authn.Basic{Username: "alice", Password: "alice-password"}))
	img, other := randomImage(t, 1), randomImage(t, 1)
	if err := remote.Write(up.repo(t, "team/app").Tag("v1"), img, alice...); err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(up.repo(t, "team/app").Tag("other"), other, alice...); err != nil {
		t.Fatal(err)
	}
	mirror, counters := startMirror(t, 0, map[string]*testServer{"hub": up}, "alice", "alice-password")
	c := counters["hub"]
	g := gateCounter(c)
	mt, err := img.MediaType()
	if err != nil {
		t.Fatal(err)
	}
	accept := http.Header{"Accept": {string(mt)}}
	const clients = 4
	pullAll := func(ref, hold string, want v1.Image) {
		t.Helper()
		g.hold(hold)
		done := make(chan []answer)
		go func() { done <- getAll(mirror, clients, "/v2/hub/team/app/manifests/"+ref, accept) }()
		g.waitHeld(t)
		g.release()
		wantBody, err := want.RawManifest()
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range <-done {
			if a.err != nil || a.status != 200 || !bytes.Equal(a.body, wantBody) {
				t.Errorf("a concurrent pull of %s: %d %v, want 200 and the upstream's manifest", ref, a.status, a.err)
			}
		}
	}

	pullAll("v1", "GET manifest v1", img)
	if n := c.count("GET manifest v1"); n != 1 {
		t.Errorf("%d concurrent pulls of an uncached tag: %d upstream GETs, want 1", clients, n)
	}
	pullAll("v1", "HEAD manifest v1", img)
	if h, n := c.count("HEAD manifest v1"), c.count("GET manifest v1"); h != 1 || n != 1 {
		t.Errorf("%d concurrent pulls of a cached tag: %d HEADs and %d GETs upstream in all, want 1 and 1", clients, h, n)
	}
	dg := imageDigest(t, other).String()
	pullAll(dg, "GET manifest "+dg, other)
	if n := c.count("GET manifest " + dg); n != 1 {
		t.Errorf("%d concurrent pulls of an uncached digest: %d upstream GETs, want 1", clients, n)
	}
}

// TestPullThroughBlobAcrossRepositories: one blob pulled at once through
// two mirrored repositories of one upstream (behind the real token server)
// is downloaded once, stored once and linked into both; a third repository
// pulling it later links it too, without a download; each link follows a
// HEAD that confirms the upstream repository has the blob, so a repository
// whose upstream lacks it does not serve it.
func TestPullThroughBlobAcrossRepositories(t *testing.T) {
	up, _ := startTokenAuthRegistry(t, nil)
	alice := append(up.opts(t), remote.WithAuth(&authn.Basic{Username: "alice", Password: "alice-password"}))
	img := randomImage(t, 1)
	for _, repo := range []string{"team/a", "team/b", "team/c"} {
		if err := remote.Write(up.repo(t, repo).Tag("v1"), img, alice...); err != nil {
			t.Fatal(err)
		}
	}
	if err := remote.Write(up.repo(t, "team/d").Tag("v1"), randomImage(t, 1), alice...); err != nil {
		t.Fatal(err)
	}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	ldg, err := layers[0].Digest()
	if err != nil {
		t.Fatal(err)
	}
	dg := ldg.String()
	root := t.TempDir()
	mirror, counters := startMirrorWith(t, root, map[string]*testServer{"hub": up}, "alice", "alice-password", func(*Config) {})
	c := counters["hub"]
	g := gateCounter(c)
	linked := func(repo string) bool {
		_, err := os.Stat(filepath.Join(root, "docker/registry/v2/repositories", repo, "_layers/sha256", ldg.Hex, "link"))
		return err == nil
	}

	g.hold("GET blob " + dg)
	answers := make([][]answer, 2)
	var wg sync.WaitGroup
	for i, repo := range []string{"hub/team/a", "hub/team/b"} {
		wg.Go(func() { answers[i] = getAll(mirror, 1, "/v2/"+repo+"/blobs/"+dg, nil) })
	}
	g.waitHeld(t)
	g.release()
	wg.Wait()
	for i, a := range answers {
		if a[0].err != nil || a[0].status != 200 || sha256Hex(a[0].body) != dg {
			t.Errorf("client %d: %d %v, want 200 and the blob", i, a[0].status, a[0].err)
		}
	}
	if n, h := c.count("GET blob "+dg), c.count("HEAD blob "+dg); n != 1 || h != 1 {
		t.Errorf("one blob through two repositories at once: %d upstream GETs (want 1), %d HEADs (want 1)", n, h)
	}
	if !linked("hub/team/a") || !linked("hub/team/b") {
		t.Errorf("the blob is not linked into both repositories: a %v, b %v", linked("hub/team/a"), linked("hub/team/b"))
	}

	// Later, through a third repository: linked, not downloaded.
	if a := getAll(mirror, 1, "/v2/hub/team/c/blobs/"+dg, nil)[0]; a.status != 200 || sha256Hex(a.body) != dg {
		t.Errorf("the blob through a third repository: %d %v", a.status, a.err)
	}
	if n, h := c.count("GET blob "+dg), c.count("HEAD blob "+dg); n != 1 || h != 2 || !linked("hub/team/c") {
		t.Errorf("a stored blob through a third repository: %d upstream GETs (want 1), %d HEADs (want 2), linked %v", n, h, linked("hub/team/c"))
	}

	// A repository whose upstream lacks the blob does not get it.
	if a := getAll(mirror, 1, "/v2/hub/team/d/blobs/"+dg, nil)[0]; a.status != 404 || linked("hub/team/d") {
		t.Errorf("the blob through a repository whose upstream lacks it: %d (want 404), linked %v", a.status, linked("hub/team/d"))
	}
}

// failingDriver fails every write with a full disk while full is set.
type failingDriver struct {
	driver.Driver
	full atomic.Bool
}

func (d *failingDriver) err(p string) error {
	if d.full.Load() {
		return &driver.PathError{Op: "write", Path: p, Err: fmt.Errorf("%w: %w", driver.ErrStorageFull, syscall.ENOSPC)}
	}
	return nil
}

func (d *failingDriver) PutContent(ctx context.Context, p string, b []byte) error {
	if err := d.err(p); err != nil {
		return err
	}
	return d.Driver.PutContent(ctx, p, b)
}

func (d *failingDriver) Writer(ctx context.Context, p string, append bool) (driver.FileWriter, error) {
	if err := d.err(p); err != nil {
		return nil, err
	}
	return d.Driver.Writer(ctx, p, append)
}

func (d *failingDriver) Move(ctx context.Context, src, dst string) error {
	if err := d.err(dst); err != nil {
		return err
	}
	return d.Driver.Move(ctx, src, dst)
}

// TestPullThroughBlobFailures: clients waiting for another's download of a
// blob get 503 when storing it fails (a full disk), as any write to a full
// registry does, and 502 only when the upstream fails; the client that
// started the download does not get a whole blob either way.
func TestPullThroughBlobFailures(t *testing.T) {
	up := startServer(t, t.TempDir())
	img := randomImage(t, 1)
	if err := remote.Write(up.repo(t, "app").Tag("v1"), img, up.opts(t)...); err != nil {
		t.Fatal(err)
	}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	ldg, err := layers[0].Digest()
	if err != nil {
		t.Fatal(err)
	}
	dg := ldg.String()
	fd := &failingDriver{}
	mirror, counters := startMirrorWith(t, t.TempDir(), map[string]*testServer{"up": up}, "", "", func(c *Config) {
		c.wrapDriver = func(d driver.Driver) driver.Driver { fd.Driver = d; return fd }
	})
	g := gateCounter(counters["up"])
	path := "/v2/up/app/blobs/" + dg

	for _, tc := range []struct {
		fault  string
		status int
		body   string
	}{
		{"storage", 503, "storage is full"},
		{"upstream", 502, "upstream registry"},
	} {
		g.hold("GET blob " + dg)
		first := make(chan answer, 1)
		go func() { first <- getAll(mirror, 1, path, nil)[0] }()
		g.waitHeld(t)
		waiting := make(chan []answer, 1)
		go func() { waiting <- getAll(mirror, 2, path, nil) }()
		time.Sleep(300 * time.Millisecond) // the waiters reach the mirror
		fd.full.Store(tc.fault == "storage")
		g.broken.Store(tc.fault == "upstream")
		g.release()
		for _, a := range <-waiting {
			if a.status != tc.status || !bytes.Contains(a.body, []byte(tc.body)) {
				t.Errorf("%s failure: a waiting client got %d %s, want %d naming %q", tc.fault, a.status, a.body, tc.status, tc.body)
			}
		}
		if a := <-first; a.err == nil && a.status == 200 && sha256Hex(a.body) == dg {
			t.Errorf("%s failure: the first client got the whole blob", tc.fault)
		}
		fd.full.Store(false)
		g.broken.Store(false)
	}
	if a := getAll(mirror, 1, path, nil)[0]; a.status != 200 || sha256Hex(a.body) != dg {
		t.Errorf("after the failures: %d %v, want 200 and the blob", a.status, a.err)
	}
}
