package tlsutil_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berth-registry/berth/internal/pebbletest"
	"github.com/berth-registry/berth/tlsutil"
)

func listenLoopback(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

func port(addr net.Addr) int { return addr.(*net.TCPAddr).Port }

// TestACMEWithPebble obtains certificates from Pebble with real validation:
// Pebble's VA resolves the test names through a DNS server of the test's
// own (every name is 127.0.0.1) and connects to the ports the test serves
// on. One certificate comes by tls-alpn-01, one by http-01, and after a
// restart on the same cache the first is served with Pebble stopped.
func TestACMEWithPebble(t *testing.T) {
	const alpnHost, httpHost = "alpn.berth.test", "http.berth.test"
	dir := t.TempDir()
	// The ports Pebble's VA connects to: 443 and 80, as the CA sees them.
	tlsLn, httpLn := listenLoopback(t), listenLoopback(t)
	peb := pebbletest.Start(t, port(tlsLn.Addr()), port(httpLn.Addr()))
	pebbleLog, pebbleRoots, directory := peb.Log, peb.Roots, peb.Directory
	stopPebble := peb.Stop

	logger, _ := testLogger(t)
	newServer := func(cacheDir string, clientCAs ...string) *tlsutil.Server {
		t.Helper()
		srv, err := tlsutil.NewServer(tlsutil.Config{ClientCAs: clientCAs, ACME: &tlsutil.ACMEConfig{
			CacheDir:     cacheDir,
			Email:        "ops@berth.test",
			Hosts:        []string{alpnHost, httpHost},
			DirectoryURL: directory,
			RootCAs:      []string{peb.HTTPSCA},
		}}, logger)
		if err != nil {
			t.Fatal(err)
		}
		return srv
	}
	// fetch connects to addr as host with a client that trusts only
	// Pebble's root, and returns the certificate the server presented.
	fetch := func(addr, host string, clientCerts ...tls.Certificate) *x509.Certificate {
		t.Helper()
		client := httpsClient(&tls.Config{RootCAs: pebbleRoots, Certificates: clientCerts})
		client.Timeout = 90 * time.Second // includes obtaining the certificate
		client.Transport.(*http.Transport).DialContext = func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		}
		resp, err := client.Get("https://" + host + "/")
		if err != nil {
			t.Fatalf("GET https://%s/ at %s: %v", host, addr, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.Proto != "HTTP/2.0" {
			t.Errorf("GET https://%s/: %s %s", host, resp.Proto, resp.Status)
		}
		return resp.TLS.PeerCertificates[0]
	}

	// 1. tls-alpn-01 on the TLS listener; no plain HTTP listener at all.
	// The server also requires client certificates, which the CA's
	// validation connection does not have (Pebble validates over TLS 1.3;
	// TestACMEChallengeWithClientAuth covers a TLS 1.2 validator).
	clientCA := newTestCA(t)
	clientCAFile, _ := clientCA.write(t, dir, "client-ca")
	clientCert := newTestCert(t, &x509.Certificate{ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}, &clientCA)
	cacheA := filepath.Join(dir, "acme-a")
	stopA := serveOn(t, tlsLn, newServer(cacheA, clientCAFile).TLSConfig(), nil)
	start := time.Now()
	first := fetch(tlsLn.Addr().String(), alpnHost, clientCert.tlsCert())
	t.Logf("tls-alpn-01 certificate after %v", time.Since(start).Round(time.Millisecond))
	if err := first.VerifyHostname(alpnHost); err != nil {
		t.Error(err)
	}
	if strings.Contains(pebbleLog.String(), "validate w/ HTTP") {
		t.Error("Pebble validated over HTTP, want tls-alpn-01 only")
	}
	noCert := &tls.Config{RootCAs: pebbleRoots, ServerName: alpnHost}
	if _, _, err := get(httpsClient(noCert), "https://"+tlsLn.Addr().String()+"/"); err == nil {
		t.Error("mTLS server accepted a client without a certificate")
	}
	stopA() // from now on the CA's tls-alpn-01 connections are refused

	// 2. http-01: the TLS port the CA checks is closed, so after tls-alpn-01
	// fails autocert retries with http-01 on the plain HTTP listener.
	srvB := newServer(filepath.Join(dir, "acme-b"))
	var challenges atomic.Int32
	httpHandler := srvB.HTTPHandler(nil)
	serveOn(t, httpLn, nil, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/.well-known/acme-challenge/") {
			challenges.Add(1)
		}
		httpHandler.ServeHTTP(w, r)
	}))
	start = time.Now()
	second := fetch(serveTLS(t, srvB.TLSConfig(), nil), httpHost)
	t.Logf("http-01 certificate after %v", time.Since(start).Round(time.Millisecond))
	if err := second.VerifyHostname(httpHost); err != nil {
		t.Error(err)
	}
	if challenges.Load() == 0 {
		t.Error("no http-01 challenge request reached the HTTP listener")
	}
	wantURL := fmt.Sprintf("validate w/ HTTP: http://%s:%d/.well-known/acme-challenge/", httpHost, port(httpLn.Addr()))
	if !strings.Contains(pebbleLog.String(), wantURL) {
		t.Errorf("Pebble log lacks %q", wantURL)
	}
	// Outside the challenge path the HTTP listener redirects to HTTPS.
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	if resp, _, err := get(noRedirect, "http://"+httpLn.Addr().String()+"/v2/"); err != nil ||
		resp.StatusCode != http.StatusPermanentRedirect || resp.Header.Get("Location") != "https://127.0.0.1/v2/" {
		t.Errorf("plain HTTP request: %v %v", resp, err)
	}

	// 3. Restart: Pebble is gone; a new Server on the first cache serves
	// the certificate it obtained before.
	stopPebble()
	third := fetch(serveTLS(t, newServer(cacheA).TLSConfig(), nil), alpnHost)
	if !bytes.Equal(third.Raw, first.Raw) {
		t.Errorf("after restart served serial %s, want the cached %s", third.SerialNumber, first.SerialNumber)
	}
}

// TestACMEChallengeWithClientAuth checks that a server requiring client
// certificates still answers a tls-alpn-01 validation, which comes without
// one. A TLS 1.2 validator sees the refusal during its handshake (a TLS 1.3
// one only afterwards), so this test is one. The challenge certificate is
// put where autocert looks for it: the cache, under "<name>+token".
func TestACMEChallengeWithClientAuth(t *testing.T) {
	dir := t.TempDir()
	const host = "r.berth.test"
	token := newTestCert(t, &x509.Certificate{DNSNames: []string{host}}, nil)
	if err := os.WriteFile(filepath.Join(dir, host+"+token"), append(token.keyPEM(t), token.certPEM()...), 0o600); err != nil {
		t.Fatal(err)
	}
	clientCA := newTestCA(t)
	clientCAFile, _ := clientCA.write(t, dir, "client-ca")
	srv, err := tlsutil.NewServer(tlsutil.Config{ClientCAs: []string{clientCAFile}, ACME: &tlsutil.ACMEConfig{
		CacheDir: dir, Hosts: []string{host}, DirectoryURL: "https://127.0.0.1:1/dir"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	addr := serveTLS(t, srv.TLSConfig(), nil)
	conn, err := tls.Dial("tcp", addr, &tls.Config{ServerName: host, NextProtos: []string{"acme-tls/1"},
		MaxVersion: tls.VersionTLS12, InsecureSkipVerify: true})
	if err != nil {
		t.Fatalf("tls-alpn-01 validation handshake: %v", err)
	}
	defer conn.Close()
	if got := conn.ConnectionState().PeerCertificates[0]; !bytes.Equal(got.Raw, token.cert.Raw) {
		t.Errorf("served %v, want the challenge certificate", got.Subject)
	}
}
