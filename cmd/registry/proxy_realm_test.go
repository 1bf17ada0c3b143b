package main

import (
	"bytes"
	"net"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/berth-registry/berth/auth"
	"github.com/berth-registry/berth/internal/testutil"
)

// TestPullThroughPrivateRealm: upstreams as a LAN has them, addressed by
// IP, with the real CA file (no test transport): a Berth behind the real
// token server whose realm is https://127.0.0.1:<another port>/token (which
// go-containerregistry's own token flow refuses), pulled through with
// credentials and anonymously, and a Basic-auth Berth. Refused credentials
// are a 502 that says so; no password reaches the mirror's log.
func TestPullThroughPrivateRealm(t *testing.T) {
	root := t.TempDir()
	ca := filepath.Join(testCertDir(root), "ca.crt")
	ts := startTokenServer(t, testCertDir(root))
	_, authPort, _ := net.SplitHostPort(ts.addr)
	realm := "https://127.0.0.1:" + authPort + "/token"
	// The images go in through a replica without auth on the same storage
	// (a test client would refuse the private realm too).
	plain := startServer(t, root)
	team, public := randomImage(t, 2), randomImage(t, 1)
	if err := remote.Write(plain.repo(t, "team/app").Tag("v1"), team, plain.opts(t)...); err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(plain.repo(t, "public/base").Tag("v1"), public, plain.opts(t)...); err != nil {
		t.Fatal(err)
	}
	tokenUp := startServerWith(t, root, func(c *Config) {
		c.Auth.Token.Realm = realm
		c.Auth.Token.Service = tokenService
		c.Auth.Token.Issuer = tokenIssuer
		c.Auth.Token.RootCertBundle = ts.bundleFile
	}, nil)

	// A Basic-auth upstream: carol, from an htpasswd file.
	basicRoot := t.TempDir()
	ht, _ := auth.ParseHtpasswd(nil)
	if err := ht.SetPassword("carol", "carol-password", 4); err != nil {
		t.Fatal(err)
	}
	htFile := filepath.Join(t.TempDir(), "htpasswd")
	if err := ht.WriteFile(htFile); err != nil {
		t.Fatal(err)
	}
	basicUp := startServerWith(t, basicRoot, func(c *Config) { c.Auth.Htpasswd.Path = htFile }, nil)
	carol := remote.WithAuth(&authn.Basic{Username: "carol", Password: "carol-password"})
	basicImg := randomImage(t, 1)
	if err := remote.Write(basicUp.repo(t, "lib/tool").Tag("v1"), basicImg, append(basicUp.opts(t), carol)...); err != nil {
		t.Fatal(err)
	}

	byIP := func(s *testServer) string {
		_, port, _ := net.SplitHostPort(s.addr)
		return "https://127.0.0.1:" + port
	}
	var log testutil.Buffer
	mirror := startServerWith(t, t.TempDir(), func(c *Config) {
		c.Proxy.Upstreams = []UpstreamConfig{
			{Prefix: "lan", RemoteURL: byIP(tokenUp), Username: "alice", Password: "alice-password", CA: ca},
			{Prefix: "anon", RemoteURL: byIP(tokenUp), CA: ca},
			{Prefix: "wrong", RemoteURL: byIP(tokenUp), Username: "alice", Password: "not-alices-password", CA: ca},
			{Prefix: "basic", RemoteURL: byIP(basicUp), Username: "carol", Password: "carol-password", CA: ca},
			{Prefix: "basicwrong", RemoteURL: byIP(basicUp), Username: "carol", Password: "not-carols-password", CA: ca},
		}
	}, &log)

	for _, tc := range []struct {
		local string
		want  any
	}{
		{"lan/team/app", team},
		{"anon/public/base", public},
		{"basic/lib/tool", basicImg},
	} {
		img := tc.want.(interface{ RawManifest() ([]byte, error) })
		got, err := remote.Image(mirror.repo(t, tc.local).Tag("v1"), mirror.opts(t)...)
		if err != nil {
			t.Errorf("pull %s through the mirror: %v", tc.local, err)
			continue
		}
		want, _ := img.RawManifest()
		have, _ := got.RawManifest()
		if !bytes.Equal(want, have) {
			t.Errorf("%s: the mirror served another manifest", tc.local)
		}
		layers, err := got.Layers()
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range layers {
			rc, err := l.Compressed()
			if err != nil {
				t.Fatalf("%s: layer: %v", tc.local, err)
			}
			dg, _ := l.Digest()
			if got, _ := sha256Of(t, rc); got != dg {
				t.Errorf("%s: layer %s came as %s", tc.local, dg, got)
			}
		}
	}

	// Refused credentials: 502 naming them (a raw request:
	// go-containerregistry would retry a 502).
	for _, path := range []string{"/v2/wrong/team/app/manifests/v1", "/v2/basicwrong/lib/tool/manifests/v1"} {
		resp, body := mirror.do(t, "GET", mirror.url(path), nil, nil)
		if resp.StatusCode != 502 || !bytes.Contains(body, []byte("refused its credentials")) {
			t.Errorf("GET %s with wrong upstream credentials: %d %s, want 502 saying the credentials were refused", path, resp.StatusCode, body)
		}
	}
	// Anonymously, what the policy does not grant is not there either.
	if resp, body := mirror.do(t, "GET", mirror.url("/v2/anon/team/app/manifests/v1"), nil, nil); resp.StatusCode < 400 {
		t.Errorf("an anonymous upstream client got team/app: %d %s", resp.StatusCode, body)
	}

	logged := log.String()
	if !strings.Contains(logged, "lan/team/app") {
		t.Fatalf("the mirror's log shows no request: %q", logged)
	}
	for _, secret := range []string{"alice-password", "not-alices-password", "carol-password", "not-carols-password"} {
		if strings.Contains(logged, secret) {
			t.Errorf("the mirror's log shows the password %q", secret)
		}
	}
}
