package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// upstreamCounter is the transport a mirror reaches its upstream through:
// it counts the upstream requests by kind, and can hold a blob download
// after its first bytes until released.
type upstreamCounter struct {
	mu    sync.Mutex
	inner http.RoundTripper // under mu
	// counts: "GET blob sha256:…", "GET manifest v1", …
	counts map[string]int
	// hold, when set, makes a blob GET's body stop after holdAfter bytes
	// until hold is closed; held is closed when that happens.
	hold      chan struct{}
	holdAfter int64
	held      chan struct{}
	heldOnce  sync.Once
}

func newUpstreamCounter(inner http.RoundTripper) *upstreamCounter {
	return &upstreamCounter{inner: inner, counts: map[string]int{}}
}

func (u *upstreamCounter) RoundTrip(req *http.Request) (*http.Response, error) {
	kind := "other"
	path := req.URL.Path
	if i := strings.LastIndex(path, "/blobs/"); i >= 0 {
		kind = "blob " + path[i+len("/blobs/"):]
	} else if i := strings.LastIndex(path, "/manifests/"); i >= 0 {
		kind = "manifest " + path[i+len("/manifests/"):]
	}
	u.mu.Lock()
	u.counts[req.Method+" "+kind]++
	hold, after, held, inner := u.hold, u.holdAfter, u.held, u.inner
	u.mu.Unlock()
	resp, err := inner.RoundTrip(req)
	if err == nil && hold != nil && req.Method == http.MethodGet && strings.HasPrefix(kind, "blob ") && resp.StatusCode == 200 {
		resp.Body = &heldBody{ReadCloser: resp.Body, left: after, hold: hold, held: func() { u.heldOnce.Do(func() { close(held) }) }}
	}
	return resp, err
}

// count returns how many requests of method and kind prefix were made.
func (u *upstreamCounter) count(prefix string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	n := 0
	for k, v := range u.counts {
		if strings.HasPrefix(k, prefix) {
			n += v
		}
	}
	return n
}

type heldBody struct {
	io.ReadCloser
	left int64
	hold chan struct{}
	held func() // called when the body starts to wait for hold
}

func (b *heldBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		b.held()
		<-b.hold
		return b.ReadCloser.Read(p)
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.ReadCloser.Read(p)
	b.left -= int64(n)
	return n, err
}

// startMirror starts a registry whose repositories under each prefix
// mirror the upstream given with it, through counters, with tagcheck.
func startMirror(t *testing.T, tagCheck time.Duration, ups map[string]*testServer, user, password string) (*testServer, map[string]*upstreamCounter) {
	t.Helper()
	return startMirrorWith(t, t.TempDir(), ups, user, password, func(c *Config) { c.Proxy.TagCheck = tagCheck })
}

// startMirrorWith is startMirror with root as its data directory and
// configure to adjust its configuration.
func startMirrorWith(t *testing.T, root string, ups map[string]*testServer, user, password string, configure func(*Config)) (*testServer, map[string]*upstreamCounter) {
	t.Helper()
	counters := map[string]*upstreamCounter{}
	var routes = map[string]http.RoundTripper{}
	for prefix, up := range ups {
		counters[prefix] = newUpstreamCounter(up.tr)
		routes[up.addr] = counters[prefix]
	}
	mirror := startServerWith(t, root, func(c *Config) {
		configure(c)
		for prefix, up := range ups {
			c.Proxy.Upstreams = append(c.Proxy.Upstreams, UpstreamConfig{Prefix: prefix, RemoteURL: "https://" + up.addr, Username: user, Password: password})
		}
		// One transport for all upstreams, routing by host to each
		// upstream's own (they share a name, not a port); the token
		// server's host goes with the upstream that knows it.
		c.proxyTransport = roundTripFunc(func(req *http.Request) (*http.Response, error) {
			if rt, ok := routes[req.URL.Host]; ok {
				return rt.RoundTrip(req)
			}
			for _, up := range ups {
				if up.aliasPort(authHost) != "" {
					return up.tr.RoundTrip(req)
				}
			}
			return nil, io.ErrUnexpectedEOF
		})
	}, nil)
	return mirror, counters
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// TestPullThroughCache runs a registry with two mirrored prefixes, one of
// an upstream with token auth (the real token server), one of an open
// upstream, and ordinary repositories beside them.
func TestPullThroughCache(t *testing.T) {
	secure, _ := startTokenAuthRegistry(t, nil)
	open := startServer(t, t.TempDir())
	alice := remote.WithAuth(&authn.Basic{Username: "alice", Password: "alice-password"})
	img1, img2 := randomImage(t, 3), randomImage(t, 2)
	upRepo := secure.repo(t, "team/app")
	if err := remote.Write(upRepo.Tag("v1"), img1, append(secure.opts(t), alice)...); err != nil {
		t.Fatal(err)
	}
	openImg := randomImage(t, 1)
	if err := remote.Write(open.repo(t, "library/base").Tag("latest"), openImg, open.opts(t)...); err != nil {
		t.Fatal(err)
	}

	const ttl = 2 * time.Second // the tagcheck
	mirror, counters := startMirror(t, ttl, map[string]*testServer{"hub": secure, "mirrors/open": open}, "alice", "alice-password")
	hub := counters["hub"]
	local := mirror.repo(t, "hub/team/app")
	pull := func(ref string) v1.Image {
		t.Helper()
		var r = local.Tag(ref)
		img, err := remote.Image(r, mirror.opts(t)...)
		if err != nil {
			t.Fatalf("pull %s through the mirror: %v", r, err)
		}
		return img
	}

	// First pull: the upstream's image, each blob fetched once.
	fetched := time.Now()
	checkSameImage(t, img1, pull("v1"))
	if n := hub.count("GET blob"); n != 4 {
		t.Errorf("first pull fetched %d blobs from the upstream, want 4 (config and 3 layers)", n)
	}
	if n := hub.count("GET manifest v1"); n != 1 {
		t.Errorf("first pull fetched the manifest %d times, want 1", n)
	}

	// Again, within the ttl: nothing from the upstream.
	checkSameImage(t, img1, pull("v1"))
	if time.Since(fetched) < ttl {
		if n := hub.count("GET manifest"); n != 1 {
			t.Errorf("a pull within the ttl asked the upstream for the manifest (%d GETs in all)", n)
		}
	}
	if n := hub.count("GET blob"); n != 4 {
		t.Errorf("a second pull fetched blobs again: %d blob GETs in all, want 4", n)
	}

	// The tag moves upstream: seen only once the ttl has passed.
	moved := time.Now()
	if err := remote.Write(upRepo.Tag("v1"), img2, append(secure.opts(t), alice)...); err != nil {
		t.Fatal(err)
	}
	got := pull("v1")
	if time.Since(fetched) < ttl && imageDigest(t, got) != imageDigest(t, img1) {
		t.Errorf("within the ttl the mirror served %s, want the cached %s", imageDigest(t, got), imageDigest(t, img1))
	}
	time.Sleep(time.Until(moved.Add(ttl + 100*time.Millisecond)))
	checkSameImage(t, img2, pull("v1"))

	// The second prefix mirrors the other upstream.
	gotOpen, err := remote.Image(mirror.repo(t, "mirrors/open/library/base").Tag("latest"), mirror.opts(t)...)
	if err != nil {
		t.Fatal(err)
	}
	checkSameImage(t, openImg, gotOpen)
	if counters["mirrors/open"].count("GET blob") != 2 || hub.count("GET blob") != 4+3 {
		t.Errorf("blob GETs: open %d (want 2), hub %d (want 7)", counters["mirrors/open"].count("GET blob"), hub.count("GET blob"))
	}

	// A repository outside the prefixes takes pushes; a mirrored one
	// refuses them with 405 UNSUPPORTED.
	mine := randomImage(t, 1)
	if err := remote.Write(mirror.repo(t, "team/mine").Tag("v1"), mine, mirror.opts(t)...); err != nil {
		t.Fatalf("push to an ordinary repository: %v", err)
	}
	if got, err := remote.Image(mirror.repo(t, "team/mine").Tag("v1"), mirror.opts(t)...); err != nil {
		t.Fatal(err)
	} else {
		checkSameImage(t, mine, got)
	}
	if err := remote.Write(mirror.repo(t, "hub/team/app").Tag("v9"), mine, mirror.opts(t)...); statusOf(err) != 405 {
		t.Errorf("push into a mirrored prefix: %v, want 405", err)
	}
	for _, req := range []struct{ method, path string }{
		{"POST", "/v2/hub/team/other/blobs/uploads/"},
		{"PUT", "/v2/hub/team/app/manifests/v1"},
		{"DELETE", "/v2/mirrors/open/library/base/manifests/latest"},
	} {
		resp, body := mirror.do(t, req.method, mirror.url(req.path), nil, nil)
		if resp.StatusCode != 405 || !bytes.Contains(body, []byte(`"UNSUPPORTED"`)) || !bytes.Contains(body, []byte("pull-through cache")) {
			t.Errorf("%s %s: %d %s, want 405 UNSUPPORTED naming the pull-through cache", req.method, req.path, resp.StatusCode, body)
		}
	}

	// The upstream stops: what is cached is still served, even a tag past
	// its ttl; what is not is a 502.
	secure.stop()
	time.Sleep(time.Until(time.Now().Add(ttl + 100*time.Millisecond)))
	before := hub.count("")
	checkSameImage(t, img2, pull("v1"))
	if hub.count("") == before {
		t.Errorf("a pull of a tag past its ttl did not try the upstream")
	}
	cached, err := remote.Image(local.Digest(imageDigest(t, img1).String()), mirror.opts(t)...)
	if err != nil {
		t.Fatalf("pull by digest with the upstream down: %v", err)
	}
	checkSameImage(t, img1, cached)
	// (A raw request: go-containerregistry would retry a 502 with backoff.)
	resp, body := mirror.do(t, "GET", mirror.url("/v2/hub/team/app/manifests/never-pulled"), nil, nil)
	if resp.StatusCode != 502 || !bytes.Contains(body, []byte(`"UNAVAILABLE"`)) {
		t.Errorf("an uncached tag with the upstream down: %d %s, want 502 UNAVAILABLE", resp.StatusCode, body)
	}
}

// TestPullThroughBlobOnce: a blob not yet cached is streamed to the first
// client while it is stored (its first bytes arrive while the upstream
// still holds the rest), and concurrent pulls of it fetch it from the
// upstream once.
func TestPullThroughBlobOnce(t *testing.T) {
	up := startServer(t, t.TempDir())
	img, err := random.Image(4<<20, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(up.repo(t, "big/app").Tag("v1"), img, up.opts(t)...); err != nil {
		t.Fatal(err)
	}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	dg, err := layers[0].Digest()
	if err != nil {
		t.Fatal(err)
	}
	mirror, counters := startMirror(t, time.Hour, map[string]*testServer{"up": up}, "", "")
	c := counters["up"]
	const firstBytes = 1 << 20
	c.mu.Lock()
	c.hold, c.holdAfter, c.held = make(chan struct{}), firstBytes, make(chan struct{})
	hold, held := c.hold, c.held
	c.mu.Unlock()

	ref := mirror.repo(t, "up/big/app").Digest(dg.String())
	open := func() (io.ReadCloser, error) {
		l, err := remote.Layer(ref, mirror.opts(t)...)
		if err != nil {
			return nil, err
		}
		return l.Compressed()
	}
	first, err := open()
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	head := make([]byte, firstBytes)
	if _, err := io.ReadFull(first, head); err != nil {
		t.Fatalf("the first client could not read the first MiB while the upstream holds the rest: %v", err)
	}
	select {
	case <-held:
	case <-time.After(10 * time.Second):
		t.Fatal("the upstream download was not held after its first MiB")
	}

	// Others ask for it while the download is held.
	const others = 3
	sums := make(chan string, others)
	var wg sync.WaitGroup
	for range others {
		wg.Go(func() {
			rc, err := open()
			if err != nil {
				t.Error(err)
				sums <- ""
				return
			}
			defer rc.Close()
			h := sha256.New()
			if _, err := io.Copy(h, rc); err != nil {
				t.Error(err)
			}
			sums <- "sha256:" + hex.EncodeToString(h.Sum(nil))
		})
	}
	time.Sleep(300 * time.Millisecond) // let them reach the mirror
	close(hold)
	h := sha256.New()
	h.Write(head)
	if _, err := io.Copy(h, first); err != nil {
		t.Fatal(err)
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != dg.String() {
		t.Fatalf("first client got %s, want %s", got, dg)
	}
	wg.Wait()
	close(sums)
	for s := range sums {
		if s != dg.String() {
			t.Errorf("a concurrent client got %s, want %s", s, dg)
		}
	}
	if n := c.count("GET blob " + dg.String()); n != 1 {
		t.Errorf("the upstream served the blob %d times, want 1", n)
	}
}

// TestPullThroughAuthorization: a mirror with token auth authorizes
// mirrored repositories as any other (pull rights on the name the client
// uses), and refuses a push there only after authorization.
func TestPullThroughAuthorization(t *testing.T) {
	up := startServer(t, t.TempDir())
	img := randomImage(t, 1)
	if err := remote.Write(up.repo(t, "app").Tag("v1"), img, up.opts(t)...); err != nil {
		t.Fatal(err)
	}
	counter := newUpstreamCounter(up.tr)
	mirror, _ := startTokenAuthRegistryWith(t, nil, func(c *Config, ts *tokenSetup, certDir string) {
		c.Auth.Token.RootCertBundle = ts.bundleFile
		// team/app here is app upstream.
		c.Proxy.Upstreams = []UpstreamConfig{{Prefix: "team", RemoteURL: "https://" + up.addr}}
		c.proxyTransport = counter
	})
	local := mirror.repo(t, "team/app").Tag("v1")
	as := func(user string) []remote.Option {
		return append(mirror.opts(t), remote.WithAuth(&authn.Basic{Username: user, Password: user + "-password"}))
	}
	if _, err := remote.Image(local, mirror.opts(t)...); statusOf(err) != 401 {
		t.Fatalf("anonymous pull of a mirrored repository: %v, want 401", err)
	}
	if counter.count("") != 0 {
		t.Fatalf("an unauthorized pull reached the upstream (%d requests)", counter.count(""))
	}
	for _, user := range []string{"alice", "bob"} {
		got, err := remote.Image(local, as(user)...)
		if err != nil {
			t.Fatalf("%s pull: %v", user, err)
		}
		checkSameImage(t, img, got)
	}
	// alice may push to team/*: the mirror refuses it. bob may not: he
	// is refused by authorization, as anywhere else.
	if err := remote.Write(mirror.repo(t, "team/app").Tag("v2"), img, as("alice")...); statusOf(err) != 405 {
		t.Errorf("alice push into the mirror: %v, want 405", err)
	}
	if err := remote.Write(mirror.repo(t, "team/app").Tag("v2"), img, as("bob")...); statusOf(err) != 401 && statusOf(err) != 403 {
		t.Errorf("bob push into the mirror: %v, want 401 or 403", err)
	}
}

// TestDistributionProxyMode: Distribution's proxy.remoteurl mirrors every
// repository under its own name, as Docker's registry-mirrors asks for
// library/… names, and nothing can be pushed.
func TestDistributionProxyMode(t *testing.T) {
	up := startServer(t, t.TempDir())
	img := randomImage(t, 2)
	if err := remote.Write(up.repo(t, "library/alpine").Tag("3"), img, up.opts(t)...); err != nil {
		t.Fatal(err)
	}
	counter := newUpstreamCounter(up.tr)
	mirror := startServerWith(t, t.TempDir(), func(c *Config) {
		c.Proxy.RemoteURL = "https://" + up.addr
		c.proxyTransport = counter
	}, nil)
	for range 2 {
		got, err := remote.Image(mirror.repo(t, "library/alpine").Tag("3"), mirror.opts(t)...)
		if err != nil {
			t.Fatal(err)
		}
		checkSameImage(t, img, got)
	}
	// The tag is asked for on every pull, as Distribution does: a HEAD,
	// and no GET while the digest is the cached one.
	if n, h, b := counter.count("GET manifest 3"), counter.count("HEAD manifest 3"), counter.count("GET blob"); n != 1 || h != 1 || b != 3 {
		t.Errorf("two pulls: %d manifest GETs upstream (want 1), %d HEADs (want 1), %d blob GETs (want 3)", n, h, b)
	}
	if _, err := remote.Image(mirror.repo(t, "library/nothing").Tag("3"), mirror.opts(t)...); statusOf(err) != 404 {
		t.Errorf("a repository the upstream lacks: %v, want 404", err)
	}
	if err := remote.Write(mirror.repo(t, "team/mine").Tag("v1"), img, mirror.opts(t)...); statusOf(err) != 405 {
		t.Errorf("push to a whole-registry mirror: %v, want 405", err)
	}
}

// corruptingTransport flips a byte in every blob body while on is set.
type corruptingTransport struct {
	inner http.RoundTripper
	on    bool
	mu    sync.Mutex
}

func (c *corruptingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := c.inner.RoundTrip(req)
	c.mu.Lock()
	on := c.on
	c.mu.Unlock()
	if err == nil && on && req.Method == http.MethodGet && strings.Contains(req.URL.Path, "/blobs/") && resp.StatusCode == 200 {
		b, rerr := io.ReadAll(resp.Body)
		resp.Body.Close()
		if rerr != nil {
			return nil, rerr
		}
		b[len(b)/2] ^= 0xff
		resp.Body = io.NopCloser(bytes.NewReader(b))
	}
	return resp, err
}

// TestPullThroughDigestMismatch: an upstream blob that does not match its
// digest is not stored, and the client does not get it as a whole; once
// the upstream serves the right content, it is fetched again.
func TestPullThroughDigestMismatch(t *testing.T) {
	up := startServer(t, t.TempDir())
	img := randomImage(t, 1)
	if err := remote.Write(up.repo(t, "app").Tag("v1"), img, up.opts(t)...); err != nil {
		t.Fatal(err)
	}
	bad := &corruptingTransport{inner: up.tr, on: true}
	counter := newUpstreamCounter(bad)
	mirror := startServerWith(t, t.TempDir(), func(c *Config) {
		c.Proxy.Upstreams = []UpstreamConfig{{Prefix: "up", RemoteURL: "https://" + up.addr}}
		c.proxyTransport = counter
	}, nil)
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	dg, err := layers[0].Digest()
	if err != nil {
		t.Fatal(err)
	}
	blobURL := mirror.url("/v2/up/app/blobs/" + dg.String())
	// The response is cut short (the mirror learns of the mismatch at the
	// end, and holds the last bytes back until then).
	if resp, err := mirror.tr.RoundTrip(mustRequest(t, "GET", blobURL)); err == nil {
		body, rerr := io.ReadAll(resp.Body)
		resp.Body.Close()
		if rerr == nil && resp.StatusCode == 200 {
			t.Fatalf("the corrupted blob reached the client whole: %d bytes", len(body))
		}
		t.Logf("client got %d, %d bytes, read error %v", resp.StatusCode, len(body), rerr)
	}
	// Nothing stored: the next request asks the upstream again.
	bad.mu.Lock()
	bad.on = false
	bad.mu.Unlock()
	l, err := remote.Layer(mirror.repo(t, "up/app").Digest(dg.String()), mirror.opts(t)...)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := l.Compressed()
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := sha256Of(t, rc); got != dg {
		t.Fatalf("after the upstream recovered: %s, want %s", got, dg)
	}
	if n := counter.count("GET blob " + dg.String()); n != 2 {
		t.Errorf("upstream blob GETs = %d, want 2 (the bad one was not kept)", n)
	}
}

// TestPullThroughForeignLayer: a manifest with a foreign layer (a
// descriptor with urls, as Windows base images have), pushed upstream
// without that layer's blob, comes through the mirror byte for byte, urls
// intact; the mirror never asks the upstream for the foreign blob, and the
// other blobs are pulled through as usual.
func TestPullThroughForeignLayer(t *testing.T) {
	up := startServer(t, t.TempDir())
	base, bm, payload, foreignDigest, manifestDigest := pushForeignManifest(t, up)
	const mt = "application/vnd.docker.distribution.manifest.v2+json"

	mirror, counters := startMirror(t, time.Hour, map[string]*testServer{"mcr": up}, "", "")
	c := counters["mcr"]
	resp, got := mirror.do(t, "GET", mirror.url("/v2/mcr/windows/app/manifests/ltsc"), http.Header{"Accept": {mt}}, nil)
	if resp.StatusCode != 200 {
		t.Fatalf("pull by tag through the mirror: %d %s", resp.StatusCode, got)
	}
	if !bytes.Equal(got, payload) {
		t.Errorf("the mirror changed the manifest:\n got %s\nwant %s", got, payload)
	}
	if ct, dg := resp.Header.Get("Content-Type"), resp.Header.Get("Docker-Content-Digest"); ct != mt || dg != manifestDigest {
		t.Errorf("manifest served as %s %s, want %s %s", ct, dg, mt, manifestDigest)
	}
	if !bytes.Contains(got, []byte(`"urls": ["https://mcr.microsoft.com/v2/windows/nanoserver/blobs/`+foreignDigest+`"]`)) {
		t.Errorf("the foreign layer's urls are gone: %s", got)
	}

	// The rest of the image as a client pulls it: the config and the
	// layer without urls, by digest from the mirror.
	img, err := remote.Image(mirror.repo(t, "mcr/windows/app").Tag("ltsc"), mirror.opts(t)...)
	if err != nil {
		t.Fatal(err)
	}
	wc, err := base.RawConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if gc, err := img.RawConfigFile(); err != nil || !bytes.Equal(gc, wc) {
		t.Errorf("config through the mirror: %v, differs: %v", err, !bytes.Equal(gc, wc))
	}
	l, err := remote.Layer(mirror.repo(t, "mcr/windows/app").Digest(bm.Layers[0].Digest.String()), mirror.opts(t)...)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := l.Compressed()
	if err != nil {
		t.Fatal(err)
	}
	if dg, n := sha256Of(t, rc); dg != bm.Layers[0].Digest || n != bm.Layers[0].Size {
		t.Errorf("layer through the mirror: %s (%d bytes), want %s (%d)", dg, n, bm.Layers[0].Digest, bm.Layers[0].Size)
	}

	if n := c.count("GET blob "+foreignDigest) + c.count("HEAD blob "+foreignDigest); n != 0 {
		t.Errorf("the mirror asked the upstream for the foreign layer %d times, want 0", n)
	}
	if n := c.count("GET blob"); n != 2 {
		t.Errorf("blob GETs upstream = %d, want 2 (config and the distributable layer)", n)
	}
}
