package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
	"golang.org/x/crypto/bcrypt"

	"github.com/berth-registry/berth/auth"
	berthcli "github.com/berth-registry/berth/internal/cli"
	"github.com/berth-registry/berth/internal/testutil"
)

func TestMain(m *testing.M) {
	gin.SetMode(gin.ReleaseMode)
	os.Exit(m.Run())
}

// cli runs the authserver command line with stdin and returns stdout and the
// error.
func cli(t *testing.T, stdin string, args ...string) (string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	root := newRootCmd(strings.NewReader(stdin), &out, &errOut)
	root.SetArgs(args)
	err := root.Execute()
	return out.String() + errOut.String(), err
}

// serverCert writes a TLS certificate for 127.0.0.1 and returns its pool.
func serverCert(t *testing.T, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	certFile, keyFile = filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key")
	keyPEM, _ := auth.EncodePrivateKeyPEM(key)
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

// setup writes a configuration with a token key, a user and the given
// server section, using the CLI to make the key and the user.
func setup(t *testing.T, server string) (dir, configFile string) {
	t.Helper()
	dir = t.TempDir()
	configFile = filepath.Join(dir, "config.yml")
	yml := `server:
` + server + `
token:
  issuer: berth-auth
  services: [registry.example.com]
  expiration: 300
  certificate: ` + filepath.Join(dir, "token.crt") + `
  key: ` + filepath.Join(dir, "token.key") + `
users:
  htpasswd: ` + filepath.Join(dir, "htpasswd") + `
  bcryptcost: 10
groups:
  admins: [alice]
acl:
  - match: {group: admins}
    actions: ["*"]
  - match: {account: "*", name: "${account}/*"}
    actions: [pull, push]
  - match: {account: "", name: "public/*"}
    actions: [pull]
`
	if err := os.WriteFile(configFile, []byte(yml), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := cli(t, "", "keys", "generate", "--config", configFile, "--algorithm", "ES256"); err != nil {
		t.Fatalf("keys generate: %v: %s", err, out)
	}
	if out, err := cli(t, "alice-pw\n", "user", "add", "alice", "--config", configFile, "--password-stdin"); err != nil {
		t.Fatalf("user add: %v: %s", err, out)
	}
	return dir, configFile
}

// start runs the server on a random port until the test ends.
func start(t *testing.T, configFile string) (addr string, stop func() error) {
	t.Helper()
	cfg, err := loadConfig(configFile)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), ln) }()
	stopped := false
	stop = func() error {
		if stopped {
			return nil
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(15 * time.Second):
			return errors.New("run did not return after cancel")
		}
	}
	t.Cleanup(func() { _ = stop() })
	return ln.Addr().String(), stop
}

func TestServeTLS(t *testing.T) {
	tmp := t.TempDir()
	certFile, keyFile, pool := serverCert(t, tmp)
	dir, configFile := setup(t, "  certificate: "+certFile+"\n  key: "+keyFile)
	addr, stop := start(t, configFile)

	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}, Timeout: 10 * time.Second}
	req, _ := http.NewRequest(http.MethodGet, "https://"+addr+"/token?account=alice&client_id=docker&offline_token=true&service=registry.example.com&scope=repository:x/y:push", nil)
	req.SetBasicAuth("alice", "alice-pw")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil || resp.StatusCode != 200 {
		t.Fatalf("%d %v %v", resp.StatusCode, m, err)
	}
	if resp.Proto != "HTTP/2.0" {
		t.Errorf("protocol %s, want HTTP/2.0 over TLS", resp.Proto)
	}
	if m["refresh_token"] == nil {
		t.Errorf("no refresh token: %v", m)
	}
	// The token verifies against the generated certificate as root bundle.
	roots, err := auth.LoadCertificates(filepath.Join(dir, "token.crt"))
	if err != nil {
		t.Fatal(err)
	}
	v, err := auth.NewVerifier(auth.VerifierConfig{Issuer: "berth-auth", Service: "registry.example.com", Roots: roots})
	if err != nil {
		t.Fatal(err)
	}
	c, err := v.Verify(m["token"].(string))
	if err != nil || !c.Allows("repository", "x/y", "push") {
		t.Fatalf("claims %+v, %v", c, err)
	}

	// TLS 1.1 is refused.
	old := &tls.Config{RootCAs: pool, MaxVersion: tls.VersionTLS11}
	if conn, err := tls.Dial("tcp", addr, old); err == nil {
		conn.Close()
		t.Error("TLS 1.1 handshake succeeded")
	}
	// Plain HTTP is not served.
	if resp, err := http.Get("http://" + addr + "/healthz"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Error("plain HTTP served on a TLS listener")
		}
	}

	// healthcheck, the subcommand for images without a shell.
	if out, err := cli(t, "", "healthcheck", "--url", "https://"+addr+"/healthz"); err != nil {
		t.Fatalf("healthcheck: %v %s", err, out)
	}

	// Graceful shutdown: run returns nil, the port is closed.
	if err := stop(); err != nil {
		t.Fatalf("run after cancel: %v", err)
	}
	if _, err := cli(t, "", "healthcheck", "--url", "https://"+addr+"/healthz"); err == nil {
		t.Fatal("healthcheck succeeded against a stopped server")
	}
}

func TestServeInsecureOnlyWhenSet(t *testing.T) {
	_, configFile := setup(t, "  insecure: true")
	addr, _ := start(t, configFile)
	resp, err := http.Get("http://" + addr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("healthz %d", resp.StatusCode)
	}
	cfg, _ := loadConfig(configFile)
	cfg.Server.Addr = addr
	u, err := berthcli.HealthURL(cfg.Server.Addr, !cfg.Server.Insecure, "/healthz")
	if err != nil || u != "http://"+addr+"/healthz" {
		t.Fatalf("healthURL %q %v", u, err)
	}

	// Without insecure and with certificate files that do not load: an
	// error, not plain HTTP.
	_, configFile = setup(t, "  addr: 127.0.0.1:0\n  certificate: /nonexistent/server.crt\n  key: /nonexistent/server.key")
	cfg, err = loadConfig(configFile)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	err = run(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), ln)
	if err == nil || !strings.Contains(err.Error(), "server.certificate") || !strings.Contains(err.Error(), "server.insecure") {
		t.Fatalf("run without TLS material: %v", err)
	}
}

// Without certificate files the auth server gets its certificate from the
// private CA, in the registry's certs directory under its own name.
func TestServePrivateCA(t *testing.T) {
	certs := t.TempDir()
	_, configFile := setup(t, "  privateca: {dir: "+certs+", hosts: [auth.example, 127.0.0.1]}")
	addr, stop := start(t, configFile)
	waitHealthy(t, addr)
	for _, f := range []string{"ca.crt", "ca.key", "authserver.crt", "authserver.key"} {
		if _, err := os.Stat(filepath.Join(certs, f)); err != nil {
			t.Fatalf("private CA file: %v", err)
		}
	}
	if _, err := os.Stat(filepath.Join(certs, "server.crt")); err == nil {
		t.Fatal("server.crt written: it would clash with another program's certificate")
	}
	caPEM, err := os.ReadFile(filepath.Join(certs, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}, Timeout: 10 * time.Second}
	resp, err := client.Get("https://" + addr + "/healthz")
	if err != nil {
		t.Fatalf("TLS with the private CA as the only root: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.TLS == nil || resp.TLS.PeerCertificates[0].VerifyHostname("auth.example") != nil {
		t.Fatalf("healthz %d, certificate for auth.example: %v", resp.StatusCode, resp.TLS != nil)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}

	// A second start reuses the CA and the certificate.
	before, _ := os.ReadFile(filepath.Join(certs, "authserver.crt"))
	addr, _ = start(t, configFile)
	waitHealthy(t, addr)
	after, _ := os.ReadFile(filepath.Join(certs, "authserver.crt"))
	if !bytes.Equal(before, after) {
		t.Fatal("second start re-issued the certificate")
	}
	if cfg, err := loadConfig(configFile); err != nil || cfg.Server.tlsConfig().CA == nil || cfg.Server.tlsConfig().CA.Name != "authserver" {
		t.Fatalf("tlsConfig: %v", err)
	}
}

// waitHealthy waits until the server at addr answers /healthz over TLS
// (run creates the TLS material before it serves).
func waitHealthy(t *testing.T, addr string) {
	t.Helper()
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}, Timeout: time.Second}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		resp, err := client.Get("https://" + addr + "/healthz")
		if err == nil {
			resp.Body.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no TLS answer from %s: %v", addr, err)
		}
	}
}

func TestConfigFileAndEnvironment(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.yml")
	// DESIGN.md's example, verbatim.
	design := `server:
  addr: :5001
  certificate: /certs/server.crt
  key: /certs/server.key
token:
  issuer: berth-auth
  services: [registry.example.com]   # accepted ` + "`service`" + ` values (the audience)
  expiration: 300                    # seconds
  certificate: /certs/token.crt      # signing certificate (x5c) …
  key: /certs/token.key              # … and its key
  refresh_expiration: 2592000
users:
  htpasswd: /config/htpasswd
groups:
  admins: [alice]
acl:
  - match: {group: admins}            # or account: a name, a glob, or /regex/
    actions: ["*"]
  - match: {account: "*", name: "${account}/*"}
    actions: [pull, push]
  - match: {account: "", name: "public/*"}   # "" = anonymous
    actions: [pull]
`
	if err := os.WriteFile(path, []byte(design), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("AUTHSERVER_TOKEN_EXPIRATION", "600")
	t.Setenv("AUTHSERVER_SERVER_INSECURE", "true")
	t.Setenv("AUTHSERVER_TOKEN_SERVICES", "[a.example, b.example]")
	cfg, err := loadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Token.Expiration != 600 || !cfg.Server.Insecure || len(cfg.Token.Services) != 2 || cfg.Users.Htpasswd != "/config/htpasswd" ||
		cfg.Token.RefreshExpiration != 2592000 || len(cfg.ACL) != 3 || cfg.ACL[2].Match.Account == nil || *cfg.ACL[2].Match.Account != "" {
		t.Fatalf("config %+v", cfg)
	}
	if _, err := auth.NewPolicy(cfg.ACL, cfg.Groups); err != nil {
		t.Fatalf("DESIGN.md's acl: %v", err)
	}
	if err := os.WriteFile(path, []byte("token:\n  expiry: 5\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := loadConfig(path); err == nil || !strings.Contains(err.Error(), "expiry") {
		t.Fatalf("unknown key: %v", err)
	}
	t.Setenv("AUTHSERVER_TOKEN_EXPIRATION", "30")
	if _, err := loadConfig(""); err == nil {
		t.Fatal("expiration of 30 s accepted")
	}
}

func TestUserCommands(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "sub", "htpasswd")
	if out, err := cli(t, "pw-one\n", "user", "add", "bob", "--htpasswd", file, "--password-stdin"); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	testutil.CheckPrivate(t, file)
	if _, err := cli(t, "x\n", "user", "add", "bob", "--htpasswd", file, "--password-stdin"); err == nil {
		t.Fatal("adding an existing user succeeded")
	}
	if _, err := cli(t, "", "user", "add", "carol", "secret-as-argument", "--htpasswd", file); err == nil {
		t.Fatal("a password argument was accepted")
	}
	if out, err := cli(t, "", "user", "add", "carol", "--htpasswd", file); err == nil || !strings.Contains(err.Error(), "--password-stdin") {
		t.Fatalf("no terminal and no --password-stdin: %v %s", err, out)
	}
	if _, err := cli(t, "pw\n", "user", "add", "carol", "--htpasswd", file, "--password-stdin", "--cost", "4"); err == nil {
		t.Fatal("bcrypt cost 4 accepted")
	}
	if _, err := cli(t, "pw-two\n", "user", "add", "carol", "--htpasswd", file, "--password-stdin", "--cost", "11"); err != nil {
		t.Fatal(err)
	}
	if _, err := cli(t, "pw-three\n", "user", "passwd", "bob", "--htpasswd", file, "--password-stdin"); err != nil {
		t.Fatal(err)
	}
	if _, err := cli(t, "pw\n", "user", "passwd", "nobody", "--htpasswd", file, "--password-stdin"); err == nil {
		t.Fatal("passwd of a missing user succeeded")
	}
	out, err := cli(t, "", "user", "list", "--htpasswd", file)
	if err != nil || out != "bob\ncarol\n" {
		t.Fatalf("list: %q %v", out, err)
	}
	data, _ := os.ReadFile(file)
	if !strings.Contains(string(data), "bob:$2y$10$") || !strings.Contains(string(data), "carol:$2y$11$") {
		t.Fatalf("file:\n%s", data)
	}

	if bin, err := exec.LookPath("htpasswd"); err == nil {
		for _, up := range [][2]string{{"bob", "pw-three"}, {"carol", "pw-two"}} {
			if out, err := exec.Command(bin, "-v", "-b", file, up[0], up[1]).CombinedOutput(); err != nil {
				t.Errorf("Apache htpasswd rejects %s: %v %s", up[0], err, out)
			}
		}
		// An MD5 entry added by Apache shows up as unusable.
		if out, err := exec.Command(bin, "-m", "-b", file, "legacy", "pw").CombinedOutput(); err != nil {
			t.Fatalf("%v %s", err, out)
		}
		out, _ = cli(t, "", "user", "list", "--htpasswd", file)
		if !strings.Contains(out, "legacy\t(Apache MD5 ($apr1$) hash: cannot log in") {
			t.Fatalf("list with an MD5 entry: %q", out)
		}
	} else if os.Getenv("CI") == "true" {
		t.Fatal("htpasswd not found: CI must install apache2-utils")
	}

	if _, err := cli(t, "", "user", "rm", "bob", "--htpasswd", file); err != nil {
		t.Fatal(err)
	}
	if _, err := cli(t, "", "user", "rm", "bob", "--htpasswd", file); err == nil {
		t.Fatal("removing a missing user succeeded")
	}
	if out, _ := cli(t, "", "user", "list", "--htpasswd", file); strings.Contains(out, "bob") {
		t.Fatalf("bob still listed: %q", out)
	}
}

func TestKeysGenerate(t *testing.T) {
	dir := t.TempDir()
	key, cert := filepath.Join(dir, "k", "token.key"), filepath.Join(dir, "k", "token.crt")
	out, err := cli(t, "", "keys", "generate", "--key", key, "--certificate", cert)
	if err != nil {
		t.Fatalf("%v %s", err, out)
	}
	testutil.CheckPrivate(t, key)
	k, err := auth.LoadKey(key, cert)
	if err != nil {
		t.Fatal(err)
	}
	s, err := auth.NewSigner(k)
	if err != nil || s.Algorithm() != auth.RS256 || !strings.Contains(out, s.KeyID()) {
		t.Fatalf("signer %v %v, output %q", s, err, out)
	}
	before, _ := os.ReadFile(key)
	if _, err := cli(t, "", "keys", "generate", "--key", key, "--certificate", cert); err == nil || !strings.Contains(err.Error(), "exists") {
		t.Fatalf("overwrite without --force: %v", err)
	}
	if after, _ := os.ReadFile(key); !bytes.Equal(before, after) {
		t.Fatal("key changed by a refused generate")
	}
	if _, err := cli(t, "", "keys", "generate", "--key", key, "--certificate", cert, "--force", "--algorithm", "EdDSA"); err != nil {
		t.Fatal(err)
	}
	if k, err := auth.LoadKey(key, cert); err != nil {
		t.Fatal(err)
	} else if alg, _ := auth.AlgorithmFor(k.Private.Public()); alg != auth.EdDSA {
		t.Fatalf("after --force: %s", alg)
	}

	// keys jwks prints what a registry's auth.token.jwks file holds.
	cfg := filepath.Join(dir, "c.yml")
	if err := os.WriteFile(cfg, []byte("token:\n  key: "+key+"\n  certificate: "+cert+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err = cli(t, "", "keys", "jwks", cfg)
	if err != nil {
		t.Fatal(err)
	}
	set, err := auth.ParseJWKS([]byte(out))
	if err != nil || len(set.Keys) != 1 || set.Keys[0].Kty != "OKP" {
		t.Fatalf("jwks %q %v", out, err)
	}
}

func TestVersion(t *testing.T) {
	out, err := cli(t, "", "version")
	if err != nil || !strings.HasPrefix(out, "authserver dev") {
		t.Fatalf("%q %v", out, err)
	}
}

// TestPlainListenerRedirects: server.httpaddr redirects to HTTPS (ACME
// http-01 challenges would be answered there) and serves nothing itself.
func TestPlainListenerRedirects(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	plainAddr := ln.Addr().String()
	ln.Close()
	_, configFile := setup(t, "  privateca: {dir: "+t.TempDir()+", hosts: [127.0.0.1]}\n  httpaddr: "+plainAddr)
	addr, stop := start(t, configFile)
	defer stop()
	waitHealthy(t, addr)
	_, tlsPort, _ := net.SplitHostPort(addr)
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }, Timeout: 5 * time.Second}
	resp, err := client.Get("http://" + plainAddr + "/token?service=x")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	want := "https://127.0.0.1:" + tlsPort + "/token?service=x"
	if resp.StatusCode != http.StatusPermanentRedirect || resp.Header.Get("Location") != want {
		t.Fatalf("plain GET: %d %q, want 308 %q", resp.StatusCode, resp.Header.Get("Location"), want)
	}
	resp, err = client.PostForm("http://"+plainAddr+"/token", url.Values{"grant_type": {"password"}, "password": {"secret"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("plain POST of a password: %d, want 400", resp.StatusCode)
	}
}

// Eight `user add` commands at once (each a read, a bcrypt hash and a
// write of the whole file) lose no user: the file is locked from the read
// to the write.
func TestConcurrentUserCommands(t *testing.T) {
	file := filepath.Join(t.TempDir(), "htpasswd")
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			user := fmt.Sprintf("user%d", i)
			if out, err := cli(t, "pw-"+user+"\n", "user", "add", user, "--htpasswd", file, "--password-stdin"); err != nil {
				t.Errorf("user add %s: %v %s", user, err, out)
			}
		})
	}
	wg.Wait()
	h, err := auth.ReadHtpasswd(file)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 8 {
		user := fmt.Sprintf("user%d", i)
		hash, ok := h.Hash(user)
		if !ok {
			t.Errorf("%s was lost", user)
		} else if bcrypt.CompareHashAndPassword([]byte(hash), []byte("pw-"+user)) != nil {
			t.Errorf("%s has another user's password", user)
		}
	}
}
