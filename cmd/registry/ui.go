package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/berth-registry/berth/notify"
	"github.com/berth-registry/berth/proxy"
	"github.com/berth-registry/berth/registry"
	"github.com/berth-registry/berth/storage"
	"github.com/berth-registry/berth/storage/driver"
	"github.com/berth-registry/berth/ui"
)

// UIConfig is Berth's ui section: the web pages under /ui/.
type UIConfig struct {
	// Enabled serves the pages, and redirects / to them (default true;
	// false: /ui/ answers 404).
	Enabled bool `yaml:"enabled"`
	// TokenAddr is the host:port the registry connects to when it asks
	// the token server (auth.token.realm) for a signed-in person's
	// tokens, where the realm's own name does not lead there from the
	// registry (in compose, the realm names the host; the auth server is
	// "auth:5001"). TLS still checks the realm's name. Empty: the realm's
	// host and port.
	TokenAddr string `yaml:"tokenaddr"`
}

func (u UIConfig) validate() error {
	if u.TokenAddr != "" {
		if _, _, err := net.SplitHostPort(u.TokenAddr); err != nil {
			return fmt.Errorf("config: ui.tokenaddr %q: want host:port", u.TokenAddr)
		}
	}
	return nil
}

// newUI builds the web pages for the registry's auth mode; nil (an
// untyped nil, so that registry.Config.UI is nil) when they are off.
func newUI(cfg Config, store *storage.Store, drv driver.Driver, authz registry.Authorizer, sink notify.Sink, mirror *proxy.Proxy, log *slog.Logger) (http.Handler, error) {
	if !cfg.UI.Enabled {
		return nil, nil
	}
	uc := ui.Config{
		Store:         store,
		Driver:        drv,
		Logger:        log,
		DeleteEnabled: cfg.Storage.Delete.Enabled,
		ReadOnly:      cfg.Storage.Maintenance.ReadOnly.Enabled,
		Mirrors:       mirror.Mirrors,
		Notify:        sink,
	}
	switch a := authz.(type) {
	case *registry.TokenAuthorizer:
		client, err := tokenClient(cfg)
		if err != nil {
			return nil, err
		}
		uc.Token = &ui.TokenAuth{Realm: a.Realm(), Service: a.Service(), Verifier: a.Verifier(), Client: client}
	case *registry.BasicAuthorizer:
		uc.Users = a.Users()
	}
	h, err := ui.New(uc)
	if err != nil {
		return nil, err
	}
	return h, nil
}

// tokenClient is how the pages reach the token server: trusting the system
// roots, the CA files trusted for the JWKS URL (auth.token.jwksca), and
// the CA of the registry's own certificate (see ownCA), connecting to
// ui.tokenaddr when set.
func tokenClient(cfg Config) (*http.Client, error) {
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	files := append([]string(nil), cfg.Auth.Token.JWKSCA...)
	if ca := ownCA(cfg); ca != "" {
		files = append(files, ca)
	}
	for _, f := range files {
		pem, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("ui: token server CA: %w", err)
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("ui: token server CA %s: no certificate", f)
		}
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool}
	if addr := cfg.UI.TokenAddr; addr != "" {
		realm, err := url.Parse(cfg.Auth.Token.Realm)
		if err != nil {
			return nil, fmt.Errorf("config: auth.token.realm: %w", err)
		}
		realmAddr := realm.Host
		if realm.Port() == "" {
			port := "443"
			if realm.Scheme == "http" {
				port = "80"
			}
			realmAddr = net.JoinHostPort(realm.Hostname(), port)
		}
		var d net.Dialer
		tr.DialContext = func(ctx context.Context, network, a string) (net.Conn, error) {
			if a == realmAddr {
				a = addr
			}
			return d.DialContext(ctx, network, a)
		}
	}
	return &http.Client{Timeout: 10 * time.Second, Transport: tr}, nil
}

// ownCA is the CA file of the registry's own certificate, when there is
// one: its private CA's, or a ca.crt beside http.tls.certificate (the
// layout of the private CA's directory, which quickstart gives both
// servers, so that the auth server's certificate comes from it too). "":
// none.
func ownCA(cfg Config) string {
	t := cfg.HTTP.TLS
	var ca string
	switch {
	case t.Disabled || len(t.LetsEncrypt.Hosts) > 0:
		return ""
	case t.Certificate != "":
		ca = filepath.Join(filepath.Dir(t.Certificate), "ca.crt")
	default:
		ca = filepath.Join(t.PrivateCA.Dir, "ca.crt")
	}
	if _, err := os.Stat(ca); err != nil {
		return ""
	}
	return ca
}
