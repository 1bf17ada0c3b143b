package tlsutil_test

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berth-registry/berth/tlsutil"
)

func get(client *http.Client, url string) (*http.Response, string, error) {
	resp, err := client.Get(url)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp, string(body), err
}

func TestPrivateCAServer(t *testing.T) {
	t.Chdir(t.TempDir())
	logger, logs := testLogger(t)
	srv, err := tlsutil.NewServer(tlsutil.Config{CA: &tlsutil.CAConfig{
		Hosts: []string{"registry.test", "127.0.0.1"}, ClientPort: "5000"}}, logger)
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join("certs", "ca.crt")
	fp := sha256Fingerprint(t, caFile)
	for _, want := range []string{"created a private CA", caFile, fp,
		"/etc/docker/certs.d/registry.test:5000/ca.crt", `certs.d\registry.test5000\ca.crt`,
		"/etc/containers/certs.d/registry.test:5000/ca.crt"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("start-up log lacks %q", want)
		}
	}
	addr := serveTLS(t, srv.TLSConfig(), nil)

	// A client that trusts the CA connects, over HTTP/2.
	trusting, err := tlsutil.ClientConfig(caFile)
	if err != nil {
		t.Fatal(err)
	}
	resp, body, err := get(httpsClient(trusting), "https://"+addr+"/")
	if err != nil {
		t.Fatalf("client trusting the CA: %v", err)
	}
	if resp.Proto != "HTTP/2.0" || body != "hello HTTP/2.0" {
		t.Errorf("got %s %q, want HTTP/2.0", resp.Proto, body)
	}
	// ... and over HTTP/1.1 when it does not offer h2.
	h1Config := trusting.Clone()
	h1Config.NextProtos = nil
	h1 := &http.Client{Transport: &http.Transport{TLSClientConfig: h1Config,
		TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{}}}
	if resp, _, err := get(h1, "https://"+addr+"/"); err != nil || resp.Proto != "HTTP/1.1" {
		t.Errorf("HTTP/1.1 client: %v %v", resp, err)
	}

	// Clients that do not trust the CA are refused.
	system, _ := tlsutil.ClientConfig()
	other := newTestCA(t)
	otherPool := x509.NewCertPool()
	otherPool.AddCert(other.cert)
	for name, tc := range map[string]*tls.Config{"system roots": system, "another CA": {RootCAs: otherPool}} {
		_, _, err := get(httpsClient(tc), "https://"+addr+"/")
		var unknown x509.UnknownAuthorityError
		if !errors.As(err, &unknown) {
			t.Errorf("client trusting %s: err = %v, want an unknown authority", name, err)
		}
	}

	// A second start finds everything in place and creates nothing.
	logger2, logs2 := testLogger(t)
	if _, err := tlsutil.NewServer(tlsutil.Config{CA: &tlsutil.CAConfig{Hosts: []string{"registry.test", "127.0.0.1"}}}, logger2); err != nil {
		t.Fatal(err)
	}
	if l := logs2.String(); strings.Contains(l, "created") || strings.Contains(l, "issued") || !strings.Contains(l, fp) {
		t.Errorf("second start log:\n%s", l)
	}
}

func sha256Fingerprint(t *testing.T, caFile string) string {
	t.Helper()
	text, err := tlsutil.TrustInstructions(caFile)
	if err != nil {
		t.Fatal(err)
	}
	_, after, _ := strings.Cut(text, "SHA-256 fingerprint ")
	fp, _, _ := strings.Cut(after, "\n")
	if len(fp) != 95 {
		t.Fatalf("fingerprint %q", fp)
	}
	return fp
}

func TestZeroConfigIsPrivateCA(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	srv, err := tlsutil.NewServer(tlsutil.Config{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	addr := serveTLS(t, srv.TLSConfig(), nil)
	tc, err := tlsutil.ClientConfig(filepath.Join(dir, "certs", "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	tc.ServerName = "localhost"
	conn, err := tls.Dial("tcp", addr, tc)
	if err != nil {
		t.Fatalf("default certificate does not verify for localhost: %v", err)
	}
	conn.Close()
}

func TestTLSVersions(t *testing.T) {
	ca := newTestCA(t)
	leaf := newTestCert(t, &x509.Certificate{DNSNames: []string{"localhost"}}, &ca)
	certFile, keyFile := leaf.write(t, t.TempDir(), "server")

	for _, tt := range []struct {
		minimum  string
		accepted []uint16
		refused  []uint16
	}{
		{"", []uint16{tls.VersionTLS12, tls.VersionTLS13}, []uint16{tls.VersionTLS10, tls.VersionTLS11}},
		{"tls1.2", []uint16{tls.VersionTLS12}, []uint16{tls.VersionTLS11}},
		{"tls1.3", []uint16{tls.VersionTLS13}, []uint16{tls.VersionTLS12}},
	} {
		srv, err := tlsutil.NewServer(tlsutil.Config{Certificate: certFile, Key: keyFile, MinimumTLS: tt.minimum}, nil)
		if err != nil {
			t.Fatal(err)
		}
		addr := serveTLS(t, srv.TLSConfig(), nil)
		dial := func(v uint16) error {
			conn, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, MinVersion: v, MaxVersion: v})
			if err == nil {
				if got := conn.ConnectionState().Version; got != v {
					err = errors.New("negotiated " + tls.VersionName(got))
				}
				conn.Close()
			}
			return err
		}
		for _, v := range tt.accepted {
			if err := dial(v); err != nil {
				t.Errorf("minimumtls %q: %s client refused: %v", tt.minimum, tls.VersionName(v), err)
			}
		}
		for _, v := range tt.refused {
			if err := dial(v); err == nil {
				t.Errorf("minimumtls %q: %s client accepted", tt.minimum, tls.VersionName(v))
			}
		}
	}
	for _, bad := range []string{"tls1.1", "tls1.0", "1.2"} {
		if _, err := tlsutil.NewServer(tlsutil.Config{Certificate: certFile, Key: keyFile, MinimumTLS: bad}, nil); err == nil {
			t.Errorf("minimumtls %q accepted", bad)
		}
	}
}

func TestCertificateFilesReload(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t)
	issue := func() testCert {
		return newTestCert(t, &x509.Certificate{DNSNames: []string{"localhost"}}, &ca)
	}
	first := issue()
	certFile, keyFile := first.write(t, dir, "server")
	logger, logs := testLogger(t)
	srv, err := tlsutil.NewServer(tlsutil.Config{Certificate: certFile, Key: keyFile}, logger)
	if err != nil {
		t.Fatal(err)
	}
	addr := serveTLS(t, srv.TLSConfig(), nil)
	serial := func() string { return servedCert(t, addr, "localhost").SerialNumber.String() }
	waitFor := func(want testCert) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for serial() != want.cert.SerialNumber.String() {
			if time.Now().After(deadline) {
				t.Fatalf("served serial %s, want %s", serial(), want.cert.SerialNumber)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	waitFor(first)

	// New files (renewal by an outside tool) are served without a restart.
	second := issue()
	second.write(t, dir, "server")
	waitFor(second)

	// A broken pair (new certificate, old key) is refused and logged; the
	// previous pair stays in service.
	third := issue()
	if err := os.WriteFile(certFile, third.certPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2500 * time.Millisecond)
	if got := serial(); got != second.cert.SerialNumber.String() {
		t.Errorf("after a broken pair, served %s, want the previous %s", got, second.cert.SerialNumber)
	}
	if !strings.Contains(logs.String(), "does not load") {
		t.Errorf("broken pair not logged")
	}
	// Completing the pair brings in the new certificate.
	if err := os.WriteFile(keyFile, third.keyPEM(t), 0o600); err != nil {
		t.Fatal(err)
	}
	waitFor(third)
}

func TestMutualTLS(t *testing.T) {
	t.Chdir(t.TempDir())
	clientCA := newTestCA(t)
	if err := os.WriteFile("clients.crt", clientCA.certPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	srv, err := tlsutil.NewServer(tlsutil.Config{ClientCAs: []string{"clients.crt"},
		CA: &tlsutil.CAConfig{Hosts: []string{"127.0.0.1"}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	addr := serveTLS(t, srv.TLSConfig(), nil)
	base, err := tlsutil.ClientConfig(filepath.Join("certs", "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	withCert := func(c *testCert) *tls.Config {
		tc := base.Clone()
		if c != nil {
			tc.Certificates = []tls.Certificate{c.tlsCert()}
		}
		return tc
	}
	good := newTestCert(t, &x509.Certificate{ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}, &clientCA)
	stranger := newTestCert(t, &x509.Certificate{ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}, nil)

	if _, _, err := get(httpsClient(withCert(&good)), "https://"+addr+"/"); err != nil {
		t.Errorf("client with a certificate from the client CA: %v", err)
	}
	if _, _, err := get(httpsClient(withCert(nil)), "https://"+addr+"/"); err == nil {
		t.Error("client without a certificate was accepted")
	}
	if _, _, err := get(httpsClient(withCert(&stranger)), "https://"+addr+"/"); err == nil {
		t.Error("client with a certificate from another CA was accepted")
	}
}

func TestConfigErrors(t *testing.T) {
	dir := t.TempDir()
	leaf := newTestCert(t, &x509.Certificate{DNSNames: []string{"localhost"}}, nil)
	certFile, keyFile := leaf.write(t, dir, "server")
	for name, cfg := range map[string]tlsutil.Config{
		"two sources":     {Certificate: certFile, Key: keyFile, CA: &tlsutil.CAConfig{Dir: dir}},
		"files and acme":  {Certificate: certFile, Key: keyFile, ACME: &tlsutil.ACMEConfig{Hosts: []string{"r.example"}}},
		"no key":          {Certificate: certFile},
		"missing file":    {Certificate: certFile, Key: filepath.Join(dir, "nope.key")},
		"key mismatch":    {Certificate: certFile, Key: writeOtherKey(t, dir)},
		"bad client CA":   {Certificate: certFile, Key: keyFile, ClientCAs: []string{keyFile}},
		"acme no hosts":   {ACME: &tlsutil.ACMEConfig{CacheDir: dir}},
		"acme localhost":  {ACME: &tlsutil.ACMEConfig{CacheDir: dir, Hosts: []string{"localhost"}}},
		"acme IP":         {ACME: &tlsutil.ACMEConfig{CacheDir: dir, Hosts: []string{"10.0.0.1"}}},
		"acme port":       {ACME: &tlsutil.ACMEConfig{CacheDir: dir, Hosts: []string{"r.example:443"}}},
		"acme bad rootCA": {ACME: &tlsutil.ACMEConfig{CacheDir: dir, Hosts: []string{"r.example"}, RootCAs: []string{keyFile}}},
	} {
		if _, err := tlsutil.NewServer(cfg, nil); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func writeOtherKey(t *testing.T, dir string) string {
	_, keyFile := newTestCert(t, &x509.Certificate{}, nil).write(t, dir, "other")
	return keyFile
}

func TestRedirectHandler(t *testing.T) {
	srv, err := tlsutil.NewServer(tlsutil.Config{CA: &tlsutil.CAConfig{Dir: t.TempDir()}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		h                 http.Handler
		method, url, want string
		wantStatus        int
	}{
		{tlsutil.RedirectHandler("5000"), "GET", "http://r.example:8080/v2/a/b?n=1", "https://r.example:5000/v2/a/b?n=1", 308},
		{tlsutil.RedirectHandler("443"), "HEAD", "http://r.example/v2/", "https://r.example/v2/", 308},
		{tlsutil.RedirectHandler(""), "GET", "http://[fd00::1]:80/", "https://[fd00::1]/", 308},
		{tlsutil.RedirectHandler("5000"), "POST", "http://r.example/v2/x/blobs/uploads/", "", 400},
		{srv.HTTPHandler(nil), "GET", "http://r.example:80/x", "https://r.example/x", 308},
	} {
		rec := httptest.NewRecorder()
		tt.h.ServeHTTP(rec, httptest.NewRequest(tt.method, tt.url, nil))
		if rec.Code != tt.wantStatus || rec.Header().Get("Location") != tt.want {
			t.Errorf("%s %s: %d %q, want %d %q", tt.method, tt.url, rec.Code, rec.Header().Get("Location"), tt.wantStatus, tt.want)
		}
	}
}
