package main

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/berth-registry/berth/internal/metricstest"
	"github.com/berth-registry/berth/internal/testutil"
)

func TestConfigPrometheus(t *testing.T) {
	c, err := loadConfig("")
	if err != nil {
		t.Fatal(err)
	}
	if c.HTTP.Debug.Prometheus.Enabled || c.HTTP.Debug.Prometheus.Path != "/metrics" {
		t.Fatalf("defaults: %+v, want off at /metrics", c.HTTP.Debug.Prometheus)
	}
	path := filepath.Join(t.TempDir(), "config.yml")
	os.WriteFile(path, []byte("version: 0.1\nhttp:\n  debug:\n    addr: 127.0.0.1:5005\n    prometheus:\n      enabled: true\n"), 0o600)
	if c, err = loadConfig(path); err != nil || !c.HTTP.Debug.Prometheus.Enabled || c.HTTP.Debug.Prometheus.Path != "/metrics" {
		t.Fatalf("from the file: %+v, %v", c.HTTP.Debug, err)
	}
	t.Setenv("REGISTRY_HTTP_DEBUG_PROMETHEUS_PATH", "/prom")
	if c, err = loadConfig(path); err != nil || c.HTTP.Debug.Prometheus.Path != "/prom" {
		t.Fatalf("path from the environment: %+v, %v", c.HTTP.Debug, err)
	}
	t.Setenv("REGISTRY_HTTP_DEBUG_PROMETHEUS_PATH", "/debug/pprof/metrics")
	if _, err = loadConfig(path); err == nil || !strings.Contains(err.Error(), "http.debug.prometheus.path") {
		t.Fatalf("a path under the profiler's: %v", err)
	}
	t.Setenv("REGISTRY_HTTP_DEBUG_PROMETHEUS_PATH", "metrics")
	if _, err = loadConfig(path); err == nil {
		t.Fatal("a relative path accepted")
	}
	t.Setenv("REGISTRY_HTTP_DEBUG_PROMETHEUS_PATH", "/metrics")
	t.Setenv("REGISTRY_HTTP_DEBUG_PROMETHEUS_ENABLED", "true")
	if _, err = loadConfig(""); err == nil || !strings.Contains(err.Error(), "http.debug.addr") {
		t.Fatalf("enabled without a debug listener: %v", err)
	}
	t.Setenv("REGISTRY_HTTP_DEBUG_ADDR", "127.0.0.1:5006")
	t.Setenv("REGISTRY_HTTP_DEBUG_PROMETHEUS_ENABLED", "false")
	if c, err = loadConfig(path); err != nil || c.HTTP.Debug.Prometheus.Enabled || c.HTTP.Debug.Addr != "127.0.0.1:5006" {
		t.Fatalf("enabled from the environment: %+v, %v", c.HTTP.Debug, err)
	}
}

// TestMetricsEndpoint pushes and pulls images with go-containerregistry,
// deletes one and lets the scheduled collection remove it, and checks what
// the debug listener's /metrics says about all of it.
func TestMetricsEndpoint(t *testing.T) {
	root := t.TempDir()
	port := testutil.FreePortString(t)
	srv := startServerWith(t, root, func(c *Config) {
		c.HTTP.Debug.Addr = "127.0.0.1:" + port
		c.HTTP.Debug.Prometheus.Enabled = true
		c.Storage.GC.Enabled = true
		c.Storage.GC.Interval = 200 * time.Millisecond
		c.Storage.GC.GracePeriod = 10 * time.Second // the test back-dates files past it
		c.Storage.Maintenance.UploadPurging.Enabled = false
	}, nil)
	metricsURL := "http://127.0.0.1:" + port + "/metrics"
	opts := srv.opts(t)
	repo := srv.repo(t, "team/app")

	const images = 3
	var pushed int64 // bytes of layers and configs
	var digests []v1.Hash
	var firstSize int64 // what deleting the first image frees
	for i := range images {
		img := randomImage(t, 2)
		if err := remote.Write(repo.Tag("v"+string(rune('0'+i))), img, opts...); err != nil {
			t.Fatal(err)
		}
		n := imageBytes(t, img)
		if i == 0 {
			m, _ := img.RawManifest()
			firstSize = n + int64(len(m))
		}
		pushed += n
		digests = append(digests, imageDigest(t, img))
	}
	var pulled int64
	for _, dg := range digests {
		img, err := remote.Image(repo.Digest(dg.String()), opts...)
		if err != nil {
			t.Fatal(err)
		}
		layers, err := img.Layers()
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range layers {
			rc, err := l.Compressed()
			if err != nil {
				t.Fatal(err)
			}
			n, err := io.Copy(io.Discard, rc)
			rc.Close()
			if err != nil {
				t.Fatal(err)
			}
			pulled += n
		}
	}

	m := metricstest.Scrape(t, nil, metricsURL)
	if got := m.Sum("berth_http_requests_total", "kind", "manifest", "method", "PUT", "code", "201"); got != images {
		t.Errorf("manifest PUT 201: %v, want %d", got, images)
	}
	if got := m.Sum("berth_http_requests_total", "kind", "manifest", "method", "GET", "code", "200"); got < images {
		t.Errorf("manifest GET 200: %v, want at least %d", got, images)
	}
	if got := m.Sum("berth_http_request_duration_seconds_count", "kind", "manifest", "method", "PUT"); got != images {
		t.Errorf("manifest PUT latencies observed: %v, want %d", got, images)
	}
	received := m.Sum("berth_http_received_bytes_total", "kind", "upload") + m.Sum("berth_http_received_bytes_total", "kind", "upload-start")
	if received < float64(pushed) {
		t.Errorf("upload bytes received: %v, want at least the %d bytes of layers and configs", received, pushed)
	}
	if got := m.Sum("berth_http_sent_bytes_total", "kind", "blob"); got < float64(pulled) {
		t.Errorf("blob bytes sent: %v, want at least the %d pulled", got, pulled)
	}
	if got := m.Sum("berth_http_uploads_in_flight"); got != 0 || m.Count("berth_http_uploads_in_flight") != 1 {
		t.Errorf("uploads in flight after the pushes: %v (%d series), want 0", got, m.Count("berth_http_uploads_in_flight"))
	}
	for _, op := range []string{"put_content", "get_content", "writer", "write_commit", "move", "stat"} {
		if got := m.Sum("berth_storage_operation_duration_seconds_count", "op", op); got == 0 {
			t.Errorf("storage op %s: not counted", op)
		}
	}
	if got := m.Sum("berth_storage_operation_errors_total"); got != 0 {
		t.Errorf("storage errors: %v, want 0 (not-found answers are not errors)", got)
	}
	if got := m.Sum("berth_filesystem_journal_commits_total"); got < images {
		t.Errorf("journal commits: %v, want at least one per manifest", got)
	}
	if m.Count("go_goroutines") != 1 {
		t.Error("the Go collector is missing")
	}
	if runtime.GOOS == "linux" && m.Count("process_start_time_seconds") != 1 {
		t.Error("the process collector is missing")
	}
	for _, s := range m {
		for _, v := range s.Labels {
			if strings.Contains(v, "team") {
				t.Errorf("%s has the repository name in a label: %v", s.Name, s.Labels)
			}
		}
	}

	// Delete the first image; the next scheduled collection frees it.
	if err := remote.Delete(repo.Digest(digests[0].String()), opts...); err != nil {
		t.Fatal(err)
	}
	if got := metricstest.Scrape(t, nil, metricsURL).Sum("berth_http_requests_total", "kind", "manifest", "method", "DELETE", "code", "202"); got != 1 {
		t.Errorf("manifest DELETE 202: %v, want 1", got)
	}
	ageStorage(t, root)
	waitFor(t, 20*time.Second, "a collection freeing the deleted image", func() bool {
		return metricstest.Scrape(t, nil, metricsURL).Sum("berth_gc_blobs_deleted_total") >= 4 // manifest, config, 2 layers
	})
	m = metricstest.Scrape(t, nil, metricsURL)
	if got := m.Sum("berth_gc_freed_bytes_total"); got != float64(firstSize) {
		t.Errorf("bytes freed: %v, want the deleted image's %d", got, firstSize)
	}
	if m.Sum("berth_gc_runs_total", "result", "success") < 1 || m.Sum("berth_gc_runs_total", "result", "failure") != 0 {
		t.Errorf("collections: %v successful, %v failed", m.Sum("berth_gc_runs_total", "result", "success"), m.Sum("berth_gc_runs_total", "result", "failure"))
	}

	// Metrics are on the debug listener only.
	resp, err := srv.tr.RoundTrip(mustRequest(t, "GET", srv.url("/metrics")))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("/metrics on the API listener: %d", resp.StatusCode)
	}
}

// TestMetricsOffByDefault: a debug listener without prometheus enabled
// serves no metrics.
func TestMetricsOffByDefault(t *testing.T) {
	port := testutil.FreePortString(t)
	startServerWith(t, t.TempDir(), func(c *Config) { c.HTTP.Debug.Addr = "127.0.0.1:" + port }, nil)
	resp, err := http.Get("http://127.0.0.1:" + port + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("/metrics with prometheus off: %d", resp.StatusCode)
	}
}

// imageBytes is the size of img's layers and config, as pushed.
func imageBytes(t *testing.T, img v1.Image) int64 {
	t.Helper()
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	n := m.Config.Size
	for _, l := range m.Layers {
		n += l.Size
	}
	return n
}
