package main

import (
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/berth-registry/berth/internal/testutil"
	"github.com/berth-registry/berth/storage"
)

func TestConfigDefaultsAndUnknownKeys(t *testing.T) {
	c, err := loadConfig("")
	if err != nil {
		t.Fatal(err)
	}
	tc := c.tlsConfig()
	if c.HTTP.TLS.Disabled || tc.CA == nil || tc.CA.Name != "registry" || tc.CA.ClientPort != "5000" || tc.ACME != nil {
		t.Fatalf("a fresh start must serve TLS from the private CA: %+v", tc)
	}
	path := filepath.Join(t.TempDir(), "config.yml")
	os.WriteFile(path, []byte("version: 0.1\nhttp:\n  tls:\n    certficate: /x\n"), 0o600)
	if _, err := loadConfig(path); err == nil || !strings.Contains(err.Error(), "certficate") {
		t.Fatalf("unknown key not named: %v", err)
	}
}

func TestConfigTLSSources(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.yml")
	os.WriteFile(path, []byte(`version: 0.1
http:
  addr: :443
  tls:
    clientcas: [/ca/clients.pem]
    minimumtls: tls1.3
    httpaddr: :80
    letsencrypt:
      cachefile: /var/lib/berth/acme
      email: ops@example.com
      hosts: [registry.example.com]
      directoryurl: https://acme.internal/directory
`), 0o600)
	c, err := loadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	tc := c.tlsConfig()
	if tc.ACME == nil || tc.CA != nil || tc.ACME.CacheDir != "/var/lib/berth/acme" || tc.ACME.Email != "ops@example.com" ||
		tc.ACME.Hosts[0] != "registry.example.com" || tc.ACME.DirectoryURL != "https://acme.internal/directory" {
		t.Fatalf("letsencrypt not mapped: %+v", tc.ACME)
	}
	if tc.MinimumTLS != "tls1.3" || tc.ClientCAs[0] != "/ca/clients.pem" {
		t.Fatalf("tls options not mapped: %+v", tc)
	}
	t.Setenv("REGISTRY_HTTP_TLS_CERTIFICATE", "/c.crt")
	t.Setenv("REGISTRY_HTTP_TLS_KEY", "/c.key")
	if _, err := loadConfig(path); err == nil {
		t.Fatal("files and letsencrypt together accepted")
	}
}

func TestConfigAuthValidation(t *testing.T) {
	for _, env := range [][2]string{
		{"REGISTRY_AUTH_TOKEN_REALM", "https://auth.example/token"}, // no service, issuer, keys
	} {
		t.Setenv(env[0], env[1])
		if _, err := loadConfig(""); err == nil {
			t.Fatalf("%s alone accepted", env[0])
		}
	}
	t.Setenv("REGISTRY_AUTH_TOKEN_SERVICE", "registry.example")
	t.Setenv("REGISTRY_AUTH_TOKEN_ISSUER", "berth-auth")
	t.Setenv("REGISTRY_AUTH_TOKEN_ROOTCERTBUNDLE", "/certs/token.crt")
	if _, err := loadConfig(""); err != nil {
		t.Fatalf("complete auth.token refused: %v", err)
	}
	t.Setenv("REGISTRY_AUTH_HTPASSWD_PATH", "/htpasswd")
	if _, err := loadConfig(""); err == nil {
		t.Fatal("token and htpasswd together accepted")
	}
}

// TestPlainListenerRedirects runs the registry with http.tls.httpaddr: the
// plain listener redirects to HTTPS and serves nothing itself.
func TestPlainListenerRedirects(t *testing.T) {
	port := testutil.FreePortString(t)
	srv := startServerWith(t, t.TempDir(), func(c *Config) { c.HTTP.TLS.HTTPAddr = "127.0.0.1:" + port }, nil)
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Get("http://127.0.0.1:" + port + "/v2/team/app/tags/list")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	_, tlsPort, _ := net.SplitHostPort(srv.addr)
	want := "https://127.0.0.1:" + tlsPort + "/v2/team/app/tags/list"
	if resp.StatusCode != http.StatusPermanentRedirect || resp.Header.Get("Location") != want {
		t.Fatalf("plain GET: %d %q, want 308 %q", resp.StatusCode, resp.Header.Get("Location"), want)
	}
	resp, err = client.Post("http://127.0.0.1:"+port+"/v2/team/app/blobs/uploads/", "application/octet-stream", strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("plain POST: %d, want 400 (bodies are not accepted in clear text)", resp.StatusCode)
	}
}

// TestDebugListener: http.debug.addr serves the profiler on its own
// listener; the API listener does not.
func TestDebugListener(t *testing.T) {
	port := testutil.FreePortString(t)
	srv := startServerWith(t, t.TempDir(), func(c *Config) { c.HTTP.Debug.Addr = "127.0.0.1:" + port }, nil)
	resp, err := http.Get("http://127.0.0.1:" + port + "/debug/pprof/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("debug listener: %d", resp.StatusCode)
	}
	resp, err = http.Get("http://127.0.0.1:" + port + "/debug/health")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(body) != "{}\n" {
		t.Fatalf("/debug/health of a healthy registry: %d %q", resp.StatusCode, body)
	}
	resp, err = srv.tr.RoundTrip(mustRequest(t, "GET", srv.url("/debug/pprof/")))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("profiler reachable on the API listener: %d", resp.StatusCode)
	}
}

// TestHealthcheckNeedsOnlyTheAddress: a container whose auth settings come
// partly from the environment still passes its health check.
func TestHealthcheckNeedsOnlyTheAddress(t *testing.T) {
	srv := startServerWith(t, t.TempDir(), nil, nil)
	_, port, _ := net.SplitHostPort(srv.addr)
	t.Setenv("REGISTRY_HTTP_ADDR", "127.0.0.1:"+port)
	t.Setenv("REGISTRY_AUTH_TOKEN_REALM", "https://auth.example/token") // incomplete on purpose
	cmd := rootCommand()
	cmd.SetArgs([]string{"healthcheck"})
	if err := cmd.Execute(); err != nil {
		t.Fatalf("healthcheck of a live server: %v", err)
	}
	t.Setenv("REGISTRY_HTTP_ADDR", "127.0.0.1:"+testutil.FreePortString(t))
	cmd = rootCommand()
	cmd.SetArgs([]string{"healthcheck"})
	cmd.SetErr(io.Discard)
	if err := cmd.Execute(); err == nil {
		t.Fatal("healthcheck of nothing succeeded")
	}
}

func TestConfigBodyIdleTimeout(t *testing.T) {
	c, err := loadConfig("")
	if err != nil {
		t.Fatal(err)
	}
	if c.HTTP.BodyIdleTimeout != 60*time.Second || c.storageOptions().UploadWait != 75*time.Second {
		t.Fatalf("defaults: body idle %v, upload wait %v", c.HTTP.BodyIdleTimeout, c.storageOptions().UploadWait)
	}
	t.Setenv("REGISTRY_HTTP_BODYIDLETIMEOUT", "2s")
	if c, err = loadConfig(""); err != nil || c.HTTP.BodyIdleTimeout != 2*time.Second || c.storageOptions().UploadWait != 2500*time.Millisecond {
		t.Fatalf("2s: %v, %v", c.HTTP.BodyIdleTimeout, err)
	}
	t.Setenv("REGISTRY_HTTP_BODYIDLETIMEOUT", "-1s")
	if c, err = loadConfig(""); err != nil || c.storageOptions().UploadWait != 0 {
		t.Fatalf("no limit: %v, %+v", err, c.storageOptions())
	}
	t.Setenv("REGISTRY_HTTP_BODYIDLETIMEOUT", "0s")
	if _, err := loadConfig(""); err == nil || !strings.Contains(err.Error(), "http.bodyidletimeout") {
		t.Fatalf("0 accepted or not named: %v", err)
	}
}

func TestConfigGCDefaults(t *testing.T) {
	c, err := loadConfig("")
	if err != nil {
		t.Fatal(err)
	}
	gc, up := c.Storage.GC, c.Storage.Maintenance.UploadPurging
	if gc.Enabled || gc.Interval != 24*time.Hour || gc.GracePeriod != time.Hour || gc.DeleteUntagged || gc.DryRun || len(gc.Retention) != 0 {
		t.Fatalf("storage.gc defaults: %+v", gc)
	}
	if !up.Enabled || up.Age != 168*time.Hour || up.Interval != 24*time.Hour || up.DryRun {
		t.Fatalf("storage.maintenance.uploadpurging defaults (Distribution's): %+v", up)
	}
	if g := c.storageOptions().GracePeriod; g != time.Hour {
		t.Fatalf("grace period passed to storage: %v", g)
	}
}

func TestConfigGCKeys(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.yml")
	os.WriteFile(path, []byte(`version: 0.1
storage:
  gc:
    enabled: true
    interval: 6h
    graceperiod: 2h
    deleteuntagged: true
    dryrun: true
    retention:
      - repositories: "team/**"
        keeplast: 10
        keeptags: "^v[0-9]+"
        tagsolderthan: 720h
        untaggedolderthan: 168h
      - repositories: "*"
        keeplast: 3
  maintenance:
    uploadpurging:
      enabled: false
      age: 48h
      interval: 12h
      dryrun: true
`), 0o600)
	c, err := loadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	gc, up := c.Storage.GC, c.Storage.Maintenance.UploadPurging
	if !gc.Enabled || gc.Interval != 6*time.Hour || gc.GracePeriod != 2*time.Hour || !gc.DeleteUntagged || !gc.DryRun {
		t.Fatalf("storage.gc: %+v", gc)
	}
	if up.Enabled || up.Age != 48*time.Hour || up.Interval != 12*time.Hour || !up.DryRun {
		t.Fatalf("storage.maintenance.uploadpurging (an explicit enabled: false must stick): %+v", up)
	}
	if g := c.storageOptions().GracePeriod; g != 2*time.Hour {
		t.Fatalf("grace period passed to storage: %v", g)
	}
	opts := c.gcOptions()
	if !opts.DeleteUntagged || !opts.DryRun || len(opts.Retention) != 2 {
		t.Fatalf("gc options: %+v", opts)
	}
	want := storage.RetentionRule{Repositories: "team/**", KeepLast: 10, KeepTags: "^v[0-9]+",
		TagsOlderThan: 720 * time.Hour, UntaggedOlderThan: 168 * time.Hour}
	if err := want.Compile(); err != nil {
		t.Fatal(err)
	}
	if got := opts.Retention[0]; !reflect.DeepEqual(got, want) {
		t.Fatalf("rule 0 = %+v, want %+v", got, want)
	}
	if r := opts.Retention[1]; r.Repositories != "*" || r.KeepLast != 3 || r.KeepTags != "" || r.TagsOlderThan != 0 {
		t.Fatalf("rule 1 = %+v", r)
	}

	// The environment overrides each key, the retention list as one value.
	t.Setenv("REGISTRY_STORAGE_GC_ENABLED", "false")
	t.Setenv("REGISTRY_STORAGE_GC_GRACEPERIOD", "90s")
	t.Setenv("REGISTRY_STORAGE_GC_INTERVAL", "30m")
	t.Setenv("REGISTRY_STORAGE_GC_DELETEUNTAGGED", "false")
	t.Setenv("REGISTRY_STORAGE_GC_RETENTION", `[{repositories: "a/*", keeplast: 2, tagsolderthan: 1h}]`)
	t.Setenv("REGISTRY_STORAGE_MAINTENANCE_UPLOADPURGING_ENABLED", "true")
	t.Setenv("REGISTRY_STORAGE_MAINTENANCE_UPLOADPURGING_AGE", "3h")
	if c, err = loadConfig(path); err != nil {
		t.Fatal(err)
	}
	gc, up = c.Storage.GC, c.Storage.Maintenance.UploadPurging
	if gc.Enabled || gc.GracePeriod != 90*time.Second || gc.Interval != 30*time.Minute || gc.DeleteUntagged || !gc.DryRun {
		t.Fatalf("storage.gc from the environment: %+v", gc)
	}
	if len(gc.Retention) != 1 || gc.Retention[0] != (RetentionConfig{Repositories: "a/*", KeepLast: 2, TagsOlderThan: time.Hour}) {
		t.Fatalf("retention from the environment: %+v", gc.Retention)
	}
	if !up.Enabled || up.Age != 3*time.Hour || up.Interval != 12*time.Hour {
		t.Fatalf("uploadpurging from the environment: %+v", up)
	}
	if g := c.storageOptions().GracePeriod; g != 90*time.Second {
		t.Fatalf("grace period passed to storage: %v", g)
	}

	// Without a file, the environment alone turns purging off.
	t.Setenv("REGISTRY_STORAGE_MAINTENANCE_UPLOADPURGING_ENABLED", "false")
	if c, err = loadConfig(""); err != nil || c.Storage.Maintenance.UploadPurging.Enabled {
		t.Fatalf("uploadpurging.enabled=false from the environment: %v, %+v", err, c.Storage.Maintenance.UploadPurging)
	}
}

func TestConfigGCValidation(t *testing.T) {
	for _, tc := range []struct {
		yaml, want string
	}{
		{"storage: {gc: {interval: -1h}}", "storage.gc.interval"},
		{"storage: {gc: {interval: 0s}}", "storage.gc.interval"},
		{"storage: {gc: {graceperiod: -5m}}", "storage.gc.graceperiod"},
		{"storage: {gc: {graceperiod: 0s}}", "storage.gc.graceperiod"},
		{"storage: {maintenance: {uploadpurging: {age: -1h}}}", "storage.maintenance.uploadpurging.age"},
		{"storage: {maintenance: {uploadpurging: {interval: -24h}}}", "storage.maintenance.uploadpurging.interval"},
		{"storage: {gc: {retention: [{keeptags: '^v[0-9'}]}}", "storage.gc.retention[0]"},
		{"storage: {gc: {retention: [{keeplast: 1}, {repositories: 'a/**', keeplast: -1}]}}", "storage.gc.retention[1].keeplast"},
		{"storage: {gc: {retention: [{tagsolderthan: -1h}]}}", "storage.gc.retention[0].tagsolderthan"},
		{"storage: {gc: {retention: [{untaggedolderthan: -1h}]}}", "storage.gc.retention[0].untaggedolderthan"},
		{"storage: {gc: {retention: [{keeplast: 1, keep: 2}]}}", "keep"},
		{"storage: {gc: {enable: true}}", "enable"},
		{"health: {storagedriver: {threshold: 0}}", "health.storagedriver"},
		{"health: {storagedriver: {interval: -10s}}", "health.storagedriver"},
	} {
		path := filepath.Join(t.TempDir(), "config.yml")
		os.WriteFile(path, []byte("version: 0.1\n"+tc.yaml+"\n"), 0o600)
		_, err := loadConfig(path)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error naming %s", tc.yaml, err, tc.want)
		}
	}
	t.Setenv("REGISTRY_STORAGE_GC_RETENTION", `[{keeptags: "("}]`)
	if _, err := loadConfig(""); err == nil || !strings.Contains(err.Error(), "storage.gc.retention[0]") {
		t.Fatalf("a bad pattern from the environment: %v", err)
	}
}

// TestConfigHealthAndReadOnly: the health check is on by default with
// Distribution's figures, and both sections are settable from a file and
// from the environment.
func TestConfigHealthAndReadOnly(t *testing.T) {
	c, err := loadConfig("")
	if err != nil {
		t.Fatal(err)
	}
	if h := c.Health.StorageDriver; !h.Enabled || h.Interval != 10*time.Second || h.Threshold != 3 {
		t.Fatalf("default health.storagedriver = %+v", h)
	}
	if c.Storage.Maintenance.ReadOnly.Enabled {
		t.Fatal("read-only by default")
	}
	path := filepath.Join(t.TempDir(), "config.yml")
	os.WriteFile(path, []byte("version: 0.1\nhealth: {storagedriver: {enabled: false, interval: 1m}}\nstorage: {maintenance: {readonly: {enabled: true}}}\n"), 0o600)
	if c, err = loadConfig(path); err != nil {
		t.Fatal(err)
	}
	if h := c.Health.StorageDriver; h.Enabled || h.Interval != time.Minute || h.Threshold != 3 || !c.Storage.Maintenance.ReadOnly.Enabled {
		t.Fatalf("from the file: %+v, readonly %v", h, c.Storage.Maintenance.ReadOnly.Enabled)
	}
	t.Setenv("REGISTRY_HEALTH_STORAGEDRIVER_THRESHOLD", "5")
	t.Setenv("REGISTRY_STORAGE_MAINTENANCE_READONLY_ENABLED", "false")
	if c, err = loadConfig(path); err != nil {
		t.Fatal(err)
	}
	if c.Health.StorageDriver.Threshold != 5 || c.Storage.Maintenance.ReadOnly.Enabled {
		t.Fatalf("from the environment: %+v, readonly %v", c.Health.StorageDriver, c.Storage.Maintenance.ReadOnly.Enabled)
	}
}

// TestConfigAcceptsHTTPSecret: a Distribution config.yml with http.secret
// loads (the key has no effect in Berth).
func TestConfigAcceptsHTTPSecret(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.yml")
	os.WriteFile(path, []byte("version: 0.1\nhttp: {addr: ':5000', secret: asecretforlocaldevelopment}\n"), 0o600)
	c, err := loadConfig(path)
	if err != nil || c.HTTP.Secret != "asecretforlocaldevelopment" {
		t.Fatalf("http.secret: %v, %q", err, c.HTTP.Secret)
	}
}
