package browser

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/berth-registry/berth/auth"
	"github.com/berth-registry/berth/auth/tokenserver"
	"github.com/berth-registry/berth/internal/testutil"
	"github.com/berth-registry/berth/tlsutil"
)

const (
	tokenService = "berth-registry"
	tokenIssuer  = "berth-auth"
)

// The registry program the tests run, built once per test binary.
var (
	buildOnce   sync.Once
	buildDir    string
	registryBin string
	buildErr    error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// registryProgram builds ./cmd/registry (what users run, with the UI the
// way it mounts it) into a temporary directory.
func registryProgram(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		if buildDir, buildErr = os.MkdirTemp("", "berth-browser-bin-"); buildErr != nil {
			return
		}
		registryBin = filepath.Join(buildDir, "registry")
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "go", "build", "-o", registryBin, "./cmd/registry")
		cmd.Dir = moduleRoot(t)
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build ./cmd/registry: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return registryBin
}

// moduleRoot is the directory of go.mod above the test's directory.
func moduleRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test's directory")
		}
		dir = parent
	}
}

// site is a running registry program with token auth, the token server
// beside it (in the test process), and what clients need to reach both.
type site struct {
	t         *testing.T
	dir       string
	host      string // localhost:port, the name clients and the browser use
	pin       string // the SPKI pin of the registry's certificate (see spkiPin)
	tls       *tls.Config
	signer    *auth.Signer
	passwords map[string]string // alice, bob
	log       *testutil.Buffer  // the registry's log, with its access log
	cmd       *exec.Cmd
	done      chan struct{}
	err       error
}

// base is the URL the browser starts from.
func (s *site) base() string { return "https://" + s.host }

// newSite starts the token server and the registry program over TLS from
// one private CA. The registry's data directory (the root of its
// filesystem storage) is data, or one under the test's temporary
// directory when data is ""; fill, when not nil, writes it before the
// registry starts.
//
// Users (htpasswd, bcrypt) and policy: alice may pull, push and delete
// team/*; every signed-in user (alice, bob) may pull public/*; anonymous
// clients may pull public/*. Nothing else is granted.
func newSite(t *testing.T, data string, fill func(root string)) *site {
	t.Helper()
	chromiumPath(t) // skip before building anything
	bin := registryProgram(t)
	dir := t.TempDir()
	s := &site{t: t, dir: dir, log: &testutil.Buffer{}, done: make(chan struct{}), passwords: map[string]string{
		"alice": "alice-" + rand.Text(), "bob": "bob-" + rand.Text(),
	}}
	certDir := filepath.Join(dir, "certs")
	realm := s.startTokenServer(t, certDir)

	files, err := tlsutil.EnsureCertificates(tlsutil.CAConfig{Dir: certDir, Name: "registry", Hosts: []string{"localhost", "127.0.0.1"}}, false)
	if err != nil {
		t.Fatal(err)
	}
	s.pin = spkiPin(t, files.CertFile)
	if s.tls, err = tlsutil.ClientConfig(files.CAFile); err != nil {
		t.Fatal(err)
	}
	if data == "" {
		data = filepath.Join(dir, "data")
	}
	if err := os.MkdirAll(data, 0o700); err != nil {
		t.Fatal(err)
	}
	if fill != nil {
		fill(data)
	}
	port := testutil.FreePort(t)
	s.host = "localhost:" + strconv.Itoa(port)
	config := filepath.Join(dir, "registry.yml")
	if err := os.WriteFile(config, fmt.Appendf(nil, `version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
http:
  addr: 127.0.0.1:%d
  tls:
    certificate: %s
    key: %s
# The UI signs people in at the token server from the registry's process,
# trusting its certificate through auth.token.jwksca.
auth:
  token:
    realm: %s
    service: %s
    issuer: %s
    rootcertbundle: %s
    jwksca: [%s]
`, data, port, files.CertFile, files.KeyFile, realm, tokenService, tokenIssuer, filepath.Join(certDir, "token.crt"), files.CAFile), 0o600); err != nil {
		t.Fatal(err)
	}

	s.cmd = exec.Command(bin, "serve", config)
	s.cmd.Dir = dir
	s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { s.err = s.cmd.Wait(); close(s.done) }()
	t.Cleanup(s.stop)
	client := s.client(2 * time.Second)
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := client.Get(s.base() + "/v2/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusUnauthorized {
				break
			}
		}
		select {
		case <-s.done:
			t.Fatalf("the registry exited while starting: %v\n%s", s.err, s.log.String())
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("the registry did not answer /v2/ with 401 within a minute\n%s", s.log.String())
		}
	}
	return s
}

// stop ends the registry (SIGINT: a clean shutdown, then a kill after 15s).
func (s *site) stop() {
	select {
	case <-s.done:
		return
	default:
	}
	_ = s.cmd.Process.Signal(os.Interrupt)
	select {
	case <-s.done:
	case <-time.After(15 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
		s.t.Errorf("the registry did not stop within 15s of SIGINT")
	}
	if s.t.Failed() {
		s.t.Logf("registry log:\n%s", s.log.String())
	}
}

// client is an HTTP client that trusts the site's CA.
func (s *site) client(timeout time.Duration) *http.Client {
	return &http.Client{Transport: &http.Transport{TLSClientConfig: s.tls.Clone(), ForceAttemptHTTP2: true}, Timeout: timeout}
}

// startTokenServer runs auth/tokenserver over TLS on loopback with the
// site's users and policy, its certificate from the CA in certDir, its
// signing certificate in certDir/token.crt; it returns the realm.
func (s *site) startTokenServer(t *testing.T, certDir string) string {
	t.Helper()
	ht, _ := auth.ParseHtpasswd(nil)
	for user, pw := range s.passwords {
		if err := ht.SetPassword(user, pw, 4); err != nil { // bcrypt's lowest cost: the tests sign in often
			t.Fatal(err)
		}
	}
	htFile := filepath.Join(s.dir, "htpasswd")
	if err := ht.WriteFile(htFile); err != nil {
		t.Fatal(err)
	}
	users, err := auth.NewUserStore(auth.UserStoreConfig{Path: htFile})
	if err != nil {
		t.Fatal(err)
	}
	priv, err := auth.GenerateKey("ES256")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := auth.SelfSignedCertificate(priv, "berth token signer", 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if s.signer, err = auth.NewSigner(auth.Key{Private: priv, Chain: []*x509.Certificate{cert}}); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(certDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(certDir, "token.crt"), auth.EncodeCertificatesPEM(cert), 0o644); err != nil {
		t.Fatal(err)
	}
	alice, anonymous := "alice", ""
	policy, err := auth.NewPolicy([]auth.Rule{
		{Match: auth.Match{Account: &alice, Name: "team/*"}, Actions: []string{"pull", "push", "delete"}},
		{Match: auth.Match{Name: "public/*"}, Actions: []string{"pull"}},                      // every signed-in user
		{Match: auth.Match{Account: &anonymous, Name: "public/*"}, Actions: []string{"pull"}}, // anonymous clients
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ts, err := tokenserver.New(tokenserver.Config{Issuer: tokenIssuer, Services: []string{tokenService}, Signer: s.signer, Users: users, Policy: policy})
	if err != nil {
		t.Fatal(err)
	}
	files, err := tlsutil.EnsureCertificates(tlsutil.CAConfig{Dir: certDir, Name: "authserver", Hosts: []string{"localhost", "127.0.0.1"}}, false)
	if err != nil {
		t.Fatal(err)
	}
	kp, err := tls.LoadX509KeyPair(files.CertFile, files.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: ts.Handler(), ReadHeaderTimeout: 5 * time.Second,
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{kp}, MinVersion: tls.VersionTLS12}}
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := srv.ServeTLS(ln, "", ""); !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("token server: %v", err)
		}
	})
	t.Cleanup(func() { srv.Close(); wg.Wait() })
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	return "https://localhost:" + port + "/token"
}

// mintToken signs a token for push and pull on repos, for content no user
// of the policy may push (public/*), as a release pipeline would hold.
func (s *site) mintToken(t *testing.T, repos ...string) string {
	t.Helper()
	var access []auth.Scope
	for _, r := range repos {
		access = append(access, auth.Scope{Type: "repository", Name: r, Actions: []string{"pull", "push"}})
	}
	now := time.Now()
	tok, err := s.signer.Sign(auth.Claims{
		Issuer: tokenIssuer, Subject: "publisher", Audience: auth.Audience{tokenService},
		IssuedAt: jwt.NewNumericDate(now), NotBefore: jwt.NewNumericDate(now.Add(-time.Minute)), ExpiresAt: jwt.NewNumericDate(now.Add(10 * time.Minute)),
		Access: access,
	})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}
