package tokenserver

import (
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/berth-registry/berth/auth"
	"github.com/berth-registry/berth/internal/testutil"
)

func TestMain(m *testing.M) {
	gin.SetMode(gin.ReleaseMode)
	os.Exit(m.Run())
}

const (
	service  = "registry.example.com"
	service2 = "mirror.example.com"
	issuer   = "berth-auth"
)

var (
	signingOnce sync.Once
	signingKey  auth.Key
)

// testSigningKey is one RSA key with a self-signed certificate per test
// binary (RSA key generation is slow).
func testSigningKey(t testing.TB) auth.Key {
	t.Helper()
	signingOnce.Do(func() {
		k, err := auth.GenerateKey(auth.RS256)
		if err != nil {
			panic(err)
		}
		c, err := auth.SelfSignedCertificate(k, "test signer", time.Hour)
		if err != nil {
			panic(err)
		}
		signingKey = auth.Key{Private: k, Chain: []*x509.Certificate{c}}
	})
	return signingKey
}

// clock is a settable time source.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

type fixture struct {
	srv      *Server
	users    *auth.UserStore
	htpasswd string
	verifier *auth.Verifier
	clock    *clock
	log      *testutil.Buffer
	signer   *auth.Signer
}

// Users of every fixture: alice is an admin, bob an ordinary user.
const (
	alicePW = "alice-Secret-1"
	bobPW   = "bob-Secret-2"
)

func policyRules() []auth.Rule {
	anyUser, anon := "*", ""
	return []auth.Rule{
		{Match: auth.Match{Group: "admins"}, Actions: []string{"*"}},
		{Match: auth.Match{Group: "admins", Type: "registry", Name: "catalog"}, Actions: []string{"*"}},
		{Match: auth.Match{Account: &anyUser, Name: "${account}/*"}, Actions: []string{"pull", "push"}},
		{Match: auth.Match{Account: &anyUser, Name: "team/*"}, Actions: []string{"pull", "push"}},
		{Match: auth.Match{Account: &anyUser, Name: "other/*"}, Actions: []string{"pull"}},
		{Match: auth.Match{Account: &anon, Name: "public/*"}, Actions: []string{"pull"}},
		{Match: auth.Match{Account: &anyUser, Name: "public/*"}, Actions: []string{"pull"}},
	}
}

func newFixture(t testing.TB, cost int, edit ...func(*Config)) *fixture {
	t.Helper()
	f := &fixture{clock: &clock{t: time.Now()}, log: &testutil.Buffer{}}
	f.htpasswd = filepath.Join(t.TempDir(), "htpasswd")
	var h auth.Htpasswd
	for _, up := range [][2]string{{"alice", alicePW}, {"bob", bobPW}} {
		if err := h.SetPassword(up[0], up[1], cost); err != nil {
			t.Fatal(err)
		}
	}
	if err := h.WriteFile(f.htpasswd); err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.NewJSONHandler(f.log, nil))
	var err error
	if f.users, err = auth.NewUserStore(auth.UserStoreConfig{Path: f.htpasswd, Logger: logger}); err != nil {
		t.Fatal(err)
	}
	policy, err := auth.NewPolicy(policyRules(), map[string][]string{"admins": {"alice"}})
	if err != nil {
		t.Fatal(err)
	}
	key := testSigningKey(t)
	if f.signer, err = auth.NewSigner(key); err != nil {
		t.Fatal(err)
	}
	cfg := Config{
		Issuer:   issuer,
		Services: []string{service, service2},
		Signer:   f.signer,
		Users:    f.users,
		Policy:   policy,
		Logger:   logger,
		Now:      f.clock.Now,
	}
	for _, e := range edit {
		e(&cfg)
	}
	if f.srv, err = New(cfg); err != nil {
		t.Fatal(err)
	}
	f.verifier, err = auth.NewVerifier(auth.VerifierConfig{
		Issuer: issuer, Service: service, Roots: key.Chain, Now: f.clock.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// get sends GET /token with the query and optional Basic credentials from
// the client address ip.
func (f *fixture) get(t testing.TB, query, user, password, ip string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, "/token?"+query, nil)
	if user != "" || password != "" {
		req.SetBasicAuth(user, password)
	}
	return f.do(req, ip)
}

// post sends POST /token with a form body.
func (f *fixture) post(t testing.TB, form url.Values, ip string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(http.MethodPost, "/token", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return f.do(req, ip)
}

func (f *fixture) do(req *http.Request, ip string) *httptest.ResponseRecorder {
	if ip == "" {
		ip = "192.0.2.1"
	}
	req.RemoteAddr = ip + ":40000"
	w := httptest.NewRecorder()
	f.srv.Handler().ServeHTTP(w, req)
	return w
}

// body decodes a JSON response into a map.
func body(t testing.TB, w *httptest.ResponseRecorder) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(w.Body.Bytes(), &m); err != nil {
		t.Fatalf("status %d, body %q: %v", w.Code, w.Body.String(), err)
	}
	return m
}

// header decodes the JOSE header of a token.
func header(t testing.TB, token string) map[string]any {
	t.Helper()
	raw, err := base64.RawURLEncoding.DecodeString(strings.Split(token, ".")[0])
	if err != nil {
		t.Fatal(err)
	}
	var h map[string]any
	if err := json.Unmarshal(raw, &h); err != nil {
		t.Fatal(err)
	}
	return h
}
