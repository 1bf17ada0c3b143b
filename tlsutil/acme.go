package tlsutil

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/crypto/acme"
	"golang.org/x/crypto/acme/autocert"
)

// ACMEConfig obtains and renews server certificates from an ACME CA (Let's
// Encrypt, or an internal one such as step-ca or Pebble). The CA checks
// control of each name with tls-alpn-01 on the TLS listener (port 443 as
// the CA sees it), or with http-01 on port 80 when the program serves
// Server.HTTPHandler there. Configuring ACME accepts the CA's terms of
// service.
type ACMEConfig struct {
	// CacheDir keeps the account key and the certificates, so a restarted
	// server reuses them instead of asking the CA again. Distribution's
	// letsencrypt.cachefile is used as this directory. "" means
	// "certs/acme", relative to the working directory.
	CacheDir string

	// Email is the contact address given to the CA for expiry and problem
	// notices. "" registers without one.
	Email string

	// Hosts are the DNS names certificates may be requested for; a client
	// asking for any other name gets no certificate. Each needs a dot; IP
	// addresses and localhost cannot get ACME certificates. Required.
	Hosts []string

	// DirectoryURL is the CA's ACME directory. "" means Let's Encrypt's
	// production directory.
	DirectoryURL string

	// RootCAs are PEM files of the CAs trusted for HTTPS connections to
	// the ACME directory (an internal ACME CA). Empty means the system
	// roots.
	RootCAs []string
}

func newACMEManager(cfg ACMEConfig) (*autocert.Manager, error) {
	if len(cfg.Hosts) == 0 {
		return nil, fmt.Errorf("tlsutil: acme: no hosts configured")
	}
	hosts := make([]string, len(cfg.Hosts))
	for i, h := range cfg.Hosts {
		h = strings.TrimSuffix(strings.ToLower(strings.TrimSpace(h)), ".")
		if net.ParseIP(strings.Trim(h, "[]")) != nil || !strings.Contains(h, ".") || strings.ContainsAny(h, ":/ ") {
			return nil, fmt.Errorf("tlsutil: acme: host %q: ACME certificates need a DNS name with a dot, without a port", cfg.Hosts[i])
		}
		hosts[i] = h
	}
	if cfg.CacheDir == "" {
		cfg.CacheDir = filepath.Join("certs", "acme")
	}
	if cfg.DirectoryURL == "" {
		cfg.DirectoryURL = autocert.DefaultACMEDirectory
	}
	tc, err := ClientConfig(cfg.RootCAs...)
	if err != nil {
		return nil, err
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.TLSClientConfig = tc
	whitelist := autocert.HostWhitelist(hosts...)
	return &autocert.Manager{
		Prompt: autocert.AcceptTOS,
		Cache:  autocert.DirCache(cfg.CacheDir),
		// http-01 requests carry the port in Host when the CA is told to
		// use another port than 80; the whitelist has names only.
		HostPolicy: func(ctx context.Context, host string) error {
			if h, _, err := net.SplitHostPort(host); err == nil {
				host = h
			}
			return whitelist(ctx, strings.ToLower(host))
		},
		Email: cfg.Email,
		Client: &acme.Client{
			DirectoryURL: cfg.DirectoryURL,
			HTTPClient:   &http.Client{Transport: transport, Timeout: time.Minute},
		},
	}, nil
}
