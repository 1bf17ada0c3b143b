package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/berth-registry/berth/tlsutil"
)

// These tests run the real server (serve, as `registry serve` does) on a
// loopback port over a temporary data directory, and drive it with
// go-containerregistry, the client library behind crane, ko and others.

// testServer is one run of serve, with the client transport for it.
type testServer struct {
	t      *testing.T
	addr   string // host:port
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
	// tr is the transport every request to this server goes through; stop
	// closes its idle connections so that the server's shutdown need not
	// wait for them.
	tr *http.Transport
	// names maps the host:port names clients use to the loopback
	// addresses the transport dials.
	mu    sync.Mutex
	names map[string]string
}

// startServer runs serve on 127.0.0.1:0 with root as its data directory
// and stops it when the test ends.
func startServer(t *testing.T, root string) *testServer {
	t.Helper()
	return startServerWith(t, root, nil, nil)
}

// startServerWith is startServer with a hook that adjusts the
// configuration and a writer for the server's log (nil: errors to the
// test output, no access log).
func startServerWith(t *testing.T, root string, configure func(*Config), logw io.Writer) *testServer {
	t.Helper()
	// TLS from the private CA, as a fresh start has it, in a directory of
	// the test's own; the client trusts that CA and nothing else.
	cfg := defaultConfig()
	cfg.HTTP.Addr = "127.0.0.1:0"
	cfg.HTTP.DrainTimeout = 5 * time.Second
	cfg.HTTP.TLS.PrivateCA.Dir = testCertDir(root)
	cfg.HTTP.TLS.PrivateCA.Hosts = []string{testHost, "127.0.0.1"}
	cfg.Storage.Filesystem.RootDirectory = root
	cfg.Log.AccessLog.Disabled = logw == nil
	if configure != nil {
		configure(&cfg)
	}
	level := slog.LevelInfo
	if logw == nil {
		logw, level = t.Output(), slog.LevelError
	}
	log := slog.New(slog.NewTextHandler(logw, &slog.HandlerOptions{Level: level}))

	ctx, cancel := context.WithCancel(context.Background())
	s := &testServer{t: t, cancel: cancel, done: make(chan error, 1),
		tr: http.DefaultTransport.(*http.Transport).Clone(), names: map[string]string{}}
	addrc := make(chan string, 1)
	go func() { s.done <- serve(ctx, cfg, log, func(addr string) { addrc <- addr }) }()
	select {
	case s.addr = <-addrc:
	case err := <-s.done:
		cancel()
		t.Fatalf("serve returned before it was ready: %v", err)
	case <-time.After(10 * time.Second):
		cancel()
		t.Fatal("serve did not report its address within 10s")
	}
	t.Cleanup(s.stop)
	if len(cfg.HTTP.TLS.LetsEncrypt.Hosts) == 0 { // with ACME the test sets its own trust
		tc, err := tlsutil.ClientConfig(filepath.Join(testCertDir(root), "ca.crt"))
		if err != nil {
			t.Fatal(err)
		}
		s.tr.TLSClientConfig = tc
	}
	// Clients address the registry by name, as users do (go-containerregistry
	// takes loopback addresses for plain-HTTP registries); the name dials
	// the loopback address the server listens on.
	_, port, _ := net.SplitHostPort(s.addr)
	s.addr = s.alias(testHost, port, s.addr)
	dialer := &net.Dialer{Timeout: 5 * time.Second}
	s.tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		s.mu.Lock()
		if real, ok := s.names[addr]; ok {
			addr = real
		}
		s.mu.Unlock()
		return dialer.DialContext(ctx, network, addr)
	}
	return s
}

// testCertDir is where the private CA of the servers of one test lives
// (a test's t.TempDir()s share a parent).
func testCertDir(root string) string { return filepath.Join(filepath.Dir(root), "certs") }

// alias makes host:port dial real through s's transport and returns host:port.
func (s *testServer) alias(host, port, real string) string {
	name := net.JoinHostPort(host, port)
	s.mu.Lock()
	s.names[name] = real
	s.mu.Unlock()
	return name
}

// testHost is the name tests reach the registry by.
const testHost = "registry.berth.test"

// stop cancels serve's context and checks that it returns nil (a clean
// shutdown). Calling it again does nothing.
func (s *testServer) stop() {
	s.once.Do(func() {
		// An idle connection that never carried a request (the transport
		// dials more than it ends up using when requests run in parallel)
		// holds up http.Server.Shutdown for 5s.
		s.tr.CloseIdleConnections()
		s.cancel()
		select {
		case err := <-s.done:
			if err != nil {
				s.t.Errorf("serve returned %v after its context was cancelled, want nil", err)
			}
		case <-time.After(15 * time.Second):
			s.t.Errorf("serve did not return within 15s of its context being cancelled")
		}
	})
}

func (s *testServer) url(path string) string { return "https://" + s.addr + path }

// opts are the go-containerregistry options for requests to s in test t.
func (s *testServer) opts(t *testing.T) []remote.Option {
	return []remote.Option{remote.WithContext(t.Context()), remote.WithTransport(s.tr)}
}

func (s *testServer) repo(t *testing.T, repo string) name.Repository {
	t.Helper()
	r, err := name.NewRepository(s.addr + "/" + repo)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func (s *testServer) registry(t *testing.T) name.Registry {
	t.Helper()
	r, err := name.NewRegistry(s.addr)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func randomImage(t *testing.T, layers int64) v1.Image {
	t.Helper()
	img, err := random.Image(1024, layers)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func imageDigest(t *testing.T, img v1.Image) v1.Hash {
	t.Helper()
	dg, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return dg
}

// sha256Of hashes everything rc yields and closes it.
func sha256Of(t *testing.T, rc io.ReadCloser) (v1.Hash, int64) {
	t.Helper()
	defer rc.Close()
	h := sha256.New()
	n, err := io.Copy(h, rc)
	if err != nil {
		t.Fatal(err)
	}
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(h.Sum(nil))}, n
}

// checkSameImage compares a pulled image with the one pushed: digest,
// manifest bytes, config bytes, and each layer's compressed content hashed
// here (not the digest the manifest claims).
func checkSameImage(t *testing.T, want, got v1.Image) {
	t.Helper()
	if w, g := imageDigest(t, want), imageDigest(t, got); w != g {
		t.Fatalf("image digest = %s, want %s", g, w)
	}
	wm, err := want.RawManifest()
	if err != nil {
		t.Fatal(err)
	}
	gm, err := got.RawManifest()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(wm, gm) {
		t.Errorf("manifest differs:\n got %s\nwant %s", gm, wm)
	}
	wc, err := want.RawConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	gc, err := got.RawConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(wc, gc) {
		t.Errorf("config differs:\n got %s\nwant %s", gc, wc)
	}
	wls, err := want.Layers()
	if err != nil {
		t.Fatal(err)
	}
	gls, err := got.Layers()
	if err != nil {
		t.Fatal(err)
	}
	if len(gls) != len(wls) {
		t.Fatalf("pulled image has %d layers, want %d", len(gls), len(wls))
	}
	for i := range wls {
		wantDg, err := wls[i].Digest()
		if err != nil {
			t.Fatal(err)
		}
		wantSize, err := wls[i].Size()
		if err != nil {
			t.Fatal(err)
		}
		rc, err := gls[i].Compressed()
		if err != nil {
			t.Fatalf("layer %d: %v", i, err)
		}
		gotDg, gotSize := sha256Of(t, rc)
		if gotDg != wantDg || gotSize != wantSize {
			t.Errorf("layer %d content hashes to %s (%d bytes), want %s (%d bytes)", i, gotDg, gotSize, wantDg, wantSize)
		}
	}
}

// checkNotFound asserts that the registry answers 404 for ref's manifest.
func checkNotFound(t *testing.T, ref name.Reference, opts ...remote.Option) {
	t.Helper()
	_, err := remote.Head(ref, opts...)
	var terr *transport.Error
	if !errors.As(err, &terr) || terr.StatusCode != http.StatusNotFound {
		t.Errorf("HEAD %s: got %v, want a 404", ref, err)
	}
	_, err = remote.Get(ref, opts...)
	if !errors.As(err, &terr) || terr.StatusCode != http.StatusNotFound {
		t.Errorf("GET %s: got %v, want a 404", ref, err)
	}
}

func TestPushPullImage(t *testing.T) {
	srv := startServer(t, t.TempDir())
	opts := srv.opts(t)
	repo := srv.repo(t, "team/app")
	img := randomImage(t, 3)
	tag := repo.Tag("v1")
	if err := remote.Write(tag, img, opts...); err != nil {
		t.Fatal(err)
	}

	byTag, err := remote.Image(tag, opts...)
	if err != nil {
		t.Fatal(err)
	}
	checkSameImage(t, img, byTag)

	byDigest, err := remote.Image(repo.Digest(imageDigest(t, img).String()), opts...)
	if err != nil {
		t.Fatal(err)
	}
	checkSameImage(t, img, byDigest)
}

// TestManifestContentTypesWithClient: what go-containerregistry sends as a
// manifest's Content-Type (its media type) is accepted for Docker schema 2
// and OCI manifests, with or without a mediaType field, and served back as
// that type; a Content-Type that contradicts the manifest is refused.
func TestManifestContentTypesWithClient(t *testing.T) {
	srv := startServer(t, t.TempDir())
	opts := srv.opts(t)
	repo := srv.repo(t, "team/types")
	oci := mutate.MediaType(mutate.ConfigMediaType(randomImage(t, 1), types.OCIConfigJSON), types.OCIManifestSchema1)
	for tag, img := range map[string]v1.Image{"docker": randomImage(t, 1), "oci": oci} {
		if err := remote.Write(repo.Tag(tag), img, opts...); err != nil {
			t.Fatalf("%s: %v", tag, err)
		}
		want, _ := img.MediaType()
		if desc, err := remote.Get(repo.Tag(tag), opts...); err != nil || desc.MediaType != want {
			t.Fatalf("%s: served as %v, %v; want %s", tag, desc, err, want)
		}
	}
	raw, err := oci.RawManifest()
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	delete(m, "mediaType")
	untyped, _ := json.Marshal(m)
	if err := remote.Put(repo.Tag("untyped"), typedManifest{rawManifest(untyped), types.OCIManifestSchema1}, opts...); err != nil {
		t.Fatalf("OCI manifest without mediaType: %v", err)
	}
	if desc, err := remote.Get(repo.Tag("untyped"), opts...); err != nil || desc.MediaType != types.OCIManifestSchema1 {
		t.Fatalf("untyped manifest served as %v, %v", desc, err)
	}
	for _, mt := range []types.MediaType{"text/plain", types.DockerManifestSchema2, types.OCIImageIndex} {
		err := remote.Put(repo.Tag("refused"), typedManifest{rawManifest(untyped), mt}, opts...)
		var terr *transport.Error
		if !errors.As(err, &terr) || terr.StatusCode != http.StatusBadRequest || len(terr.Errors) != 1 || terr.Errors[0].Code != transport.ManifestInvalidErrorCode {
			t.Errorf("sent as %s: %v, want 400 MANIFEST_INVALID", mt, err)
		}
	}
	checkNotFound(t, repo.Tag("refused"), opts...)
}

func TestPushPullIndex(t *testing.T) {
	srv := startServer(t, t.TempDir())
	opts := srv.opts(t)
	repo := srv.repo(t, "team/multi")
	platforms := []v1.Platform{
		{OS: "linux", Architecture: "amd64"},
		{OS: "linux", Architecture: "arm64"},
	}
	images := make([]v1.Image, len(platforms))
	var adds []mutate.IndexAddendum
	for i, p := range platforms {
		images[i] = randomImage(t, 2)
		adds = append(adds, mutate.IndexAddendum{
			Add:        images[i],
			Descriptor: v1.Descriptor{Platform: &p},
		})
	}
	idx := mutate.AppendManifests(empty.Index, adds...)
	wantDg, err := idx.Digest()
	if err != nil {
		t.Fatal(err)
	}
	tag := repo.Tag("multi")
	if err := remote.WriteIndex(tag, idx, opts...); err != nil {
		t.Fatal(err)
	}

	got, err := remote.Index(tag, opts...)
	if err != nil {
		t.Fatal(err)
	}
	if dg, err := got.Digest(); err != nil || dg != wantDg {
		t.Fatalf("index digest = %s (%v), want %s", dg, err, wantDg)
	}
	if mt, err := got.MediaType(); err != nil || mt != types.OCIImageIndex {
		t.Errorf("index media type = %q (%v), want %q", mt, err, types.OCIImageIndex)
	}
	im, err := got.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != len(platforms) {
		t.Fatalf("index lists %d manifests, want %d", len(im.Manifests), len(platforms))
	}
	for i, p := range platforms {
		if im.Manifests[i].Platform == nil || !im.Manifests[i].Platform.Equals(p) {
			t.Errorf("manifest %d platform = %v, want %v", i, im.Manifests[i].Platform, p)
		}
		child, err := remote.Image(tag, append(opts, remote.WithPlatform(p))...)
		if err != nil {
			t.Fatalf("pull %s for %s: %v", tag, p, err)
		}
		checkSameImage(t, images[i], child)
	}
}

// rawManifest is a manifest given as bytes.
type rawManifest []byte

func (m rawManifest) RawManifest() ([]byte, error) { return m, nil }

// typedManifest adds a media type to a manifest: remote.Put sends a Docker
// media type for one that does not say.
type typedManifest struct {
	partial.WithRawManifest
	mediaType types.MediaType
}

func (m typedManifest) MediaType() (types.MediaType, error) { return m.mediaType, nil }

func TestReferrers(t *testing.T) {
	srv := startServer(t, t.TempDir())
	opts := srv.opts(t)
	repo := srv.repo(t, "team/signed")
	img := randomImage(t, 2)
	if err := remote.Write(repo.Tag("v1"), img, opts...); err != nil {
		t.Fatal(err)
	}
	subject, err := partial.Descriptor(img)
	if err != nil {
		t.Fatal(err)
	}

	// An artifact: the empty config, one layer, an artifactType.
	const sbomType = "application/vnd.example.sbom.v1+json"
	emptyConfig := static.NewLayer([]byte("{}"), types.OCIEmptyJSON)
	payload := static.NewLayer([]byte(`{"packages":[]}`), "application/vnd.example.sbom.layer.v1+json")
	for _, l := range []v1.Layer{emptyConfig, payload} {
		if err := remote.WriteLayer(repo, l, opts...); err != nil {
			t.Fatal(err)
		}
	}
	configDesc, err := partial.Descriptor(emptyConfig)
	if err != nil {
		t.Fatal(err)
	}
	if configDesc.Digest.String() != "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a" || configDesc.Size != 2 {
		t.Fatalf("empty config descriptor = %+v, not the OCI empty descriptor", configDesc)
	}
	layerDesc, err := partial.Descriptor(payload)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := json.Marshal(v1.Manifest{
		SchemaVersion: 2,
		MediaType:     types.OCIManifestSchema1,
		ArtifactType:  sbomType,
		Config:        *configDesc,
		Layers:        []v1.Descriptor{*layerDesc},
	})
	if err != nil {
		t.Fatal(err)
	}
	artifact := typedManifest{
		WithRawManifest: mutate.Subject(rawManifest(doc), *subject),
		mediaType:       types.OCIManifestSchema1,
	}
	raw, err := artifact.RawManifest()
	if err != nil {
		t.Fatal(err)
	}
	artifactDg, _, err := v1.SHA256(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Put(repo.Digest(artifactDg.String()), artifact, opts...); err != nil {
		t.Fatal(err)
	}

	subjectRef := repo.Digest(subject.Digest.String())
	idx, err := remote.Referrers(subjectRef, opts...)
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != 1 {
		t.Fatalf("referrers of the subject: %d manifests, want 1: %+v", len(im.Manifests), im.Manifests)
	}
	got := im.Manifests[0]
	if got.Digest != artifactDg || got.ArtifactType != sbomType || got.MediaType != types.OCIManifestSchema1 || got.Size != int64(len(raw)) {
		t.Errorf("referrer = %+v, want digest %s, artifactType %s, OCI manifest of %d bytes", got, artifactDg, sbomType, len(raw))
	}

	// The registry supports the referrers API, so the client must not have
	// fallen back to the sha256-<hex> tag schema.
	tags, err := remote.List(repo, opts...)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(tags, []string{"v1"}) {
		t.Errorf("tags = %v, want [v1] (no referrers fallback tag)", tags)
	}

	// Filtering: go-containerregistry filters on the client too, so also
	// check what the server itself answers.
	idx, err = remote.Referrers(subjectRef, append(opts, remote.WithFilter("artifactType", "application/vnd.example.other"))...)
	if err != nil {
		t.Fatal(err)
	}
	if im, err := idx.IndexManifest(); err != nil || len(im.Manifests) != 0 {
		t.Errorf("referrers filtered by another artifactType: %v (%v), want none", im, err)
	}
	for _, tc := range []struct {
		artifactType string
		want         int
	}{
		{"application/vnd.example.other", 0},
		{sbomType, 1},
	} {
		u := srv.url("/v2/team/signed/referrers/" + subject.Digest.String() + "?artifactType=" + url.QueryEscape(tc.artifactType))
		resp, b := srv.do(t, http.MethodGet, u, nil, nil)
		var body v1.IndexManifest
		if err := json.Unmarshal(b, &body); err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusOK || resp.Header.Get("OCI-Filters-Applied") != "artifactType" || len(body.Manifests) != tc.want {
			t.Errorf("GET referrers?artifactType=%s: status %d, OCI-Filters-Applied %q, %d manifests; want 200, artifactType, %d",
				tc.artifactType, resp.StatusCode, resp.Header.Get("OCI-Filters-Applied"), len(body.Manifests), tc.want)
		}
	}
}

func TestListTagsAndCatalog(t *testing.T) {
	srv := startServer(t, t.TempDir())
	opts := srv.opts(t)
	pushed := map[string][]string{
		"list/a":      {"v2", "latest", "v1"},
		"list/a/deep": {"x"},
		"other":       {"1.0"},
	}
	for repoName, tags := range pushed {
		repo := srv.repo(t, repoName)
		img := randomImage(t, 1)
		for _, tag := range tags {
			if err := remote.Write(repo.Tag(tag), img, opts...); err != nil {
				t.Fatal(err)
			}
		}
	}

	// A page size of 1 makes the client follow the Link headers.
	for _, pageSize := range []int{1, 1000} {
		for repoName, tags := range pushed {
			got, err := remote.List(srv.repo(t, repoName), append(opts, remote.WithPageSize(pageSize))...)
			if err != nil {
				t.Fatal(err)
			}
			want := slices.Sorted(slices.Values(tags))
			if !slices.Equal(got, want) {
				t.Errorf("page size %d: tags of %s = %v, want %v", pageSize, repoName, got, want)
			}
		}
		got, err := remote.Catalog(t.Context(), srv.registry(t), append(opts, remote.WithPageSize(pageSize))...)
		if err != nil {
			t.Fatal(err)
		}
		if want := []string{"list/a", "list/a/deep", "other"}; !slices.Equal(got, want) {
			t.Errorf("page size %d: catalog = %v, want %v", pageSize, got, want)
		}
	}
}

// recordingTransport notes every request and how many body bytes it sent.
type recordingTransport struct {
	base http.RoundTripper

	mu       sync.Mutex
	requests []recordedRequest
}

type recordedRequest struct {
	method string
	url    *url.URL
	status int
	sent   *atomic.Int64
}

type countingBody struct {
	io.ReadCloser
	n *atomic.Int64
}

func (b countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n.Add(int64(n))
	return n, err
}

func (rt *recordingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	rec := recordedRequest{method: req.Method, url: req.URL, sent: new(atomic.Int64)}
	if req.Body != nil {
		req = req.Clone(req.Context())
		req.Body = countingBody{req.Body, rec.sent}
	}
	resp, err := rt.base.RoundTrip(req)
	if err == nil {
		rec.status = resp.StatusCode
	}
	rt.mu.Lock()
	rt.requests = append(rt.requests, rec)
	rt.mu.Unlock()
	return resp, err
}

func TestCrossRepositoryMount(t *testing.T) {
	srv := startServer(t, t.TempDir())
	opts := srv.opts(t)
	src, dst := srv.repo(t, "team/source"), srv.repo(t, "team/copy")
	img := randomImage(t, 3)
	if err := remote.Write(src.Tag("v1"), img, opts...); err != nil {
		t.Fatal(err)
	}

	// An image pulled from src knows where its blobs live, so pushing it to
	// dst asks the registry to mount them (POST ?mount=<digest>&from=<src>).
	pulled, err := remote.Image(src.Tag("v1"), opts...)
	if err != nil {
		t.Fatal(err)
	}
	rt := &recordingTransport{base: srv.tr}
	if err := remote.Write(dst.Tag("v1"), pulled, append(opts, remote.WithTransport(rt))...); err != nil {
		t.Fatal(err)
	}

	cfgName, err := img.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	blobs := []string{cfgName.String()}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range layers {
		dg, err := l.Digest()
		if err != nil {
			t.Fatal(err)
		}
		blobs = append(blobs, dg.String())
	}
	mounted := map[string]bool{}
	var uploaded int64
	for _, r := range rt.requests {
		isUpload := strings.Contains(r.url.Path, "/blobs/uploads/")
		if isUpload {
			uploaded += r.sent.Load()
		}
		switch {
		case r.method == http.MethodPost && isUpload:
			q := r.url.Query()
			if r.status != http.StatusCreated || q.Get("from") != "team/source" {
				t.Errorf("POST %s: status %d, want a 201 mount from team/source", r.url, r.status)
			}
			mounted[q.Get("mount")] = true
		case isUpload:
			t.Errorf("%s %s: the push sent blob data instead of mounting", r.method, r.url)
		}
	}
	if uploaded != 0 {
		t.Errorf("%d bytes sent to upload endpoints, want 0", uploaded)
	}
	for _, dg := range blobs {
		if !mounted[dg] {
			t.Errorf("blob %s was not mounted", dg)
		}
	}

	got, err := remote.Image(dst.Tag("v1"), opts...)
	if err != nil {
		t.Fatal(err)
	}
	checkSameImage(t, img, got)
}

func TestDelete(t *testing.T) {
	srv := startServer(t, t.TempDir())
	opts := srv.opts(t)
	repo := srv.repo(t, "team/deletes")
	untagged, deleted := randomImage(t, 1), randomImage(t, 1)
	if err := remote.Write(repo.Tag("untag-me"), untagged, opts...); err != nil {
		t.Fatal(err)
	}
	deletedDg := imageDigest(t, deleted).String()
	if err := remote.Write(repo.Tag("delete-me"), deleted, opts...); err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(repo.Tag("also-me"), deleted, opts...); err != nil {
		t.Fatal(err)
	}

	// Deleting a tag removes the tag, not the manifest.
	if err := remote.Delete(repo.Tag("untag-me"), opts...); err != nil {
		t.Fatal(err)
	}
	checkNotFound(t, repo.Tag("untag-me"), opts...)
	if _, err := remote.Head(repo.Digest(imageDigest(t, untagged).String()), opts...); err != nil {
		t.Errorf("manifest of a deleted tag: %v, want it kept", err)
	}

	// Deleting a manifest by digest removes it and every tag pointing at it.
	if err := remote.Delete(repo.Digest(deletedDg), opts...); err != nil {
		t.Fatal(err)
	}
	checkNotFound(t, repo.Digest(deletedDg), opts...)
	checkNotFound(t, repo.Tag("delete-me"), opts...)
	checkNotFound(t, repo.Tag("also-me"), opts...)
	tags, err := remote.List(repo, opts...)
	if err != nil {
		t.Fatal(err)
	}
	if len(tags) != 0 {
		t.Errorf("tags after deleting = %v, want none", tags)
	}

	// Deleting what is gone is a 404 too.
	err = remote.Delete(repo.Digest(deletedDg), opts...)
	var terr *transport.Error
	if !errors.As(err, &terr) || terr.StatusCode != http.StatusNotFound {
		t.Errorf("deleting a deleted manifest: %v, want a 404", err)
	}
}

func TestContentSurvivesRestart(t *testing.T) {
	root := t.TempDir()
	srv := startServer(t, root)
	img := randomImage(t, 3)
	if err := remote.Write(srv.repo(t, "team/durable").Tag("v1"), img, srv.opts(t)...); err != nil {
		t.Fatal(err)
	}
	srv.stop()

	srv = startServer(t, root)
	opts := srv.opts(t)
	got, err := remote.Image(srv.repo(t, "team/durable").Tag("v1"), opts...)
	if err != nil {
		t.Fatal(err)
	}
	checkSameImage(t, img, got)
	repos, err := remote.Catalog(t.Context(), srv.registry(t), opts...)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(repos, []string{"team/durable"}) {
		t.Errorf("catalog after restart = %v, want [team/durable]", repos)
	}
}

// do sends one request to s and returns the response with its body read.
func (s *testServer) do(t *testing.T, method, u string, header http.Header, body []byte) (*http.Response, []byte) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, u, rd)
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	resp, err := (&http.Client{Transport: s.tr}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

func chunkHeader(start, end int) http.Header {
	return http.Header{
		"Content-Type":  {"application/octet-stream"},
		"Content-Range": {strconv.Itoa(start) + "-" + strconv.Itoa(end)},
	}
}

func TestResumableUploadAcrossRestart(t *testing.T) {
	root := t.TempDir()
	srv := startServer(t, root)

	// Both chunks span several of the store's 1 MiB copy buffers and end
	// off a buffer boundary.
	rnd := rand.NewChaCha8([32]byte{7})
	first, second := make([]byte, 3<<20+5), make([]byte, 2<<20+11)
	_, _ = rnd.Read(first)
	_, _ = rnd.Read(second)
	full := slices.Concat(first, second)
	sum := sha256.Sum256(full)
	dg := "sha256:" + hex.EncodeToString(sum[:])

	resp, _ := srv.do(t, http.MethodPost, srv.url("/v2/team/resume/blobs/uploads/"), nil, nil)
	loc := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusAccepted || loc == "" {
		t.Fatalf("POST uploads: status %d, Location %q; want 202 and a location", resp.StatusCode, loc)
	}
	// The Location may be relative: keep its path and query, not its host,
	// since the restarted server listens on another port.
	locURL, err := url.Parse(loc)
	if err != nil {
		t.Fatal(err)
	}
	uploadPath := locURL.RequestURI()

	resp, _ = srv.do(t, http.MethodPatch, srv.url(uploadPath), chunkHeader(0, len(first)-1), first)
	wantRange := fmt.Sprintf("0-%d", len(first)-1)
	if resp.StatusCode != http.StatusAccepted || resp.Header.Get("Range") != wantRange {
		t.Fatalf("PATCH first chunk: status %d, Range %q; want 202, %s", resp.StatusCode, resp.Header.Get("Range"), wantRange)
	}
	srv.stop()

	srv = startServer(t, root)
	resp, _ = srv.do(t, http.MethodGet, srv.url(uploadPath), nil, nil)
	if resp.StatusCode != http.StatusNoContent || resp.Header.Get("Range") != wantRange {
		t.Fatalf("GET upload after restart: status %d, Range %q; want 204, %s", resp.StatusCode, resp.Header.Get("Range"), wantRange)
	}

	// A chunk that does not continue where the upload ends is refused, and
	// the answer says where it ends.
	resp, _ = srv.do(t, http.MethodPatch, srv.url(uploadPath), chunkHeader(0, len(second)-1), second)
	if resp.StatusCode != http.StatusRequestedRangeNotSatisfiable || resp.Header.Get("Range") != wantRange {
		t.Errorf("PATCH at offset 0 after restart: status %d, Range %q; want 416, %s", resp.StatusCode, resp.Header.Get("Range"), wantRange)
	}

	resp, _ = srv.do(t, http.MethodPatch, srv.url(uploadPath), chunkHeader(len(first), len(full)-1), second)
	wantRange = fmt.Sprintf("0-%d", len(full)-1)
	if resp.StatusCode != http.StatusAccepted || resp.Header.Get("Range") != wantRange {
		t.Fatalf("PATCH second chunk: status %d, Range %q; want 202, %s", resp.StatusCode, resp.Header.Get("Range"), wantRange)
	}
	if l := resp.Header.Get("Location"); l != "" {
		if u, err := url.Parse(l); err == nil {
			uploadPath = u.RequestURI()
		}
	}

	sep := "?"
	if strings.Contains(uploadPath, "?") {
		sep = "&"
	}
	resp, _ = srv.do(t, http.MethodPut, srv.url(uploadPath+sep+"digest="+url.QueryEscape(dg)), nil, nil)
	if resp.StatusCode != http.StatusCreated || resp.Header.Get("Docker-Content-Digest") != dg {
		t.Fatalf("PUT ?digest=: status %d, Docker-Content-Digest %q; want 201, %s", resp.StatusCode, resp.Header.Get("Docker-Content-Digest"), dg)
	}

	resp, body := srv.do(t, http.MethodGet, srv.url("/v2/team/resume/blobs/"+dg), nil, nil)
	if resp.StatusCode != http.StatusOK || !bytes.Equal(body, full) {
		t.Fatalf("GET blob: status %d, %d bytes (equal: %v); want 200 and the %d bytes uploaded",
			resp.StatusCode, len(body), bytes.Equal(body, full), len(full))
	}

	// The session is over.
	resp, _ = srv.do(t, http.MethodGet, srv.url(uploadPath), nil, nil)
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET upload after completion: status %d, want 404", resp.StatusCode)
	}
}
