package main

import (
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

func TestUIConfig(t *testing.T) {
	c, err := loadConfig("")
	if err != nil {
		t.Fatal(err)
	}
	if !c.UI.Enabled || c.UI.TokenAddr != "" {
		t.Fatalf("default ui: %+v", c.UI)
	}
	t.Setenv("REGISTRY_UI_ENABLED", "false")
	t.Setenv("REGISTRY_UI_TOKENADDR", "auth:5001")
	if c, err = loadConfig(""); err != nil || c.UI.Enabled || c.UI.TokenAddr != "auth:5001" {
		t.Fatalf("from the environment: %+v, %v", c.UI, err)
	}
	t.Setenv("REGISTRY_UI_TOKENADDR", "auth")
	if _, err := loadConfig(""); err == nil || !strings.Contains(err.Error(), "ui.tokenaddr") {
		t.Fatalf("tokenaddr without a port: %v", err)
	}
}

// get fetches a page with client c, not following redirects.
func getPage(t *testing.T, c *http.Client, u string) (int, http.Header, string) {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(body)
}

// TestUIServed: a fresh start serves the pages and sends / to them; with
// ui.enabled false, neither answers.
func TestUIServed(t *testing.T) {
	for _, on := range []bool{true, false} {
		srv := startServerWith(t, t.TempDir(), func(c *Config) { c.UI.Enabled = on }, nil)
		if err := remote.Write(srv.repo(t, "team/app").Tag("v1"), randomImage(t, 1), srv.opts(t)...); err != nil {
			t.Fatal(err)
		}
		c := &http.Client{Transport: srv.tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		status, hdr, _ := getPage(t, c, srv.url("/"))
		if on && (status != http.StatusFound || hdr.Get("Location") != "/ui/") {
			t.Errorf("/: %d to %q", status, hdr.Get("Location"))
		}
		if !on && status != http.StatusNotFound {
			t.Errorf("/ with the pages off: %d", status)
		}
		status, _, body := getPage(t, c, srv.url("/ui/"))
		if on && (status != http.StatusOK || !strings.Contains(body, `data-repository="team/app"`)) {
			t.Errorf("/ui/: %d\n%s", status, body)
		}
		if !on && status != http.StatusNotFound {
			t.Errorf("/ui/ with the pages off: %d", status)
		}
		srv.stop()
	}
}

var csrfField = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// TestUITokenSignIn: with token auth, the pages reach the token server
// through ui.tokenaddr (its realm's name does not resolve from the
// registry), trust it through the registry's private CA, and show a
// signed-in user what the policy lets them pull.
func TestUITokenSignIn(t *testing.T) {
	srv, _ := startTokenAuthRegistryWith(t, nil, func(c *Config, ts *tokenSetup, certDir string) {
		c.Auth.Token.RootCertBundle = ts.bundleFile
		c.UI.TokenAddr = ts.addr
	})
	alice := append(srv.opts(t), remote.WithAuth(&authn.Basic{Username: "alice", Password: "alice-password"}))
	if err := remote.Write(srv.repo(t, "team/app").Tag("v1"), randomImage(t, 1), alice...); err != nil {
		t.Fatal(err)
	}
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Transport: srv.tr, Jar: jar}
	_, _, body := getPage(t, c, srv.url("/ui/"))
	if strings.Contains(body, "data-repository=") {
		t.Fatalf("anonymous sees a repository:\n%s", body)
	}
	_, _, body = getPage(t, c, srv.url("/ui/login"))
	m := csrfField.FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no csrf field:\n%s", body)
	}
	req, _ := http.NewRequest(http.MethodPost, srv.url("/ui/login"), strings.NewReader(url.Values{
		"username": {"bob"}, "password": {"bob-password"}, "csrf": {m[1]},
	}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", "https://"+srv.addr)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), `id="user">bob<`) || !strings.Contains(string(b), `data-repository="team/app"`) {
		t.Fatalf("bob signed in: %d\n%s", resp.StatusCode, b)
	}
}

// TestUIOwnCA: the pages trust the CA of the registry's own certificate
// for the token server: the private CA's, or a ca.crt beside certificate
// files (quickstart's layout).
func TestUIOwnCA(t *testing.T) {
	dir := t.TempDir()
	c := defaultConfig()
	c.HTTP.TLS.PrivateCA.Dir = dir
	if got := ownCA(c); got != "" {
		t.Fatalf("no CA yet: %q", got)
	}
	ca := filepath.Join(dir, "ca.crt")
	if err := os.WriteFile(ca, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := ownCA(c); got != ca {
		t.Errorf("private CA: %q, want %q", got, ca)
	}
	c.HTTP.TLS.Certificate, c.HTTP.TLS.Key = filepath.Join(dir, "registry.crt"), filepath.Join(dir, "registry.key")
	if got := ownCA(c); got != ca {
		t.Errorf("certificate files beside ca.crt: %q, want %q", got, ca)
	}
	c.HTTP.TLS.Certificate = filepath.Join(t.TempDir(), "registry.crt")
	if got := ownCA(c); got != "" {
		t.Errorf("certificate files without ca.crt: %q", got)
	}
}
