package main

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/storage"
)

// imageBlobs returns the digests of img's manifest, config and layers.
func imageBlobs(t *testing.T, img v1.Image) []digest.Digest {
	t.Helper()
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	out := []digest.Digest{digest.Digest(imageDigest(t, img).String()), digest.Digest(m.Config.Digest.String())}
	for _, l := range m.Layers {
		out = append(out, digest.Digest(l.Digest.String()))
	}
	return out
}

// TestPullThroughTTL: with proxy ttl set and nothing else (no storage.gc),
// the mirror's own collections remove a cached image once its tag was
// last fetched more than ttl ago: tag, fetch record, manifest and blobs;
// a new pull fetches it again. A storage.gc.retention rule for other
// mirrored repositories wins there: their content stays. Tags are checked
// with a HEAD on every pull, which does not make them fresh.
func TestPullThroughTTL(t *testing.T) {
	up, _ := startTokenAuthRegistry(t, nil)
	alice := append(up.opts(t), remote.WithAuth(&authn.Basic{Username: "alice", Password: "alice-password"}))
	expiring, kept := randomImage(t, 2), randomImage(t, 1)
	if err := remote.Write(up.repo(t, "team/app").Tag("v1"), expiring, alice...); err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(up.repo(t, "team/keep").Tag("v1"), kept, alice...); err != nil {
		t.Fatal(err)
	}
	const ttl = 2 * time.Second
	root := t.TempDir()
	mirror, counters := startMirrorWith(t, root, map[string]*testServer{"hub": up}, "alice", "alice-password", func(c *Config) {
		c.Proxy.TTL = ttl
		c.Storage.GC.GracePeriod = time.Second
		c.Storage.GC.Retention = []RetentionConfig{{Repositories: "hub/team/keep", KeepLast: 1}}
	})
	c := counters["hub"]
	pull := func(repo string, want v1.Image) {
		t.Helper()
		got, err := remote.Image(mirror.repo(t, repo).Tag("v1"), mirror.opts(t)...)
		if err != nil {
			t.Fatalf("pull %s through the mirror: %v", repo, err)
		}
		checkSameImage(t, want, got)
	}
	record := filepath.Join(root, "docker/registry/v2/_berth/proxy/fetched/hub/team/app/@v1")
	tagDir := filepath.Join(root, "docker/registry/v2/repositories/hub/team/app/_manifests/tags/v1")

	pull("hub/team/app", expiring)
	pull("hub/team/keep", kept)
	pull("hub/team/app", expiring)
	if n, h := c.count("GET manifest v1"), c.count("HEAD manifest v1"); n != 2 || h != 1 {
		t.Errorf("manifest requests upstream: %d GETs (want 2, one per repository), %d HEADs (want 1, the second pull)", n, h)
	}
	for _, dg := range imageBlobs(t, expiring) {
		if !blobStored(t, root, dg) {
			t.Fatalf("%s is not cached after the pull", dg)
		}
	}
	if _, err := os.Stat(record); err != nil {
		t.Fatalf("no fetch record after the pull: %v", err)
	}
	blobGETs := c.count("GET blob")

	// The registry's own collections expire it.
	deadline := time.Now().Add(30 * time.Second)
	for {
		gone := true
		for _, dg := range imageBlobs(t, expiring) {
			gone = gone && !blobStored(t, root, dg)
		}
		if gone {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the cached image is still stored %v after its ttl", 30*time.Second)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, p := range []string{tagDir, record} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s outlived the expired tag: %v", p, err)
		}
	}
	for _, dg := range imageBlobs(t, kept) {
		if !blobStored(t, root, dg) {
			t.Errorf("%s of hub/team/keep, which a retention rule covers, was removed", dg)
		}
	}

	// Pulled again: fetched again.
	pull("hub/team/app", expiring)
	if n, b := c.count("GET manifest v1"), c.count("GET blob"); n != 3 || b != blobGETs+3 {
		t.Errorf("after expiry: %d manifest GETs upstream (want 3), %d new blob GETs (want 3)", n, b-blobGETs)
	}
}

// TestConfigProxyRetention: the ttl rules follow the user's retention
// rules (which win for the repositories they match), per upstream, and a
// registry with storage.gc off collects for the ttl alone, keeping what a
// user rule matches.
func TestConfigProxyRetention(t *testing.T) {
	t.Setenv("REGISTRY_PROXY_UPSTREAMS", `[{prefix: hub, remoteurl: "https://registry-1.docker.io", ttl: 5m}, {prefix: mcr, remoteurl: "https://mcr.microsoft.com", ttl: 0s}, {prefix: ghcr, remoteurl: "https://ghcr.io"}]`)
	t.Setenv("REGISTRY_STORAGE_GC_RETENTION", `[{repositories: "hub/mine/**", keeplast: 3}]`)
	c, err := loadConfig("")
	if err != nil {
		t.Fatal(err)
	}
	opts := c.gcOptions()
	want := []storage.RetentionRule{
		{Repositories: "hub/mine/**", KeepLast: 3},
		{Repositories: "hub/**", TagsOlderThan: 5 * time.Minute, UntaggedOlderThan: 5 * time.Minute},
		{Repositories: "ghcr/**", TagsOlderThan: 168 * time.Hour, UntaggedOlderThan: 168 * time.Hour},
	}
	same := func(got, want []storage.RetentionRule) bool {
		if len(got) != len(want) {
			return false
		}
		for i := range got {
			g, w := got[i], want[i]
			if g.Repositories != w.Repositories || g.KeepLast != w.KeepLast || g.TagsOlderThan != w.TagsOlderThan || g.UntaggedOlderThan != w.UntaggedOlderThan {
				return false
			}
		}
		return true
	}
	if !same(opts.Retention, want) {
		t.Errorf("gc retention = %+v, want %+v", opts.Retention, want)
	}
	popts, interval, ok := c.proxyGCOptions()
	want[0] = storage.RetentionRule{Repositories: "hub/mine/**"} // keeps everything
	if !ok || interval != 5*time.Minute || !same(popts.Retention, want) || popts.DeleteUntagged {
		t.Errorf("ttl collections: %v every %v with %+v, want every 5m with %+v", ok, interval, popts.Retention, want)
	}
	t.Setenv("REGISTRY_PROXY_TTL", "0s")
	t.Setenv("REGISTRY_PROXY_UPSTREAMS", `[{prefix: hub, remoteurl: "https://registry-1.docker.io"}]`)
	if c, err := loadConfig(""); err != nil {
		t.Fatal(err)
	} else if _, _, ok := c.proxyGCOptions(); ok {
		t.Error("ttl 0: the registry collects for it")
	}
}

// statusTransport answers the requests whose "METHOD kind" begins with
// prefix with status itself, while prefix is set; others pass.
type statusTransport struct {
	inner  http.RoundTripper
	mu     sync.Mutex
	prefix string
	status int
}

func (s *statusTransport) set(prefix string, status int) {
	s.mu.Lock()
	s.prefix, s.status = prefix, status
	s.mu.Unlock()
}

func (s *statusTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	kind := req.Method + " other"
	if i := strings.LastIndex(req.URL.Path, "/manifests/"); i >= 0 {
		kind = req.Method + " manifest " + req.URL.Path[i+len("/manifests/"):]
	}
	s.mu.Lock()
	prefix, status := s.prefix, s.status
	s.mu.Unlock()
	if prefix != "" && strings.HasPrefix(kind, prefix) {
		return &http.Response{StatusCode: status, Status: http.StatusText(status), Header: http.Header{},
			Body: http.NoBody, Request: req, ProtoMajor: 1, ProtoMinor: 1}, nil
	}
	return s.inner.RoundTrip(req)
}

// TestPullThroughTagCheck: with tagcheck 0 every pull of a cached tag is
// one HEAD upstream and no GET while the digest is the same; a tag moved
// upstream is fetched (HEAD, then GET); a HEAD answered 429 or 503 serves
// the cached manifest with no GET; a tag the upstream no longer has is
// 404. The upstream is behind the real token server.
func TestPullThroughTagCheck(t *testing.T) {
	up, _ := startTokenAuthRegistry(t, nil)
	alice := append(up.opts(t), remote.WithAuth(&authn.Basic{Username: "alice", Password: "alice-password"}))
	img1, img2 := randomImage(t, 1), randomImage(t, 1)
	if err := remote.Write(up.repo(t, "team/app").Tag("v1"), img1, alice...); err != nil {
		t.Fatal(err)
	}
	mirror, counters := startMirror(t, 0, map[string]*testServer{"hub": up}, "alice", "alice-password")
	c := counters["hub"]
	st := &statusTransport{}
	c.mu.Lock()
	st.inner, c.inner = c.inner, st
	c.mu.Unlock()
	pull := func(want v1.Image, heads, gets int) {
		t.Helper()
		h0, g0 := c.count("HEAD manifest v1"), c.count("GET manifest v1")
		got, err := remote.Image(mirror.repo(t, "hub/team/app").Tag("v1"), mirror.opts(t)...)
		if err != nil {
			t.Fatalf("pull through the mirror: %v", err)
		}
		checkSameImage(t, want, got)
		if h, g := c.count("HEAD manifest v1")-h0, c.count("GET manifest v1")-g0; h != heads || g != gets {
			t.Errorf("a pull made %d HEADs and %d GETs of the manifest upstream, want %d and %d", h, g, heads, gets)
		}
	}
	pull(img1, 0, 1) // not cached: a GET
	pull(img1, 1, 0)
	pull(img1, 1, 0)
	if err := remote.Write(up.repo(t, "team/app").Tag("v1"), img2, alice...); err != nil {
		t.Fatal(err)
	}
	pull(img2, 1, 1)
	for _, status := range []int{429, 503} {
		st.set("HEAD manifest v1", status)
		pull(img2, 1, 0)
	}
	st.set("", 0)
	if err := remote.Delete(up.repo(t, "team/app").Tag("v1"), alice...); err != nil {
		t.Fatal(err)
	}
	if _, err := remote.Image(mirror.repo(t, "hub/team/app").Tag("v1"), mirror.opts(t)...); statusOf(err) != 404 {
		t.Errorf("a tag deleted upstream: %v, want 404", err)
	}
}
