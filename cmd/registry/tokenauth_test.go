package main

import (
	"context"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/berth-registry/berth/auth"
	"github.com/berth-registry/berth/auth/tokenserver"
	"github.com/berth-registry/berth/internal/testutil"
	"github.com/berth-registry/berth/tlsutil"
)

const (
	authHost     = "auth.berth.test"
	tokenService = "registry.berth.test"
	tokenIssuer  = "berth-auth"
)

// tokenSetup is a running token server and what a registry needs to trust it.
type tokenSetup struct {
	realm      string // https://auth.berth.test:<port>/token
	addr       string // the loopback address it listens on
	port       string
	key        *auth.Key
	bundleFile string // the signing certificate: the registry's rootcertbundle
}

// startTokenServer runs the real token server (auth/tokenserver) over TLS
// from the same private CA as the registry, with users alice (push and
// pull on team/*, the catalog) and bob (pull on team/*); anonymous clients
// may pull public/*. Its certificate names authHost, localhost and
// 127.0.0.1.
func startTokenServer(t *testing.T, certDir string) *tokenSetup {
	t.Helper()
	dir := t.TempDir()
	ht, _ := auth.ParseHtpasswd(nil)
	for user, pw := range map[string]string{"alice": "alice-password", "bob": "bob-password"} {
		if err := ht.SetPassword(user, pw, 4); err != nil {
			t.Fatal(err)
		}
	}
	htFile := filepath.Join(dir, "htpasswd")
	if err := ht.WriteFile(htFile); err != nil {
		t.Fatal(err)
	}
	users, err := auth.NewUserStore(auth.UserStoreConfig{Path: htFile})
	if err != nil {
		t.Fatal(err)
	}
	// RS256 with a certificate: the signer sends x5c and an RFC 7638 kid.
	priv, err := auth.GenerateKey("RS256")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := auth.SelfSignedCertificate(priv, "berth token signer", 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	key := &auth.Key{Private: priv, Chain: []*x509.Certificate{cert}}
	signer, err := auth.NewSigner(*key)
	if err != nil {
		t.Fatal(err)
	}
	bundle := filepath.Join(dir, "token.crt")
	if err := os.WriteFile(bundle, auth.EncodeCertificatesPEM(cert), 0o644); err != nil {
		t.Fatal(err)
	}
	alice, bob, anonymous := "alice", "bob", ""
	policy, err := auth.NewPolicy([]auth.Rule{
		{Match: auth.Match{Account: &alice, Type: "registry", Name: "catalog"}, Actions: []string{"*"}},
		{Match: auth.Match{Account: &alice, Name: "team/*"}, Actions: []string{"pull", "push", "delete"}},
		{Match: auth.Match{Account: &bob, Name: "team/*"}, Actions: []string{"pull"}},
		{Match: auth.Match{Account: &anonymous, Name: "public/*"}, Actions: []string{"pull"}},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ts, err := tokenserver.New(tokenserver.Config{Issuer: tokenIssuer, Services: []string{tokenService}, Signer: signer, Users: users, Policy: policy})
	if err != nil {
		t.Fatal(err)
	}
	tlsSrv, err := tlsutil.NewServer(tlsutil.Config{CA: &tlsutil.CAConfig{Dir: certDir, Name: "authserver", Hosts: []string{authHost, "localhost", "127.0.0.1"}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: ts.Handler(), TLSConfig: tlsSrv.TLSConfig(), ReadHeaderTimeout: 5 * time.Second}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = srv.ServeTLS(ln, "", "") }()
	t.Cleanup(func() { srv.Close(); wg.Wait() })
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	return &tokenSetup{
		realm: "https://" + net.JoinHostPort(authHost, port) + "/token", addr: ln.Addr().String(), port: port,
		key: key, bundleFile: bundle,
	}
}

// startTokenAuthRegistry runs the registry with auth.token pointing at ts,
// trusting its signing certificate, its log written to logw.
func startTokenAuthRegistry(t *testing.T, logw io.Writer) (*testServer, *tokenSetup) {
	t.Helper()
	return startTokenAuthRegistryWith(t, logw, func(c *Config, ts *tokenSetup, certDir string) {
		c.Auth.Token.RootCertBundle = ts.bundleFile
	})
}

// startTokenAuthRegistryWith lets trust be configured another way.
func startTokenAuthRegistryWith(t *testing.T, logw io.Writer, trust func(c *Config, ts *tokenSetup, certDir string)) (*testServer, *tokenSetup) {
	t.Helper()
	root := t.TempDir()
	ts := startTokenServer(t, testCertDir(root))
	srv := startServerWith(t, root, func(c *Config) {
		c.Auth.Token.Realm = ts.realm
		c.Auth.Token.Service = tokenService
		c.Auth.Token.Issuer = tokenIssuer
		trust(c, ts, testCertDir(root))
	}, logw)
	srv.alias(authHost, ts.port, ts.addr)
	return srv, ts
}

func statusOf(err error) int {
	var te *transport.Error
	if errors.As(err, &te) {
		return te.StatusCode
	}
	return 0
}

func TestTokenAuthPushPull(t *testing.T) {
	var logs testutil.Buffer
	srv, _ := startTokenAuthRegistry(t, &logs)
	repo := srv.repo(t, "team/app")
	img := randomImage(t, 2)
	as := func(user, pw string) []remote.Option {
		return append(srv.opts(t), remote.WithAuth(&authn.Basic{Username: user, Password: pw}))
	}

	// An anonymous client gets the challenge, naming the scope it needs.
	resp, err := srv.tr.RoundTrip(mustRequest(t, "GET", srv.url("/v2/team/app/manifests/latest")))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	want := `Bearer realm="https://` + net.JoinHostPort(authHost, srv.aliasPort(authHost)) + `/token",service="` + tokenService + `",scope="repository:team/app:pull"`
	if resp.StatusCode != 401 || resp.Header.Get("WWW-Authenticate") != want {
		t.Fatalf("anonymous: %d %q, want 401 %q", resp.StatusCode, resp.Header.Get("WWW-Authenticate"), want)
	}
	if _, err := remote.Image(repo.Tag("v1"), srv.opts(t)...); statusOf(err) != 401 {
		t.Fatalf("anonymous pull: %v, want 401", err)
	}

	// alice logs in through the challenge, pushes and pulls.
	if err := remote.Write(repo.Tag("v1"), img, as("alice", "alice-password")...); err != nil {
		t.Fatalf("alice push: %v", err)
	}
	got, err := remote.Image(repo.Tag("v1"), as("alice", "alice-password")...)
	if err != nil {
		t.Fatal(err)
	}
	checkSameImage(t, img, got)
	if repos, err := remote.Catalog(t.Context(), srv.registry(t), as("alice", "alice-password")...); err != nil || len(repos) != 1 {
		t.Fatalf("alice catalog: %v, %v", repos, err)
	}

	// bob may pull, not push, not read the catalog.
	got, err = remote.Image(repo.Tag("v1"), as("bob", "bob-password")...)
	if err != nil {
		t.Fatalf("bob pull: %v", err)
	}
	checkSameImage(t, img, got)
	err = remote.Write(repo.Tag("bob"), randomImage(t, 1), as("bob", "bob-password")...)
	if s := statusOf(err); s != 401 && s != 403 {
		t.Fatalf("bob push: %v, want refused", err)
	}
	if _, err := remote.Catalog(t.Context(), srv.registry(t), as("bob", "bob-password")...); statusOf(err) != 401 {
		t.Fatalf("bob catalog: %v, want 401", err)
	}
	// A wrong password gets no token at all.
	if _, err := remote.Image(repo.Tag("v1"), as("alice", "wrong")...); err == nil {
		t.Fatal("wrong password pulled")
	}

	// The token's subject is in the access log of every request.
	log := logs.String()
	if !strings.Contains(log, "user=alice") || !strings.Contains(log, "user=bob") {
		t.Fatalf("access log lacks the token subjects:\n%s", log)
	}
	if strings.Contains(log, "alice-password") || strings.Contains(log, "Bearer ey") {
		t.Fatal("a password or token reached the log")
	}
}

// TestCesantaShapedToken: a token as cesanta/docker_auth issues it (RS256,
// kid the RFC 7638 thumbprint, no x5c, aud a string) is accepted.
func TestCesantaShapedToken(t *testing.T) {
	srv, ts := startTokenAuthRegistry(t, nil)
	kid, err := auth.Thumbprint(ts.key.Private.Public())
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tok := jwt.NewWithClaims(jwt.SigningMethodRS256, jwt.MapClaims{
		"iss": tokenIssuer, "sub": "ci-bot", "aud": tokenService,
		"exp": now.Add(5 * time.Minute).Unix(), "nbf": now.Add(-time.Second).Unix(), "iat": now.Unix(), "jti": "cesanta-1",
		"access": []map[string]any{{"type": "repository", "name": "team/app", "actions": []string{"pull", "push"}}},
	})
	tok.Header["kid"] = kid
	signed, err := tok.SignedString(ts.key.Private)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(signed, "x5c") {
		t.Fatal("test token carries x5c")
	}
	req := mustRequest(t, "POST", srv.url("/v2/team/app/blobs/uploads/"))
	req.Header.Set("Authorization", "Bearer "+signed)
	resp, err := srv.tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("cesanta-shaped token: %d, want 202", resp.StatusCode)
	}
}

// TestJWKSFromURL: the registry trusts the keys the auth server publishes
// at its JWKS URL, fetched over HTTPS trusting the private CA (without that
// CA the fetch fails and so does the push).
func TestJWKSFromURL(t *testing.T) {
	srv, _ := startTokenAuthRegistryWith(t, nil, func(c *Config, ts *tokenSetup, certDir string) {
		c.Auth.Token.JWKS = "https://" + net.JoinHostPort("localhost", ts.port) + "/.well-known/jwks.json"
		c.Auth.Token.JWKSCA = []string{filepath.Join(certDir, "ca.crt")}
	})
	opts := append(srv.opts(t), remote.WithAuth(&authn.Basic{Username: "alice", Password: "alice-password"}))
	img := randomImage(t, 1)
	if err := remote.Write(srv.repo(t, "team/jwks").Tag("v1"), img, opts...); err != nil {
		t.Fatalf("push with JWKS-trusted tokens: %v", err)
	}
	got, err := remote.Image(srv.repo(t, "team/jwks").Tag("v1"), opts...)
	if err != nil {
		t.Fatal(err)
	}
	checkSameImage(t, img, got)
}

func mustRequest(t *testing.T, method, url string) *http.Request {
	t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// aliasPort is the port of the name host in s's dial table.
func (s *testServer) aliasPort(host string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	for name := range s.names {
		if h, p, _ := net.SplitHostPort(name); h == host {
			return p
		}
	}
	return ""
}
