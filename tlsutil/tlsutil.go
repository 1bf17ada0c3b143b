// Package tlsutil gives Berth's servers their TLS configuration: the server
// certificate from a generated private CA, from files reloaded when they
// change, or from an ACME CA such as Let's Encrypt; TLS 1.2 or newer, HTTP/2
// and HTTP/1.1, and optional client-certificate authentication.
//
// A server program builds a Server once and serves with it:
//
//	tlsSrv, err := tlsutil.NewServer(cfg, logger)
//	srv := &http.Server{Handler: h, TLSConfig: tlsSrv.TLSConfig(), ReadHeaderTimeout: 10 * time.Second}
//	go srv.Serve(tlsSrv.Listener(ln))
//	// optional, ACME http-01 and redirect: (&http.Server{Handler: tlsSrv.HTTPHandler(tlsutil.RedirectHandler("5000"))}).Serve(ln80)
package tlsutil

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/berth-registry/berth/internal/osfile"
	"golang.org/x/crypto/acme"
	"golang.org/x/crypto/acme/autocert"
)

// Config selects where the server certificate comes from and how clients
// are checked. Set at most one source: Certificate and Key, CA, or ACME.
// The zero Config means a private CA with the zero CAConfig.
//
// The registry maps Distribution's http.tls keys onto it: certificate →
// Certificate, key → Key, clientcas → ClientCAs, minimumtls → MinimumTLS,
// letsencrypt.{cachefile, email, hosts, directoryurl} → ACME.
type Config struct {
	// Certificate and Key are PEM files: the certificate followed by its
	// intermediates, and its private key. They are checked for changes at
	// most once a second and reloaded without a restart; a new pair that
	// does not load is logged and the previous one is kept. Both or neither.
	Certificate, Key string

	// ClientCAs are PEM files of the CAs whose client certificates are
	// accepted. When set, every client must present a certificate that
	// chains to one of them (mutual TLS). Empty means no client
	// certificates are asked for.
	ClientCAs []string

	// MinimumTLS is the lowest TLS version accepted: "tls1.2" or "tls1.3".
	// "" means "tls1.2". Older versions are refused.
	MinimumTLS string

	// CA, when set, issues the server certificate from a private CA,
	// creating the CA and the certificate when they do not exist yet.
	CA *CAConfig

	// ACME, when set, obtains certificates from an ACME CA.
	ACME *ACMEConfig
}

// Server provides the TLS configuration of one listening program. Build it
// with NewServer; the zero Server is not usable.
type Server struct {
	tlsConfig *tls.Config
	manager   *autocert.Manager // nil unless the source is ACME
}

// NewServer checks cfg, loads or creates the certificate material and
// returns a Server. A nil logger discards log records. With a private CA it
// logs where the CA certificate is and its fingerprint, and, when it created
// the CA or the server certificate, how clients trust the CA.
func NewServer(cfg Config, logger *slog.Logger) (*Server, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	minVersion, err := parseMinimumTLS(cfg.MinimumTLS)
	if err != nil {
		return nil, err
	}
	tc := &tls.Config{
		MinVersion: minVersion,
		NextProtos: []string{"h2", "http/1.1"},
	}
	if len(cfg.ClientCAs) > 0 {
		if tc.ClientCAs, err = loadPool(cfg.ClientCAs); err != nil {
			return nil, err
		}
		tc.ClientAuth = tls.RequireAndVerifyClientCert
	}

	s := &Server{tlsConfig: tc}
	files := cfg.Certificate != "" || cfg.Key != ""
	switch {
	case countTrue(files, cfg.CA != nil, cfg.ACME != nil) > 1:
		return nil, errors.New("tlsutil: configure one certificate source: certificate and key files, a private CA, or ACME")
	case files:
		if cfg.Certificate == "" || cfg.Key == "" {
			return nil, errors.New("tlsutil: certificate and key must be configured together")
		}
		r, err := newKeyPairReloader(cfg.Certificate, cfg.Key, logger)
		if err != nil {
			return nil, err
		}
		tc.GetCertificate = r.GetCertificate
	case cfg.ACME != nil:
		if s.manager, err = newACMEManager(*cfg.ACME); err != nil {
			return nil, err
		}
		tc.GetCertificate = s.manager.GetCertificate
		tc.NextProtos = append(tc.NextProtos, acme.ALPNProto)
		if tc.ClientAuth != tls.NoClientCert {
			// The CA's tls-alpn-01 check has no client certificate.
			challenge := tc.Clone()
			challenge.ClientAuth, challenge.ClientCAs = tls.NoClientCert, nil
			tc.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
				if len(hello.SupportedProtos) == 1 && hello.SupportedProtos[0] == acme.ALPNProto {
					return challenge, nil
				}
				return nil, nil
			}
		}
	default:
		ca := CAConfig{}
		if cfg.CA != nil {
			ca = *cfg.CA
		}
		if tc.GetCertificate, err = privateCA(ca, logger); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// privateCA ensures the CA and server certificate exist, logs how to trust
// the CA, and returns a reloading GetCertificate for the server certificate.
func privateCA(cfg CAConfig, logger *slog.Logger) (func(*tls.ClientHelloInfo) (*tls.Certificate, error), error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	files, err := EnsureCertificates(cfg, false)
	if err != nil {
		return nil, err
	}
	hostport := cfg.Hosts[0]
	if cfg.ClientPort != "" && cfg.ClientPort != "443" {
		hostport = net.JoinHostPort(hostport, cfg.ClientPort)
	}
	if files.CACreated {
		logger.Warn("created a private CA: clients must trust it", "ca", files.CAFile, "sha256", files.Fingerprint)
	} else {
		logger.Info("using the private CA", "ca", files.CAFile, "sha256", files.Fingerprint)
	}
	if files.Issued != "" {
		logger.Info("issued a server certificate", "certificate", files.CertFile, "hosts", cfg.Hosts, "reason", files.Issued)
	}
	if files.CACreated || files.Issued != "" {
		p := trustPathsFor(hostport)
		logger.Info("to trust the private CA, copy its certificate to the path for your client",
			"ca", files.CAFile, "sha256", files.Fingerprint, "docker_linux", p.dockerLinux, "docker_windows", p.dockerWindows,
			"podman", p.podman, "containerd", p.containerd)
	}
	r, err := newKeyPairReloader(files.CertFile, files.KeyFile, logger)
	if err != nil {
		return nil, err
	}
	return r.GetCertificate, nil
}

// TLSConfig returns a new copy of the server TLS configuration, for
// http.Server.TLSConfig (serve with Serve(Listener(ln))) or tls.NewListener.
func (s *Server) TLSConfig() *tls.Config {
	return s.tlsConfig.Clone()
}

// HTTPHandler returns the handler for an optional plain-HTTP listener. With
// ACME it answers the CA's http-01 challenges; every other request goes to
// fallback. A nil fallback means RedirectHandler(""): a redirect to HTTPS on
// port 443.
//
// With ACME, call it before the first TLS handshake: the http-01 challenge
// is offered only once HTTPHandler has been called.
func (s *Server) HTTPHandler(fallback http.Handler) http.Handler {
	if fallback == nil {
		fallback = RedirectHandler("")
	}
	if s.manager == nil {
		return fallback
	}
	return s.manager.HTTPHandler(fallback)
}

// StartHTTP serves the optional plain-HTTP listener on addr in the
// background: HTTPHandler with a redirect to HTTPS on httpsPort. It returns
// the server (Close it at shutdown) and the address it listens on.
func (s *Server) StartHTTP(addr, httpsPort string) (*http.Server, net.Addr, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, nil, err
	}
	srv := &http.Server{Handler: s.HTTPHandler(RedirectHandler(httpsPort)), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return srv, ln.Addr(), nil
}

// RedirectHandler redirects GET and HEAD requests to the same host and path
// over HTTPS on httpsPort ("" or "443" for the default port) with 308
// Permanent Redirect, and answers other methods with 400, since their bodies
// must not be sent in clear text again.
func RedirectHandler(httpsPort string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			http.Error(w, "use HTTPS", http.StatusBadRequest)
			return
		}
		host := r.Host
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		if httpsPort != "" && httpsPort != "443" {
			host = net.JoinHostPort(host, httpsPort)
		} else if strings.Contains(host, ":") {
			host = "[" + host + "]"
		}
		http.Redirect(w, r, "https://"+host+r.URL.RequestURI(), http.StatusPermanentRedirect)
	})
}

// ClientConfig returns a TLS client configuration (TLS 1.2 or newer) that
// trusts exactly the CA certificates in caFiles; with no files it trusts
// the system roots. The registry uses it to fetch the auth server's JWKS.
func ClientConfig(caFiles ...string) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if len(caFiles) > 0 {
		pool, err := loadPool(caFiles)
		if err != nil {
			return nil, err
		}
		tc.RootCAs = pool
	}
	return tc, nil
}

func parseMinimumTLS(s string) (uint16, error) {
	switch strings.ToLower(s) {
	case "", "tls1.2":
		return tls.VersionTLS12, nil
	case "tls1.3":
		return tls.VersionTLS13, nil
	}
	return 0, fmt.Errorf("tlsutil: minimumtls %q: want \"tls1.2\" or \"tls1.3\"", s)
}

// loadPool reads PEM certificates from files into a new pool.
func loadPool(files []string) (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	for _, f := range files {
		data, err := osfile.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("tlsutil: reading CA file: %w", err)
		}
		if !pool.AppendCertsFromPEM(data) {
			return nil, fmt.Errorf("tlsutil: %s: no PEM certificates", f)
		}
	}
	return pool, nil
}

func countTrue(bs ...bool) int {
	n := 0
	for _, b := range bs {
		if b {
			n++
		}
	}
	return n
}
