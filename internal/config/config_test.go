package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

type testConfig struct {
	Version string `yaml:"version"`
	Rules   []struct {
		Name string `yaml:"name"`
		Keep int    `yaml:"keep"`
	} `yaml:"rules"`
	HTTP struct {
		Addr  string   `yaml:"addr"`
		Hosts []string `yaml:"hosts"`
		TLS   struct {
			Certificate string `yaml:"certificate"`
		} `yaml:"tls"`
	} `yaml:"http"`
	Delete struct {
		Enabled bool `yaml:"enabled"`
	} `yaml:"delete"`
	Limit int `yaml:"limit"`
}

func TestLoadFileThenEnv(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.yml")
	if err := os.WriteFile(path, []byte("version: 0.1\nhttp:\n  addr: :5000\n  tls: {certificate: /a.crt}\nlimit: 3\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("REGISTRY_HTTP_ADDR", ":6000")
	t.Setenv("REGISTRY_HTTP_HOSTS", "[a.example, b.example]")
	t.Setenv("REGISTRY_DELETE_ENABLED", "true")
	t.Setenv("REGISTRY_PORT", "tcp://10.0.0.1:5000") // injected by Kubernetes; must be ignored
	var c testConfig
	if err := Load(path, "REGISTRY", &c); err != nil {
		t.Fatal(err)
	}
	if c.HTTP.Addr != ":6000" || c.HTTP.TLS.Certificate != "/a.crt" || c.Limit != 3 || !c.Delete.Enabled {
		t.Fatalf("unexpected config %+v", c)
	}
	if len(c.HTTP.Hosts) != 2 || c.HTTP.Hosts[1] != "b.example" {
		t.Fatalf("hosts = %v", c.HTTP.Hosts)
	}
}

func TestUnknownKeyNamed(t *testing.T) {
	var c testConfig
	err := Decode([]byte("http:\n  adr: :5000\n"), &c)
	if err == nil || !strings.Contains(err.Error(), "adr") {
		t.Fatalf("want error naming the key, got %v", err)
	}
}

func TestEmptyDocument(t *testing.T) {
	c := testConfig{Limit: 7}
	if err := Decode(nil, &c); err != nil || c.Limit != 7 {
		t.Fatalf("empty document: %v %+v", err, c)
	}
}

func TestBadEnvValue(t *testing.T) {
	var c testConfig
	err := ApplyEnv("X", &c, []string{"X_LIMIT=notanumber"})
	if err == nil || !strings.Contains(err.Error(), "X_LIMIT") {
		t.Fatalf("want error naming variable, got %v", err)
	}
}

func TestEnvValueKeysStrict(t *testing.T) {
	var c testConfig
	if err := ApplyEnv("X", &c, []string{"X_RULES=[{name: a, keep: 2}]"}); err != nil || len(c.Rules) != 1 || c.Rules[0].Keep != 2 {
		t.Fatalf("a list of mappings from the environment: %v, %+v", err, c.Rules)
	}
	err := ApplyEnv("X", &c, []string{"X_RULES=[{name: a, kep: 2}]"})
	if err == nil || !strings.Contains(err.Error(), "kep") || !strings.Contains(err.Error(), "X_RULES") {
		t.Fatalf("want an error naming the variable and the unknown key, got %v", err)
	}
	c.HTTP.Addr = ":5000"
	if err := ApplyEnv("X", &c, []string{"X_HTTP_ADDR="}); err != nil || c.HTTP.Addr != ":5000" {
		t.Fatalf("an empty value: %v, addr %q (want it left alone, as before)", err, c.HTTP.Addr)
	}
}
