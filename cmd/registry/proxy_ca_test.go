package main

import (
	"bytes"
	"net"
	"path/filepath"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// TestPullThroughPrivateCA: an upstream on TLS from a private CA (its own,
// generated at its start, not the mirror's) fails without proxy ca, and
// works with it, for Berth's upstreams and for Distribution's mode. The
// mirror reaches the upstream through its own transport, as in production.
func TestPullThroughPrivateCA(t *testing.T) {
	// A root of its own puts the upstream's CA in a directory of its own.
	upRoot := filepath.Join(t.TempDir(), "upstream", "data")
	up := startServer(t, upRoot)
	img := randomImage(t, 1)
	want, err := img.RawManifest()
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(up.repo(t, "library/app").Tag("v1"), img, up.opts(t)...); err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(up.addr)
	remoteURL := "https://" + net.JoinHostPort("127.0.0.1", port)
	ca := filepath.Join(testCertDir(upRoot), "ca.crt")
	mt, err := img.MediaType()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		config func(c *Config)
		path   string
		status int
	}{
		{"upstreams without ca", func(c *Config) {
			c.Proxy.Upstreams = []UpstreamConfig{{Prefix: "up", RemoteURL: remoteURL}}
		}, "/v2/up/library/app/manifests/v1", 502},
		{"upstreams with ca", func(c *Config) {
			c.Proxy.Upstreams = []UpstreamConfig{{Prefix: "up", RemoteURL: remoteURL, CA: ca}}
		}, "/v2/up/library/app/manifests/v1", 200},
		{"remoteurl without ca", func(c *Config) { c.Proxy.RemoteURL = remoteURL }, "/v2/library/app/manifests/v1", 502},
		{"remoteurl with ca", func(c *Config) { c.Proxy.RemoteURL, c.Proxy.CA = remoteURL, ca }, "/v2/library/app/manifests/v1", 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mirror := startServerWith(t, t.TempDir(), tc.config, nil)
			resp, body := mirror.do(t, "GET", mirror.url(tc.path), map[string][]string{"Accept": {string(mt)}}, nil)
			if resp.StatusCode != tc.status || (tc.status == 200 && !bytes.Equal(body, want)) {
				t.Errorf("GET %s: %d %s, want %d", tc.path, resp.StatusCode, body, tc.status)
			}
		})
	}
}
