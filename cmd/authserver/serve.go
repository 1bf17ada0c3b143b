package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"
)

// shutdownTimeout bounds the graceful shutdown of the HTTP server.
const shutdownTimeout = 10 * time.Second

// run serves the token endpoints on ln until ctx is done, then shuts down
// gracefully. It returns nil after a clean shutdown.
func run(ctx context.Context, cfg Config, logger *slog.Logger, ln net.Listener) error {
	users, ts, err := components(cfg, logger)
	if err != nil {
		ln.Close()
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go users.Watch(ctx)

	srv := &http.Server{
		Handler:           ts.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 1)
	go func() { errc <- serve(srv, ln, cfg.Server, logger) }()
	logger.Info("auth server listening", "addr", ln.Addr().String(), "issuer", cfg.Token.Issuer, "services", cfg.Token.Services)

	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	logger.Info("shutting down")
	sctx, scancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer scancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// serve is the one place that decides how the listener is served: TLS 1.2 or
// later with server.certificate and server.key, or plain HTTP only when
// server.insecure is set. (It moves to tlsutil once that package exists.)
func serve(srv *http.Server, ln net.Listener, sc ServerConfig, logger *slog.Logger) error {
	if sc.Insecure {
		logger.Warn("serving plain HTTP because server.insecure is set: run behind a reverse proxy that terminates TLS")
		return srv.Serve(ln)
	}
	if sc.Certificate == "" || sc.Key == "" {
		ln.Close()
		return errors.New("server.certificate and server.key are required (or set server.insecure behind a TLS proxy)")
	}
	cert, err := tls.LoadX509KeyPair(sc.Certificate, sc.Key)
	if err != nil {
		ln.Close()
		return fmt.Errorf("server TLS certificate: %w (set server.certificate and server.key, or server.insecure behind a TLS proxy)", err)
	}
	srv.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
	return srv.ServeTLS(ln, "", "")
}

// healthcheck asks the server at url for /healthz. The check is about this
// process being alive, so it does not verify the server's certificate,
// which is issued for a name that need not resolve inside the container.
func healthcheck(ctx context.Context, url string) error {
	client := &http.Client{
		Timeout:   5 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}},
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	return nil
}

// healthURL is the /healthz address of the server configured by sc, reached
// on the loopback interface when the address has no host.
func healthURL(sc ServerConfig) (string, error) {
	host, port, err := net.SplitHostPort(sc.Addr)
	if err != nil {
		return "", fmt.Errorf("server.addr %q: %w", sc.Addr, err)
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	scheme := "https"
	if sc.Insecure {
		scheme = "http"
	}
	return scheme + "://" + net.JoinHostPort(host, port) + "/healthz", nil
}
