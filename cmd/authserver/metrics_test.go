package main

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berth-registry/berth/internal/metricstest"
	"github.com/berth-registry/berth/internal/testutil"
)

func TestConfigMetrics(t *testing.T) {
	cfg, err := loadConfig("")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Server.Metrics.Addr != "" || cfg.Server.Metrics.Path != "/metrics" {
		t.Fatalf("defaults %+v: want off, at /metrics", cfg.Server.Metrics)
	}
	path := filepath.Join(t.TempDir(), "config.yml")
	os.WriteFile(path, []byte("server:\n  metrics:\n    addr: 127.0.0.1:5002\n"), 0o600)
	if cfg, err = loadConfig(path); err != nil || cfg.Server.Metrics.Addr != "127.0.0.1:5002" || cfg.Server.Metrics.Path != "/metrics" {
		t.Fatalf("from the file: %+v, %v", cfg.Server.Metrics, err)
	}
	t.Setenv("AUTHSERVER_SERVER_METRICS_ADDR", "10.0.0.1:9100")
	t.Setenv("AUTHSERVER_SERVER_METRICS_PATH", "/prom")
	if cfg, err = loadConfig(path); err != nil || cfg.Server.Metrics.Addr != "10.0.0.1:9100" || cfg.Server.Metrics.Path != "/prom" {
		t.Fatalf("from the environment: %+v, %v", cfg.Server.Metrics, err)
	}
	t.Setenv("AUTHSERVER_SERVER_METRICS_PATH", "prom")
	if _, err = loadConfig(path); err == nil || !strings.Contains(err.Error(), "server.metrics.path") {
		t.Fatalf("a relative path: %v", err)
	}
}

// TestMetricsListener runs the server with server.metrics.addr, asks it
// for tokens with and without credentials, guesses a password until the
// throttle refuses, and checks what a scrape of the metrics listener says.
func TestMetricsListener(t *testing.T) {
	port := testutil.FreePortString(t)
	_, configFile := setup(t, "  insecure: true\n  metrics:\n    addr: 127.0.0.1:"+port)
	addr, _ := start(t, configFile)
	metricsURL := "http://127.0.0.1:" + port + "/metrics"
	token := func(user, password string) int {
		t.Helper()
		req, _ := http.NewRequest("GET", "http://"+addr+"/token?service=registry.example.com&scope=repository:public/x:pull", nil)
		if user != "" {
			req.SetBasicAuth(user, password)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := token("", ""); code != 200 {
		t.Fatalf("anonymous token: %d", code)
	}
	if code := token("alice", "alice-pw"); code != 200 {
		t.Fatalf("alice's token: %d", code)
	}
	var failed, throttled float64
	for range 30 {
		switch code := token("mallory", "guess"); code {
		case http.StatusUnauthorized:
			failed++
		case http.StatusTooManyRequests:
			throttled++
		default:
			t.Fatalf("a guess: %d", code)
		}
	}
	if failed == 0 || throttled == 0 {
		t.Fatalf("%v failures, %v refusals: the test needs both", failed, throttled)
	}

	deadline := time.Now().Add(10 * time.Second)
	for {
		if resp, err := http.Get(metricsURL); err == nil {
			resp.Body.Close()
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("metrics listener: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	m := metricstest.Scrape(t, nil, metricsURL)
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"berth_auth_tokens_issued_total", []string{"grant", "anonymous"}, 1},
		{"berth_auth_tokens_issued_total", []string{"grant", "basic"}, 1},
		{"berth_auth_logins_total", []string{"credential", "password", "outcome", "success"}, 1},
		{"berth_auth_logins_total", []string{"credential", "password", "outcome", "failure"}, failed},
		{"berth_auth_logins_total", []string{"credential", "password", "outcome", "throttled"}, throttled},
		{"berth_auth_throttled_total", nil, throttled},
	} {
		if got := m.Sum(c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	if m.Count("go_goroutines") != 1 {
		t.Error("the Go collector is missing")
	}
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("/metrics on the token listener: %d", resp.StatusCode)
	}
}
