package main

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/berth-registry/berth/auth"
	"github.com/berth-registry/berth/auth/tokenserver"
	"github.com/berth-registry/berth/internal/config"
	"github.com/berth-registry/berth/tlsutil"
)

// Config is the auth server's configuration file. Its keys follow
// cesanta/docker_auth where they overlap; every key can be overridden by an
// environment variable AUTHSERVER_<SECTION>_<KEY> (AUTHSERVER_SERVER_ADDR).
// Fields left out keep the values of defaultConfig.
type Config struct {
	Log      LogConfig                  `yaml:"log"`
	Server   ServerConfig               `yaml:"server"`
	Token    TokenConfig                `yaml:"token"`
	Users    UsersConfig                `yaml:"users"`
	Groups   map[string][]string        `yaml:"groups"`
	ACL      []auth.Rule                `yaml:"acl"`
	Throttle tokenserver.ThrottleConfig `yaml:"throttle"`
}

// LogConfig selects the log output.
type LogConfig struct {
	// Level is debug, info (default), warn or error.
	Level string `yaml:"level"`
	// Formatter is text (default) or json.
	Formatter string `yaml:"formatter"`
}

// ServerConfig is the HTTP listener.
type ServerConfig struct {
	// Addr is the listen address. Default ":5001".
	Addr string `yaml:"addr"`
	// Certificate and Key are the TLS certificate chain and key files,
	// reloaded when they change. Set both, letsencrypt, or neither (then
	// the private CA issues the certificate).
	Certificate string `yaml:"certificate"`
	Key         string `yaml:"key"`
	// MinimumTLS is tls1.2 (default) or tls1.3.
	MinimumTLS string `yaml:"minimumtls"`
	// ClientCAs are CA files whose client certificates are required
	// (mutual TLS). Empty: no client certificates.
	ClientCAs []string `yaml:"clientcas"`
	// HTTPAddr is an optional plain-HTTP listener (such as ":80") that
	// answers ACME http-01 challenges and redirects every other request to
	// HTTPS. Empty: none.
	HTTPAddr string `yaml:"httpaddr"`
	// LetsEncrypt obtains the certificate from an ACME CA (tls-alpn-01 on
	// this listener) when Hosts is set. The keys mean what they mean in the
	// registry's http.tls.letsencrypt.
	LetsEncrypt LetsEncryptConfig `yaml:"letsencrypt"`
	// PrivateCA is Berth's generated CA, used when neither certificate
	// files nor letsencrypt hosts are set. It shares its directory with
	// the registry's: the auth server's files are authserver.crt and
	// authserver.key, the CA is ca.crt.
	PrivateCA PrivateCAConfig `yaml:"privateca"`
	// Insecure serves plain HTTP, for use behind a reverse proxy that
	// terminates TLS. Default false.
	Insecure bool `yaml:"insecure"`
	// TrustedProxies are addresses or CIDRs whose X-Forwarded-For names
	// the client (for login throttling and logs). Default none.
	TrustedProxies []string `yaml:"trustedproxies"`
	// Metrics serves Prometheus metrics on a listener of its own.
	Metrics MetricsConfig `yaml:"metrics"`
}

// MetricsConfig is the metrics listener: plain HTTP, without
// authentication, so keep it on loopback or a private network.
type MetricsConfig struct {
	// Addr is the listen address (such as "127.0.0.1:5002"). Empty (the
	// default): no listener, and no metrics are kept.
	Addr string `yaml:"addr"`
	// Path is where metrics are served (default "/metrics").
	Path string `yaml:"path"`
}

// LetsEncryptConfig is the ACME source of the server certificate.
type LetsEncryptConfig struct {
	// CacheFile is the directory that keeps the ACME account and
	// certificates (default "certs/acme"; Distribution's key name).
	CacheFile string `yaml:"cachefile"`
	// Email is the ACME account contact; "" registers without one.
	Email string `yaml:"email"`
	// Hosts are the DNS names certificates may be requested for. Empty:
	// ACME is off.
	Hosts []string `yaml:"hosts"`
	// DirectoryURL is the ACME directory; "" means Let's Encrypt.
	DirectoryURL string `yaml:"directoryurl"`
	// RootCAs are extra CA files for reaching a private ACME CA.
	RootCAs []string `yaml:"rootcas"`
}

// PrivateCAConfig is the private CA source of the server certificate.
type PrivateCAConfig struct {
	// Dir holds the CA and certificates (default "certs").
	Dir string `yaml:"dir"`
	// Hosts are the names and IPs of the server certificate (default:
	// this machine's name, localhost, 127.0.0.1, ::1). Put the name the
	// registry's realm uses first.
	Hosts []string `yaml:"hosts"`
}

// TokenConfig is about the issued tokens.
type TokenConfig struct {
	// Issuer is the "iss" claim; the registry's auth.token.issuer.
	Issuer string `yaml:"issuer"`
	// Services are the accepted "service" values, each a registry's
	// auth.token.service.
	Services []string `yaml:"services"`
	// Expiration is the access-token lifetime in seconds (min 60).
	Expiration int `yaml:"expiration"`
	// Certificate (optional, sent as x5c) and Key sign the tokens.
	Certificate string `yaml:"certificate"`
	Key         string `yaml:"key"`
	// Keys are more signing keys for rotation: the newest key (latest
	// certificate) signs, all are published in the JWKS.
	Keys []KeyConfig `yaml:"keys"`
	// RefreshExpiration is the refresh-token lifetime in seconds.
	RefreshExpiration int `yaml:"refresh_expiration"`
}

// KeyConfig is one more signing key.
type KeyConfig struct {
	Certificate string `yaml:"certificate"`
	Key         string `yaml:"key"`
}

// UsersConfig is the user database.
type UsersConfig struct {
	// Htpasswd is the bcrypt htpasswd file, reloaded when it changes.
	Htpasswd string `yaml:"htpasswd"`
	// BcryptCost is the cost of hashes written by `user add|passwd`.
	// Default 10.
	BcryptCost int `yaml:"bcryptcost"`
}

// defaultConfig is what runs without a configuration file: TLS on from the
// private CA, material under the working directory.
func defaultConfig() Config {
	return Config{
		Log:    LogConfig{Level: "info", Formatter: "text"},
		Server: ServerConfig{Addr: ":5001", PrivateCA: PrivateCAConfig{Dir: "certs"}, Metrics: MetricsConfig{Path: "/metrics"}},
		Token: TokenConfig{
			Issuer:            "berth-auth",
			Services:          []string{"berth-registry"},
			Expiration:        300,
			Certificate:       "certs/token.crt",
			Key:               "certs/token.key",
			RefreshExpiration: 30 * 24 * 3600,
		},
		Users: UsersConfig{Htpasswd: "config/htpasswd", BcryptCost: auth.DefaultBcryptCost},
	}
}

// defaultACL applies when the configuration has no acl key at all: every
// authenticated user may do everything on every repository (what an
// htpasswd-protected Distribution allows), nobody lists the catalog.
func defaultACL() []auth.Rule {
	anyUser := "*"
	return []auth.Rule{{Match: auth.Match{Account: &anyUser}, Actions: []string{auth.ActionAll}}}
}

// loadConfig reads path (none when empty) over the defaults, then the
// environment.
func loadConfig(path string) (Config, error) {
	cfg := defaultConfig()
	if err := config.Load(path, "AUTHSERVER", &cfg); err != nil {
		return Config{}, err
	}
	if cfg.Token.Expiration < 60 {
		return Config{}, fmt.Errorf("token.expiration: %d seconds is less than 60", cfg.Token.Expiration)
	}
	if cfg.Token.RefreshExpiration <= 0 {
		return Config{}, fmt.Errorf("token.refresh_expiration must be positive")
	}
	if (cfg.Server.Certificate == "") != (cfg.Server.Key == "") {
		return Config{}, fmt.Errorf("server.certificate and server.key go together")
	}
	if !strings.HasPrefix(cfg.Server.Metrics.Path, "/") {
		return Config{}, fmt.Errorf("server.metrics.path %q: want an absolute path", cfg.Server.Metrics.Path)
	}
	if cfg.Server.Certificate != "" && len(cfg.Server.LetsEncrypt.Hosts) > 0 {
		return Config{}, fmt.Errorf("server: set certificate and key, or letsencrypt, not both")
	}
	return cfg, nil
}

func newLogger(c LogConfig, w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.Level)); err != nil {
		return nil, fmt.Errorf("log.level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch strings.ToLower(c.Formatter) {
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	case "text", "":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("log.formatter %q: want text or json", c.Formatter)
}

// loadSigner loads token.key (and certificate) and token.keys.
func loadSigner(t TokenConfig) (*auth.Signer, error) {
	if t.Key == "" {
		return nil, fmt.Errorf("token.key is not set")
	}
	var keys []auth.Key
	for _, kc := range append([]KeyConfig{{Key: t.Key, Certificate: t.Certificate}}, t.Keys...) {
		k, err := auth.LoadKey(kc.Key, kc.Certificate)
		if err != nil {
			return nil, fmt.Errorf("token key: %w (create one with `authserver keys generate`)", err)
		}
		keys = append(keys, k)
	}
	return auth.NewSigner(keys...)
}

// components builds the user store and the token server from cfg.
// metrics (nil: none) receives the token server's metrics.
func components(cfg Config, logger *slog.Logger, metrics prometheus.Registerer) (*auth.UserStore, *tokenserver.Server, error) {
	signer, err := loadSigner(cfg.Token)
	if err != nil {
		return nil, nil, err
	}
	rules := cfg.ACL
	if rules == nil {
		logger.Warn("no acl configured: every authenticated user gets full access to every repository")
		rules = defaultACL()
	}
	policy, err := auth.NewPolicy(rules, cfg.Groups)
	if err != nil {
		return nil, nil, err
	}
	users, err := auth.NewUserStore(auth.UserStoreConfig{Path: cfg.Users.Htpasswd, Logger: logger})
	if err != nil {
		return nil, nil, err
	}
	ts, err := tokenserver.New(tokenserver.Config{
		Issuer:            cfg.Token.Issuer,
		Services:          cfg.Token.Services,
		Expiration:        time.Duration(cfg.Token.Expiration) * time.Second,
		RefreshExpiration: time.Duration(cfg.Token.RefreshExpiration) * time.Second,
		Signer:            signer,
		Users:             users,
		Policy:            policy,
		Logger:            logger,
		TrustedProxies:    cfg.Server.TrustedProxies,
		Throttle:          cfg.Throttle,
		Metrics:           metrics,
	})
	if err != nil {
		return nil, nil, err
	}
	return users, ts, nil
}

// tlsConfig maps the server section onto tlsutil's Config: certificate
// files, ACME, or else the private CA (certificate name "authserver", so it
// shares the registry's certs directory without clashing).
func (sc ServerConfig) tlsConfig() tlsutil.Config {
	tc := tlsutil.Config{Certificate: sc.Certificate, Key: sc.Key, MinimumTLS: sc.MinimumTLS, ClientCAs: sc.ClientCAs}
	switch {
	case sc.Certificate != "" || sc.Key != "":
	case len(sc.LetsEncrypt.Hosts) > 0:
		le := sc.LetsEncrypt
		tc.ACME = &tlsutil.ACMEConfig{CacheDir: le.CacheFile, Email: le.Email, Hosts: le.Hosts, DirectoryURL: le.DirectoryURL, RootCAs: le.RootCAs}
	default:
		_, port, _ := net.SplitHostPort(sc.Addr)
		tc.CA = &tlsutil.CAConfig{Dir: sc.PrivateCA.Dir, Name: "authserver", Hosts: sc.PrivateCA.Hosts, ClientPort: port}
	}
	return tc
}
