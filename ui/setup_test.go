package ui_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/berth-registry/berth/auth"
	"github.com/berth-registry/berth/auth/tokenserver"
	"github.com/berth-registry/berth/internal/testutil"
	"github.com/berth-registry/berth/notify"
	"github.com/berth-registry/berth/registry"
	"github.com/berth-registry/berth/storage"
	"github.com/berth-registry/berth/storage/driver"
	"github.com/berth-registry/berth/storage/driver/filesystem"
	"github.com/berth-registry/berth/ui"
)

const (
	service = "registry.berth.test"
	issuer  = "berth-auth"
	// sbomType is the artifactType of the referrer pushed by push.
	sbomType = "application/vnd.example.sbom.v1+json"
	// hostileType is a referrer's artifactType made to break out of HTML.
	hostileType = `application/x-"><script>alert(1)</script>`
)

// passwords of the token server's users: admin may do everything, alice
// pull and delete on team/* and pull on public/*, bob pull on team/app
// only; anonymous clients may pull public/*.
var passwords = map[string]string{"admin": "admin-password", "alice": "alice-password", "bob": "bob-password"}

type mode int

const (
	modeOpen mode = iota
	modeToken
	modeHtpasswd
)

// env is a registry with the pages, over TLS, and what tests need of it.
type env struct {
	t     *testing.T
	srv   *httptest.Server
	host  string
	dir   string // the filesystem store's root
	store *storage.Store
	drv   driver.Driver
	opts  []remote.Option // pushes as admin
	logs  *testutil.Buffer
	sink  *recordSink
	// users are the token server's or htpasswd's users, from htFile.
	users  *auth.UserStore
	htFile string
	// tokenRequests counts the token server's requests.
	tokenRequests atomic.Int64
}

// recordSink keeps the events it is given.
type recordSink struct {
	events chan notify.Event
}

func (s *recordSink) Notify(_ context.Context, events ...notify.Event) error {
	for _, e := range events {
		s.events <- e
	}
	return nil
}

func writeUsers(t *testing.T, file string) *auth.UserStore {
	t.Helper()
	ht, _ := auth.ParseHtpasswd(nil)
	for user, pw := range passwords {
		if err := ht.SetPassword(user, pw, 4); err != nil {
			t.Fatal(err)
		}
	}
	if err := ht.WriteFile(file); err != nil {
		t.Fatal(err)
	}
	users, err := auth.NewUserStore(auth.UserStoreConfig{Path: file})
	if err != nil {
		t.Fatal(err)
	}
	return users
}

// startTokenServer runs the real token server over TLS; it returns its
// realm and a verifier that trusts its signing certificate.
func startTokenServer(t *testing.T, users *auth.UserStore, count *atomic.Int64) (string, *auth.Verifier) {
	t.Helper()
	priv, err := auth.GenerateKey("RS256")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := auth.SelfSignedCertificate(priv, "berth token signer", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := auth.NewSigner(auth.Key{Private: priv, Chain: []*x509.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	admin, alice, bob, anon := "admin", "alice", "bob", ""
	policy, err := auth.NewPolicy([]auth.Rule{
		{Match: auth.Match{Account: &admin, Name: "/.*/"}, Actions: []string{"*"}},
		{Match: auth.Match{Account: &alice, Name: "team/*"}, Actions: []string{"pull", "delete"}},
		{Match: auth.Match{Account: &alice, Name: "public/*"}, Actions: []string{"pull"}},
		{Match: auth.Match{Account: &bob, Name: "team/app"}, Actions: []string{"pull"}},
		{Match: auth.Match{Account: &anon, Name: "public/*"}, Actions: []string{"pull"}},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ts, err := tokenserver.New(tokenserver.Config{Issuer: issuer, Services: []string{service}, Signer: signer, Users: users, Policy: policy})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		count.Add(1)
		ts.Handler().ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	v, err := auth.NewVerifier(auth.VerifierConfig{Issuer: issuer, Service: service, Roots: []*x509.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	// A name, not 127.0.0.1: clients refuse realms at private addresses.
	// httptest's certificate is valid for *.example.com; exampleTransport
	// leads the name to loopback.
	return strings.Replace(srv.URL, "127.0.0.1", "auth.example.com", 1) + "/token", v
}

// exampleTransport trusts httptest's certificate and dials loopback for
// every name under example.com.
func exampleTransport() *http.Transport {
	// httptest's TLS servers share one certificate: the client of one
	// trusts the others.
	srv := httptest.NewTLSServer(http.NotFoundHandler())
	srv.Close()
	tr := srv.Client().Transport.(*http.Transport).Clone()
	var d net.Dialer
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		if host, port, err := net.SplitHostPort(addr); err == nil && strings.HasSuffix(host, ".example.com") {
			addr = net.JoinHostPort("127.0.0.1", port)
		}
		return d.DialContext(ctx, network, addr)
	}
	return tr
}

// newEnv starts a registry in mode m with the pages on, deletes enabled.
func newEnv(t *testing.T, m mode) *env {
	t.Helper()
	return newEnvWith(t, m, nil)
}

// newEnvWith is newEnv with a hook that adjusts the pages' configuration.
func newEnvWith(t *testing.T, m mode, adjust func(*ui.Config)) *env {
	t.Helper()
	dir := t.TempDir()
	drv, err := filesystem.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { drv.Close() }) // before the directory goes: Windows keeps open files
	e := &env{t: t, dir: dir, store: storage.New(drv), drv: drv, logs: &testutil.Buffer{}, sink: &recordSink{events: make(chan notify.Event, 100)}}
	log := slog.New(slog.NewTextHandler(e.logs, nil))
	uc := ui.Config{Store: e.store, Driver: drv, Logger: log, DeleteEnabled: true, Notify: e.sink}
	rc := registry.Config{Store: e.store, Logger: log, DeleteEnabled: true}
	tr := exampleTransport()
	switch m {
	case modeToken:
		e.htFile = filepath.Join(t.TempDir(), "htpasswd")
		users := writeUsers(t, e.htFile)
		e.users = users
		realm, v := startTokenServer(t, users, &e.tokenRequests)
		if rc.Authorizer, err = registry.NewTokenAuthorizer(realm, service, v); err != nil {
			t.Fatal(err)
		}
		uc.Token = &ui.TokenAuth{Realm: realm, Service: service, Verifier: v, Client: &http.Client{Transport: tr}}
	case modeHtpasswd:
		e.htFile = filepath.Join(t.TempDir(), "htpasswd")
		users := writeUsers(t, e.htFile)
		e.users = users
		rc.Authorizer = registry.NewBasicAuthorizer("Berth", users)
		uc.Users = users
	}
	if adjust != nil {
		adjust(&uc)
	}
	pages, err := ui.New(uc)
	if err != nil {
		t.Fatal(err)
	}
	rc.UI = pages
	e.srv = httptest.NewTLSServer(registry.New(rc))
	t.Cleanup(e.srv.Close)
	u, _ := url.Parse(e.srv.URL)
	e.host = u.Host
	e.opts = []remote.Option{remote.WithTransport(tr)}
	if m != modeOpen {
		e.opts = append(e.opts, remote.WithAuth(&authn.Basic{Username: "admin", Password: passwords["admin"]}))
	}
	return e
}

func (e *env) repo(repoName string) name.Repository {
	e.t.Helper()
	r, err := name.NewRepository(e.host + "/" + repoName)
	if err != nil {
		e.t.Fatal(err)
	}
	return r
}

// platformImage is a random image whose config names a platform.
func platformImage(t *testing.T, os, arch, variant string, created time.Time) v1.Image {
	t.Helper()
	img, err := random.Image(512, 2)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Variant = os, arch, variant
	cf.Created = v1.Time{Time: created}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	return mutate.MediaType(img, types.OCIManifestSchema1)
}

// pushImage pushes an image as repo:tag and returns it.
func (e *env) pushImage(repo, tag string) v1.Image {
	e.t.Helper()
	img := platformImage(e.t, "linux", "amd64", "", time.Date(2025, 3, 4, 5, 6, 7, 0, time.UTC))
	if err := remote.Write(e.repo(repo).Tag(tag), img, e.opts...); err != nil {
		e.t.Fatal(err)
	}
	return img
}

// pushIndex pushes an index of linux/amd64 and linux/arm64/v8 as repo:tag.
func (e *env) pushIndex(repo, tag string) v1.ImageIndex {
	e.t.Helper()
	amd := platformImage(e.t, "linux", "amd64", "", time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC))
	arm := platformImage(e.t, "linux", "arm64", "v8", time.Date(2025, 2, 2, 0, 0, 0, 0, time.UTC))
	idx := mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex),
		mutate.IndexAddendum{Add: amd, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}},
		mutate.IndexAddendum{Add: arm, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}}},
	)
	if err := remote.WriteIndex(e.repo(repo).Tag(tag), idx, e.opts...); err != nil {
		e.t.Fatal(err)
	}
	return idx
}

type rawManifest []byte

func (m rawManifest) RawManifest() ([]byte, error) { return m, nil }

type typedManifest struct {
	partial.WithRawManifest
}

func (typedManifest) MediaType() (types.MediaType, error) { return types.OCIManifestSchema1, nil }

// pushReferrer pushes an artifact of artifactType whose subject is img,
// and returns its digest.
func (e *env) pushReferrer(repo string, img v1.Image, artifactType string) v1.Hash {
	e.t.Helper()
	r := e.repo(repo)
	cfg := static.NewLayer([]byte("{}"), types.OCIEmptyJSON)
	payload := static.NewLayer([]byte(`{"packages":[]}`), "application/vnd.example.sbom.layer.v1+json")
	var descs []v1.Descriptor
	for _, l := range []v1.Layer{cfg, payload} {
		if err := remote.WriteLayer(r, l, e.opts...); err != nil {
			e.t.Fatal(err)
		}
		d, err := partial.Descriptor(l)
		if err != nil {
			e.t.Fatal(err)
		}
		descs = append(descs, *d)
	}
	doc, err := json.Marshal(v1.Manifest{SchemaVersion: 2, MediaType: types.OCIManifestSchema1, ArtifactType: artifactType, Config: descs[0], Layers: descs[1:]})
	if err != nil {
		e.t.Fatal(err)
	}
	subject, err := partial.Descriptor(img)
	if err != nil {
		e.t.Fatal(err)
	}
	artifact := typedManifest{mutate.Subject(rawManifest(doc), *subject)}
	raw, err := artifact.RawManifest()
	if err != nil {
		e.t.Fatal(err)
	}
	dg, _, err := v1.SHA256(bytes.NewReader(raw))
	if err != nil {
		e.t.Fatal(err)
	}
	if err := remote.Put(r.Digest(dg.String()), artifact, e.opts...); err != nil {
		e.t.Fatal(err)
	}
	return dg
}

// browser is a client with a cookie jar, as a browser keeps cookies.
type browser struct {
	e      *env
	client *http.Client
}

func (e *env) browser() *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{e: e, client: &http.Client{Transport: e.srv.Client().Transport, Jar: jar}}
}

// page is an answer: status, headers and body.
type page struct {
	status int
	header http.Header
	body   string
	url    *url.URL // after redirects
}

func (b *browser) do(req *http.Request) page {
	b.e.t.Helper()
	resp, err := b.client.Do(req)
	if err != nil {
		b.e.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		b.e.t.Fatal(err)
	}
	return page{status: resp.StatusCode, header: resp.Header, body: string(body), url: resp.Request.URL}
}

func (b *browser) get(path string) page {
	b.e.t.Helper()
	req, err := http.NewRequest(http.MethodGet, b.e.srv.URL+path, nil)
	if err != nil {
		b.e.t.Fatal(err)
	}
	return b.do(req)
}

// post sends a form as a browser of this site does (Origin set).
func (b *browser) post(path string, form url.Values) page {
	b.e.t.Helper()
	req, err := http.NewRequest(http.MethodPost, b.e.srv.URL+path, strings.NewReader(form.Encode()))
	if err != nil {
		b.e.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", b.e.srv.URL)
	return b.do(req)
}

// login signs in through the sign-in page.
func (b *browser) login(user, password string) page {
	b.e.t.Helper()
	p := b.get("/ui/login")
	return b.post("/ui/login", url.Values{"username": {user}, "password": {password}, "csrf": {csrfOf(b.e.t, p.body)}})
}
