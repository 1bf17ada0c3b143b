package main

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/berth-registry/berth/internal/config"
	"github.com/berth-registry/berth/proxy"
	"github.com/berth-registry/berth/registry"
	"github.com/berth-registry/berth/storage"
	"github.com/berth-registry/berth/storage/driver"
	"github.com/berth-registry/berth/tlsutil"
)

// Config is the registry's configuration file. Keys and meanings follow CNCF
// Distribution's config.yml for what Berth supports; every key can be set
// from the environment as REGISTRY_<SECTION>_<KEY>.
type Config struct {
	// Version is the file format version; "0.1" as in Distribution.
	Version string `yaml:"version"`
	Log     struct {
		// Level is debug, info (default), warn or error.
		Level string `yaml:"level"`
		// Formatter is text (default) or json.
		Formatter string `yaml:"formatter"`
		AccessLog struct {
			// Disabled turns off the one-line-per-request log.
			Disabled bool `yaml:"disabled"`
		} `yaml:"accesslog"`
	} `yaml:"log"`
	Storage struct {
		// Filesystem keeps everything in a directory; it is the driver
		// unless s3 names a bucket.
		Filesystem struct {
			// RootDirectory holds all data (default "data" in the working
			// directory).
			RootDirectory string `yaml:"rootdirectory"`
		} `yaml:"filesystem"`
		// S3 keeps everything in a bucket of an S3-compatible store, with
		// Distribution's keys and object layout; any number of registries
		// may serve one bucket.
		S3 S3Config `yaml:"s3"`
		// Redirect, as in Distribution: with disable false, blob downloads
		// are answered with a redirect to a presigned URL of the store
		// (S3 only). Berth's default is not to redirect (disable true):
		// clients behind the registry's firewall often cannot reach the
		// store.
		Redirect struct {
			Disable bool `yaml:"disable"`
		} `yaml:"redirect"`
		Delete struct {
			// Enabled allows deleting manifests, tags and blobs. Berth's
			// default is true (Distribution's is false).
			Enabled bool `yaml:"enabled"`
		} `yaml:"delete"`
		// GC is Berth's own section (Distribution collects only while
		// stopped): collection in the serving registry, and what both it
		// and `registry garbage-collect` remove.
		GC          GCConfig `yaml:"gc"`
		Maintenance struct {
			// UploadPurging removes abandoned upload sessions, with
			// Distribution's keys and defaults.
			UploadPurging UploadPurgingConfig `yaml:"uploadpurging"`
			// ReadOnly, as in Distribution: every push, upload and delete
			// is refused with 405 UNSUPPORTED while pulls go on, and the
			// serving registry neither collects garbage nor purges
			// uploads (for a maintenance window, or a replica that must
			// only serve).
			ReadOnly struct {
				Enabled bool `yaml:"enabled"`
			} `yaml:"readonly"`
		} `yaml:"maintenance"`
	} `yaml:"storage"`
	HTTP struct {
		// Addr is the listen address (default ":5000").
		Addr string `yaml:"addr"`
		// DrainTimeout is how long shutdown waits for requests in flight
		// (default 30s).
		DrainTimeout time.Duration `yaml:"draintimeout"`
		// BodyIdleTimeout is Berth's own key (Distribution has none): how
		// long a request body may deliver no byte before the request is
		// cut (default 60s; negative: never). A request on an upload that
		// a stalled one holds waits up to 1¼ of it, then gets 429.
		BodyIdleTimeout time.Duration `yaml:"bodyidletimeout"`
		// Secret is accepted so that a Distribution config.yml that sets
		// it starts unchanged, and has no effect: Distribution signs upload
		// state into upload URLs with it, Berth keeps that state in
		// storage. The registry logs that it is ignored.
		Secret string `yaml:"secret"`
		// Debug serves Go's profiler (net/http/pprof) on a separate
		// listener, as Distribution's http.debug does. Keep it on
		// loopback: profiles reveal internals.
		Debug struct {
			// Addr is the debug listener (such as "127.0.0.1:5005").
			// Empty: none.
			Addr string `yaml:"addr"`
			// Prometheus serves metrics on the debug listener, with
			// Distribution's keys.
			Prometheus struct {
				// Enabled turns metrics on (default false: none are
				// kept). It needs addr.
				Enabled bool `yaml:"enabled"`
				// Path is where they are served (default "/metrics").
				Path string `yaml:"path"`
			} `yaml:"prometheus"`
		} `yaml:"debug"`
		// TLS selects the certificate source: files (certificate, key),
		// ACME (letsencrypt), or, when neither is set, Berth's private CA.
		TLS struct {
			// Certificate and Key are PEM files, reloaded when they change.
			Certificate string `yaml:"certificate"`
			Key         string `yaml:"key"`
			// ClientCAs are CA files whose client certificates are required
			// (mutual TLS). Empty: no client certificates.
			ClientCAs []string `yaml:"clientcas"`
			// MinimumTLS is tls1.2 (default) or tls1.3.
			MinimumTLS  string `yaml:"minimumtls"`
			LetsEncrypt struct {
				// CacheFile is the directory autocert caches certificates
				// in (Distribution's key name; it is a directory here).
				CacheFile string `yaml:"cachefile"`
				// Email is the ACME account contact.
				Email string `yaml:"email"`
				// Hosts are the names certificates may be requested for.
				Hosts []string `yaml:"hosts"`
				// DirectoryURL is the ACME directory; empty: Let's Encrypt.
				DirectoryURL string `yaml:"directoryurl"`
				// RootCAs are extra CA files for reaching a private ACME CA.
				RootCAs []string `yaml:"rootcas"`
			} `yaml:"letsencrypt"`
			// PrivateCA is Berth's generated CA, used when no certificate
			// files and no letsencrypt hosts are configured.
			PrivateCA struct {
				// Dir holds the CA and certificates (default "certs").
				Dir string `yaml:"dir"`
				// Hosts are the names and IPs of the server certificate
				// (default: this machine's name, localhost, 127.0.0.1, ::1).
				Hosts []string `yaml:"hosts"`
			} `yaml:"privateca"`
			// HTTPAddr is an optional plain-HTTP listener (such as ":80")
			// that answers ACME http-01 challenges and redirects every
			// other request to HTTPS. Empty: none.
			HTTPAddr string `yaml:"httpaddr"`
			// Disabled serves plain HTTP: only behind a TLS-terminating
			// proxy. The server warns at start-up.
			Disabled bool `yaml:"disabled"`
		} `yaml:"tls"`
	} `yaml:"http"`
	// Health is Distribution's health section: the storage check that
	// takes part in readiness (/readyz).
	Health struct {
		StorageDriver struct {
			// Enabled reads from storage every Interval; after Threshold
			// failures in a row /readyz answers 503 until a read succeeds
			// (default true, every 10s, threshold 3).
			Enabled   bool          `yaml:"enabled"`
			Interval  time.Duration `yaml:"interval"`
			Threshold int           `yaml:"threshold"`
		} `yaml:"storagedriver"`
	} `yaml:"health"`
	// Auth selects how clients authenticate. With neither section the
	// registry is open to anyone who can reach it, and says so loudly.
	Auth struct {
		// Token is Docker token authentication: clients fetch short-lived
		// tokens from the realm (authserver, or any token server that
		// follows the Docker token specification).
		Token struct {
			// Realm is the token endpoint URL clients are sent to.
			Realm string `yaml:"realm"`
			// Service is this registry's name: tokens' aud must contain it.
			Service string `yaml:"service"`
			// Issuer is the exact iss of accepted tokens.
			Issuer string `yaml:"issuer"`
			// RootCertBundle holds the certificates whose keys sign tokens
			// (an x5c chain must end at one of them).
			RootCertBundle string `yaml:"rootcertbundle"`
			// JWKS is a JWKS file, or an https URL fetched at start and
			// every JWKSRefresh after.
			JWKS string `yaml:"jwks"`
			// JWKSCA are CA files to trust for an https JWKS URL (the auth
			// server's private CA). Empty: the system roots.
			JWKSCA []string `yaml:"jwksca"`
			// JWKSRefresh is how often a JWKS URL is fetched again
			// (default 5m).
			JWKSRefresh time.Duration `yaml:"jwksrefresh"`
			// SigningAlgorithms pins accepted algorithms (default: the
			// asymmetric ones; none and HMAC are never accepted).
			SigningAlgorithms []string `yaml:"signingalgorithms"`
		} `yaml:"token"`
		// Htpasswd is Basic authentication against an htpasswd file, with
		// full access for every user in it: for single-user setups.
		Htpasswd struct {
			// Realm names the Basic challenge.
			Realm string `yaml:"realm"`
			// Path is the htpasswd file (bcrypt entries only).
			Path string `yaml:"path"`
		} `yaml:"htpasswd"`
	} `yaml:"auth"`
	// Notifications sends an event for every push, pull, mount and
	// deletion to webhooks, queued in storage (see package notify).
	Notifications NotificationsConfig `yaml:"notifications"`
	// Proxy makes the registry a pull-through cache (see package proxy).
	Proxy ProxyConfig `yaml:"proxy"`
	// UI is Berth's web pages (see package ui and ui.go).
	UI UIConfig `yaml:"ui"`

	// proxyTransport, when set (by tests), carries the requests to every
	// upstream. Nil: http.DefaultTransport.
	proxyTransport http.RoundTripper
	// wrapDriver, when set (by tests), wraps the storage driver the
	// registry serves from. Nil: none.
	wrapDriver func(driver.Driver) driver.Driver
}

// GCConfig is the storage.gc section.
type GCConfig struct {
	// Enabled runs a collection in the serving registry every Interval.
	// False (the default): collect with `registry garbage-collect`, which
	// is safe while registries serve the same storage.
	Enabled bool `yaml:"enabled"`
	// Interval is the time between the end of one scheduled collection
	// and the start of the next; the first starts one interval after the
	// registry does (default 24h). With several replicas each schedules
	// its own; one collects, the others find the store's collection lock
	// taken and skip that run.
	Interval time.Duration `yaml:"interval"`
	// GracePeriod is how long new content, and content a request relied
	// on, is safe from collection (default 1h; see storage.Options). A
	// client has at least ¾ of it between a HEAD and the manifest PUT
	// that relies on it. It is set on the store whether or not Enabled
	// is, and every registry and garbage-collect run on one storage must
	// use the same value.
	GracePeriod time.Duration `yaml:"graceperiod"`
	// DeleteUntagged also removes manifests no tag reaches, once older
	// than the grace period, as Distribution's --delete-untagged does.
	// False: every manifest stays.
	DeleteUntagged bool `yaml:"deleteuntagged"`
	// DryRun makes collections log what they would remove and change
	// nothing. False: they remove.
	DryRun bool `yaml:"dryrun"`
	// Retention rules decide which tags a collection removes; the first
	// rule whose repositories pattern matches a repository applies to it.
	// Empty: no tag is removed. A removed tag's manifest, and the blobs
	// only it references, go only when deleteuntagged or the rule's
	// untaggedolderthan removes untagged manifests. From the environment the whole list is
	// one YAML value (REGISTRY_STORAGE_GC_RETENTION='[{repositories:
	// "team/**", keeplast: 10}]'); single rules or their fields cannot be
	// set there.
	Retention []RetentionConfig `yaml:"retention"`
}

// RetentionConfig is one storage.gc.retention rule; see
// storage.RetentionRule for the exact meaning. The zero rule removes
// nothing.
type RetentionConfig struct {
	// Repositories is a pattern on repository names: "*" within a path
	// component, "**" across components ("team/**"). Empty: every
	// repository.
	Repositories string `yaml:"repositories"`
	// KeepLast keeps the N most recently pushed tags. Zero: no count.
	KeepLast int `yaml:"keeplast"`
	// KeepTags is a regular expression; tags it matches always stay
	// ("^v[0-9]+"). Empty: none is kept for its name.
	KeepTags string `yaml:"keeptags"`
	// TagsOlderThan removes only tags pushed longer ago than this. Zero:
	// age does not matter.
	TagsOlderThan time.Duration `yaml:"tagsolderthan"`
	// UntaggedOlderThan removes the repositories' untagged manifests once
	// this old (never before the grace period), even without
	// deleteuntagged; with it, the longer of the two ages applies to the
	// repositories the rule matches. Zero: only deleteuntagged removes
	// them.
	UntaggedOlderThan time.Duration `yaml:"untaggedolderthan"`
}

// UploadPurgingConfig is storage.maintenance.uploadpurging, with
// Distribution's keys and defaults.
type UploadPurgingConfig struct {
	// Enabled purges every Interval in the serving registry (default
	// true, as in Distribution; false turns it off).
	Enabled bool `yaml:"enabled"`
	// Age: sessions begun longer ago than this, and that received no
	// byte for as long, are removed (default 168h).
	Age time.Duration `yaml:"age"`
	// Interval is the time between purges; the first is one interval
	// after start (default 24h).
	Interval time.Duration `yaml:"interval"`
	// DryRun logs what would be removed and changes nothing.
	DryRun bool `yaml:"dryrun"`
}

// defaultConfig is what the registry runs with when no file sets a key.
func defaultConfig() Config {
	var c Config
	c.Version = "0.1"
	c.Log.Level = "info"
	c.Log.Formatter = "text"
	c.Storage.Filesystem.RootDirectory = "data"
	c.Storage.Delete.Enabled = true
	c.Storage.Redirect.Disable = true
	c.Storage.GC.Interval = 24 * time.Hour
	c.Storage.GC.GracePeriod = storage.DefaultGracePeriod
	c.Storage.Maintenance.UploadPurging = UploadPurgingConfig{Enabled: true, Age: 168 * time.Hour, Interval: 24 * time.Hour}
	c.Health.StorageDriver.Enabled = true
	c.Health.StorageDriver.Interval = 10 * time.Second
	c.Health.StorageDriver.Threshold = 3
	c.HTTP.Addr = ":5000"
	c.HTTP.DrainTimeout = 30 * time.Second
	c.HTTP.Debug.Prometheus.Path = "/metrics"
	c.HTTP.BodyIdleTimeout = registry.DefaultBodyIdleTimeout
	c.HTTP.TLS.PrivateCA.Dir = "certs"
	c.Auth.Token.JWKSRefresh = 5 * time.Minute
	c.Auth.Htpasswd.Realm = "Berth registry"
	c.Proxy.TTL = proxy.DefaultTTL
	c.UI.Enabled = true
	return c
}

// loadConfig reads path (optional) over the defaults, then the environment.
func loadConfig(path string) (Config, error) {
	c := defaultConfig()
	if err := config.Load(path, "REGISTRY", &c); err != nil {
		return c, err
	}
	return c, c.validate()
}

func (c *Config) validate() error {
	if c.Version != "0.1" {
		return fmt.Errorf("config: version %q is not supported (want 0.1)", c.Version)
	}
	if c.Storage.Filesystem.RootDirectory == "" && c.Storage.S3.Bucket == "" {
		return fmt.Errorf("config: storage.filesystem.rootdirectory is empty")
	}
	if c.Storage.S3.Bucket != "" && c.Storage.Filesystem.RootDirectory != defaultConfig().Storage.Filesystem.RootDirectory {
		return fmt.Errorf("config: storage: configure filesystem or s3, not both")
	}
	if (c.HTTP.TLS.Certificate == "") != (c.HTTP.TLS.Key == "") {
		return fmt.Errorf("config: http.tls.certificate and http.tls.key go together")
	}
	if c.HTTP.TLS.Certificate != "" && len(c.HTTP.TLS.LetsEncrypt.Hosts) > 0 {
		return fmt.Errorf("config: http.tls: set certificate and key, or letsencrypt, not both")
	}
	tok, ht := c.Auth.Token, c.Auth.Htpasswd
	tokenOn := tok.Realm != "" || tok.Service != "" || tok.Issuer != "" || tok.RootCertBundle != "" || tok.JWKS != ""
	if tokenOn && ht.Path != "" {
		return fmt.Errorf("config: auth: configure token or htpasswd, not both")
	}
	if tokenOn && (tok.Realm == "" || tok.Service == "" || tok.Issuer == "" || (tok.RootCertBundle == "" && tok.JWKS == "")) {
		return fmt.Errorf("config: auth.token needs realm, service, issuer, and rootcertbundle or jwks")
	}
	if p := c.HTTP.Debug.Prometheus; p.Enabled && c.HTTP.Debug.Addr == "" {
		return fmt.Errorf("config: http.debug.prometheus.enabled needs http.debug.addr (the listener metrics are served on)")
	} else if p.Enabled && (!strings.HasPrefix(p.Path, "/") || strings.HasPrefix(p.Path, "/debug/pprof/")) {
		return fmt.Errorf("config: http.debug.prometheus.path %q: want an absolute path outside /debug/pprof/", p.Path)
	}
	if c.HTTP.BodyIdleTimeout == 0 {
		return fmt.Errorf("config: http.bodyidletimeout is 0: set a duration, or a negative one for no limit")
	}
	if err := c.validateStorage(); err != nil {
		return err
	}
	if h := c.Health.StorageDriver; h.Enabled && (h.Interval <= 0 || h.Threshold <= 0) {
		return fmt.Errorf("config: health.storagedriver needs a positive interval and threshold (got %v, %d)", h.Interval, h.Threshold)
	}
	if err := c.Notifications.validate(); err != nil {
		return err
	}
	if err := c.validateProxy(); err != nil {
		return err
	}
	if err := c.UI.validate(); err != nil {
		return err
	}
	if _, err := parseLevel(c.Log.Level); err != nil {
		return err
	}
	switch c.Log.Formatter {
	case "text", "json":
	default:
		return fmt.Errorf("config: log.formatter %q: want text or json", c.Log.Formatter)
	}
	return nil
}

// validateStorage checks the gc and maintenance sections: durations that
// have a default must be positive (zero is never what was meant), and
// retention rules must compile.
func (c *Config) validateStorage() error {
	gc, up := c.Storage.GC, c.Storage.Maintenance.UploadPurging
	for _, d := range []struct {
		key string
		v   time.Duration
	}{
		{"storage.gc.interval", gc.Interval},
		{"storage.gc.graceperiod", gc.GracePeriod},
		{"storage.maintenance.uploadpurging.age", up.Age},
		{"storage.maintenance.uploadpurging.interval", up.Interval},
	} {
		if d.v <= 0 {
			return fmt.Errorf("config: %s is %v: want a positive duration", d.key, d.v)
		}
	}
	_, err := c.retentionRules()
	return err
}

// retentionRules returns storage.gc.retention as compiled storage rules,
// or an error that names the key at fault.
func (c *Config) retentionRules() ([]storage.RetentionRule, error) {
	var rules []storage.RetentionRule
	for i, rc := range c.Storage.GC.Retention {
		key := fmt.Sprintf("storage.gc.retention[%d]", i)
		switch {
		case rc.KeepLast < 0:
			return nil, fmt.Errorf("config: %s.keeplast is %d: want 0 or more", key, rc.KeepLast)
		case rc.TagsOlderThan < 0:
			return nil, fmt.Errorf("config: %s.tagsolderthan is %v: want 0 or more", key, rc.TagsOlderThan)
		case rc.UntaggedOlderThan < 0:
			return nil, fmt.Errorf("config: %s.untaggedolderthan is %v: want 0 or more", key, rc.UntaggedOlderThan)
		}
		r := storage.RetentionRule{
			Repositories:      rc.Repositories,
			KeepLast:          rc.KeepLast,
			KeepTags:          rc.KeepTags,
			TagsOlderThan:     rc.TagsOlderThan,
			UntaggedOlderThan: rc.UntaggedOlderThan,
		}
		if err := r.Compile(); err != nil {
			return nil, fmt.Errorf("config: %s: %w", key, err)
		}
		rules = append(rules, r)
	}
	return rules, nil
}

// gcOptions maps storage.gc onto a collection's options (the config is
// valid: loadConfig checked it). The pull-through cache's ttl rules follow
// storage.gc.retention's, so that a rule of the user's for the same
// repositories wins.
func (c *Config) gcOptions() storage.GCOptions {
	rules, _ := c.retentionRules()
	ttlRules, _ := c.proxyRetention()
	rules = append(rules, ttlRules...)
	return storage.GCOptions{
		DeleteUntagged: c.Storage.GC.DeleteUntagged,
		DryRun:         c.Storage.GC.DryRun,
		Retention:      rules,
	}
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(strings.ToUpper(s))); err != nil {
		return l, fmt.Errorf("config: log.level %q: want debug, info, warn or error", s)
	}
	return l, nil
}

// newLogger is the configured logger, writing to w.
func newLogger(c Config, w io.Writer) *slog.Logger {
	level, _ := parseLevel(c.Log.Level)
	opts := &slog.HandlerOptions{Level: level}
	if c.Log.Formatter == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// storageOptions maps the configuration onto the store's options: a
// request on a busy upload session outwaits the body idle timeout by a
// quarter, so a stalled request holding the session is always cut first;
// the grace period is set whether or not this registry collects, since
// collections elsewhere (another replica, the CLI) rely on it.
func (c *Config) storageOptions() storage.Options {
	opts := storage.Options{GracePeriod: c.Storage.GC.GracePeriod}
	if c.HTTP.BodyIdleTimeout >= 0 {
		opts.UploadWait = c.HTTP.BodyIdleTimeout + c.HTTP.BodyIdleTimeout/4
	}
	return opts
}

// tlsConfig maps the http.tls section onto tlsutil's Config.
func (c *Config) tlsConfig() tlsutil.Config {
	t := c.HTTP.TLS
	tc := tlsutil.Config{
		Certificate: t.Certificate,
		Key:         t.Key,
		ClientCAs:   t.ClientCAs,
		MinimumTLS:  t.MinimumTLS,
	}
	switch {
	case t.Certificate != "":
	case len(t.LetsEncrypt.Hosts) > 0:
		tc.ACME = &tlsutil.ACMEConfig{
			CacheDir:     t.LetsEncrypt.CacheFile,
			Email:        t.LetsEncrypt.Email,
			Hosts:        t.LetsEncrypt.Hosts,
			DirectoryURL: t.LetsEncrypt.DirectoryURL,
			RootCAs:      t.LetsEncrypt.RootCAs,
		}
	default:
		_, port, _ := net.SplitHostPort(c.HTTP.Addr)
		tc.CA = &tlsutil.CAConfig{Dir: t.PrivateCA.Dir, Name: "registry", Hosts: t.PrivateCA.Hosts, ClientPort: port}
	}
	return tc
}
