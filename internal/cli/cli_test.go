package cli

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestHealthURL(t *testing.T) {
	for _, tc := range []struct {
		addr     string
		tls      bool
		endpoint string
		want     string
	}{
		{":5000", true, "/healthz", "https://127.0.0.1:5000/healthz"},
		{"0.0.0.0:5001", false, "/healthz", "http://127.0.0.1:5001/healthz"},
		{"[::]:5000", true, "/healthz", "https://127.0.0.1:5000/healthz"},
		{"10.1.2.3:5000", true, "/healthz", "https://10.1.2.3:5000/healthz"},
		{"[::1]:5000", true, "/healthz", "https://[::1]:5000/healthz"},
		{":5000", false, "/readyz", "http://127.0.0.1:5000/readyz"},
	} {
		got, err := HealthURL(tc.addr, tc.tls, tc.endpoint)
		if err != nil || got != tc.want {
			t.Errorf("HealthURL(%q, %v) = %q, %v; want %q", tc.addr, tc.tls, got, err, tc.want)
		}
	}
	if _, err := HealthURL("no-port", true, "/healthz"); err == nil {
		t.Error("address without a port accepted")
	}
}

func TestHealthcheck(t *testing.T) {
	status := http.StatusOK
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" {
			http.NotFound(w, r)
			return
		}
		w.WriteHeader(status)
	}))
	defer srv.Close()
	if err := Healthcheck(context.Background(), srv.URL+"/healthz"); err != nil {
		t.Fatalf("healthy server: %v", err)
	}
	status = http.StatusServiceUnavailable
	if err := Healthcheck(context.Background(), srv.URL+"/healthz"); err == nil {
		t.Fatal("503 counted as healthy")
	}
	srv.Close()
	if err := Healthcheck(context.Background(), srv.URL+"/healthz"); err == nil {
		t.Fatal("a closed server counted as healthy")
	}
}

func TestCertsCommand(t *testing.T) {
	dir := t.TempDir()
	cmd := CertsCommand("registry", "5000")
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetArgs([]string{"--dir", dir, "--host", "registry.example", "--host", "10.0.0.5"})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"ca.crt", "ca.key", "registry.crt", "registry.key"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("%s not created: %v", f, err)
		}
	}
	text := out.String()
	for _, want := range []string{"sha256", "/etc/docker/certs.d/registry.example:5000/ca.crt", `certs.d\registry.example5000\ca.crt`, "/etc/docker/certs.d/10.0.0.5:5000/ca.crt"} {
		if !strings.Contains(text, want) {
			t.Errorf("output lacks %q:\n%s", want, text)
		}
	}
	caKey, _ := os.ReadFile(filepath.Join(dir, "ca.key"))
	cmd = CertsCommand("registry", "5000")
	cmd.SetOut(&bytes.Buffer{})
	cmd.SetArgs([]string{"--dir", dir, "--host", "registry.example", "--renew"})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	if again, _ := os.ReadFile(filepath.Join(dir, "ca.key")); !bytes.Equal(again, caKey) {
		t.Fatal("--renew replaced the CA key")
	}
}
