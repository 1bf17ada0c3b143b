package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/berth-registry/berth/internal/pebbletest"
)

// TestRegistryACME: the registry itself, configured with Distribution's
// http.tls.letsencrypt keys, obtains its certificate from an ACME CA
// (Pebble, with real validation) by tls-alpn-01 on its TLS listener, another
// by http-01 on http.tls.httpaddr, and after a restart serves the cached one
// with the CA gone.
func TestRegistryACME(t *testing.T) {
	tlsPort, httpPort := pebbletest.FreePort(t), pebbletest.FreePort(t)
	peb := pebbletest.Start(t, tlsPort, httpPort)
	cacheA, cacheB := t.TempDir(), t.TempDir()
	acme := func(addr, host, cache, httpAddr string) func(*Config) {
		return func(c *Config) {
			c.HTTP.Addr = addr
			le := &c.HTTP.TLS.LetsEncrypt
			le.CacheFile, le.Email, le.Hosts = cache, "ops@berth.test", []string{host}
			le.DirectoryURL, le.RootCAs = peb.Directory, []string{peb.HTTPSCA}
			c.HTTP.TLS.HTTPAddr = httpAddr
		}
	}
	// get asks /v2/ as host with a client that trusts only Pebble's root,
	// and returns the certificate the registry presented.
	get := func(srv *testServer, host string) *x509.Certificate {
		t.Helper()
		srv.tr.TLSClientConfig = &tls.Config{RootCAs: peb.Roots}
		_, port, _ := net.SplitHostPort(srv.addr)
		resp, err := srv.tr.RoundTrip(mustRequest(t, "GET", "https://"+net.JoinHostPort(host, port)+"/v2/"))
		if err != nil {
			t.Fatalf("GET /v2/ as %s: %v", host, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET /v2/ as %s: %s", host, resp.Status)
		}
		return resp.TLS.PeerCertificates[0]
	}

	// 1. tls-alpn-01, on the port Pebble's VA checks.
	root := t.TempDir()
	a := startServerWith(t, root, acme(fmt.Sprintf("127.0.0.1:%d", tlsPort), testHost, cacheA, ""), nil)
	first := get(a, testHost)
	if err := first.VerifyHostname(testHost); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(peb.Log.String(), "validate w/ HTTP") {
		t.Error("Pebble validated over HTTP, want tls-alpn-01")
	}
	a.stop() // from now on the VA's tls-alpn-01 connections are refused

	// 2. http-01, on the plain listener http.tls.httpaddr.
	const httpHost = "http.berth.test"
	b := startServerWith(t, root, acme("127.0.0.1:0", httpHost, cacheB, fmt.Sprintf("127.0.0.1:%d", httpPort)), nil)
	_, bPort, _ := net.SplitHostPort(b.addr)
	b.alias(httpHost, bPort, "127.0.0.1:"+bPort)
	second := get(b, httpHost)
	if err := second.VerifyHostname(httpHost); err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("validate w/ HTTP: http://%s:%d/.well-known/acme-challenge/", httpHost, httpPort); !strings.Contains(peb.Log.String(), want) {
		t.Errorf("Pebble log lacks %q", want)
	}
	b.stop()

	// 3. Restart on the first cache with Pebble gone: the same certificate.
	peb.Stop()
	c := startServerWith(t, root, acme(fmt.Sprintf("127.0.0.1:%d", tlsPort), testHost, cacheA, ""), nil)
	if third := get(c, testHost); !bytes.Equal(third.Raw, first.Raw) {
		t.Errorf("after restart served serial %s, want the cached %s", third.SerialNumber, first.SerialNumber)
	}
}
