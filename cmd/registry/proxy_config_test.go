package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berth-registry/berth/proxy"
)

func TestConfigProxyKeys(t *testing.T) {
	c, err := loadConfig("")
	if err != nil {
		t.Fatal(err)
	}
	if c.Proxy.TTL != 168*time.Hour || len(c.proxyUpstreams()) != 0 {
		t.Fatalf("default proxy: ttl %v, upstreams %v; want 168h and none", c.Proxy.TTL, c.proxyUpstreams())
	}

	// Distribution's ttl 0 or negative: cached content is kept forever, so
	// no retention rule; tagcheck is 0 unless set.
	t.Setenv("REGISTRY_PROXY_REMOTEURL", "https://registry-1.docker.io")
	for _, ttl := range []string{"0s", "-1h"} {
		t.Setenv("REGISTRY_PROXY_TTL", ttl)
		c, err := loadConfig("")
		if err != nil {
			t.Fatalf("proxy.ttl %s: %v", ttl, err)
		}
		if rules, _ := c.proxyRetention(); len(rules) != 0 || c.proxyUpstreams()[0].TagCheck != 0 {
			t.Errorf("proxy.ttl %s: retention rules %+v, tagcheck %v; want none and 0", ttl, rules, c.proxyUpstreams()[0].TagCheck)
		}
	}
	os.Unsetenv("REGISTRY_PROXY_REMOTEURL")
	os.Unsetenv("REGISTRY_PROXY_TTL")

	// Distribution's section: one upstream, every repository.
	path := filepath.Join(t.TempDir(), "config.yml")
	os.WriteFile(path, []byte("version: 0.1\nproxy:\n  remoteurl: https://registry-1.docker.io\n  username: u\n  password: p\n  ttl: 1h\n"), 0o600)
	c, err = loadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	want := []proxy.Upstream{{RemoteURL: "https://registry-1.docker.io", Username: "u", Password: "p", TTL: time.Hour}}
	if got := c.proxyUpstreams(); len(got) != 1 || got[0] != want[0] {
		t.Fatalf("proxy section = %+v, want %+v", got, want)
	}

	// Berth's upstreams, from the environment; an entry without ttl has
	// proxy.ttl.
	t.Setenv("REGISTRY_PROXY_UPSTREAMS", `[{prefix: hub, remoteurl: "https://registry-1.docker.io", ttl: 5m}, {prefix: mirrors/mcr, remoteurl: "https://mcr.microsoft.com", username: x, password: secret}, {prefix: ghcr, remoteurl: "https://ghcr.io", ttl: 0s}]`)
	t.Setenv("REGISTRY_PROXY_TTL", "2h")
	c, err = loadConfig("")
	if err != nil {
		t.Fatal(err)
	}
	got := c.proxyUpstreams()
	if len(got) != 3 || got[0].Prefix != "hub" || got[0].TTL != 5*time.Minute ||
		got[1].Prefix != "mirrors/mcr" || got[1].TTL != 2*time.Hour || got[1].Password != "secret" ||
		got[2].TTL != 0 {
		t.Fatalf("upstreams from the environment = %+v", got)
	}
}

func TestConfigProxyValidation(t *testing.T) {
	for _, tc := range []struct {
		env, want string
	}{
		{`[{prefix: hub, remoteurl: "https://a"}, {prefix: hub, remoteurl: "https://b"}]`, "overlap"},
		{`[{prefix: hub, remoteurl: "https://a"}, {prefix: hub/x, remoteurl: "https://b"}]`, "overlap"},
		{`[{prefix: Hub, remoteurl: "https://a"}]`, "not a valid repository name"},
		{`[{prefix: "hub/", remoteurl: "https://a"}]`, "not a valid repository name"},
		{`[{prefix: "", remoteurl: "https://a"}]`, "prefix is empty"},
		{`[{prefix: hub, remoteurl: "ftp://a"}]`, "remoteurl"},
		{`[{prefix: hub, remoteurl: "https://a/v2/x"}]`, "remoteurl"},
		{`[{prefix: hub, remoteurl: "https://user:hunter2@a"}]`, "remoteurl"},
		{`[{prefix: hub, remoteurl: "https://a", tagcheck: -1s}]`, "tagcheck"},
		{`[{prefix: hub, remoteurl: "https://a", ca: /nonexistent/ca.pem}]`, "upstreams[0].ca"},
	} {
		t.Run(tc.want, func(t *testing.T) {
			t.Setenv("REGISTRY_PROXY_UPSTREAMS", tc.env)
			_, err := loadConfig("")
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("%s: %v, want an error with %q", tc.env, err, tc.want)
			}
			if err != nil && strings.Contains(err.Error(), "hunter2") {
				t.Fatalf("the error shows a password: %v", err)
			}
		})
	}
	t.Run("both", func(t *testing.T) {
		t.Setenv("REGISTRY_PROXY_REMOTEURL", "https://a")
		t.Setenv("REGISTRY_PROXY_UPSTREAMS", `[{prefix: hub, remoteurl: "https://b"}]`)
		if _, err := loadConfig(""); err == nil || !strings.Contains(err.Error(), "not both") {
			t.Fatalf("remoteurl and upstreams: %v", err)
		}
	})
}
