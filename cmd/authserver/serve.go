package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	berthcli "github.com/berth-registry/berth/internal/cli"
	"github.com/berth-registry/berth/tlsutil"
)

// shutdownTimeout bounds the graceful shutdown of the HTTP server.
const shutdownTimeout = 10 * time.Second

// run serves the token endpoints on ln until ctx is done, then shuts down
// gracefully. It returns nil after a clean shutdown.
func run(ctx context.Context, cfg Config, logger *slog.Logger, ln net.Listener) error {
	var metrics prometheus.Registerer // nil interface: none
	var metricsHandler http.Handler
	if cfg.Server.Metrics.Addr != "" {
		metrics, metricsHandler = berthcli.NewMetrics(logger)
	}
	users, ts, err := components(cfg, logger, metrics)
	if err != nil {
		ln.Close()
		return err
	}
	if metricsHandler != nil {
		msrv, err := startMetrics(cfg.Server.Metrics, metricsHandler, logger)
		if err != nil {
			ln.Close()
			return err
		}
		defer msrv.Close()
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
	tlsSrv, err := serverTLS(cfg.Server, logger)
	if err != nil {
		ln.Close()
		return err
	}
	tlsOn := tlsSrv != nil
	if tlsOn {
		srv.TLSConfig = tlsSrv.TLSConfig()
		if cfg.Server.HTTPAddr != "" {
			_, port, _ := net.SplitHostPort(ln.Addr().String())
			plain, addr, err := tlsSrv.StartHTTP(cfg.Server.HTTPAddr, port)
			if err != nil {
				ln.Close()
				return err
			}
			logger.Info("plain-HTTP listener for ACME http-01 and redirects", "addr", addr.String())
			defer plain.Close()
		}
	}
	errc := make(chan error, 1)
	go func() {
		if tlsOn {
			errc <- srv.Serve(tlsSrv.Listener(ln))
		} else {
			errc <- srv.Serve(ln)
		}
	}()
	logger.Info("auth server listening", "addr", ln.Addr().String(), "tls", tlsOn,
		"issuer", cfg.Token.Issuer, "services", cfg.Token.Services)

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

// startMetrics serves the metrics on a plain-HTTP listener of their own.
func startMetrics(mc MetricsConfig, h http.Handler, logger *slog.Logger) (*http.Server, error) {
	ln, err := net.Listen("tcp", mc.Addr)
	if err != nil {
		return nil, fmt.Errorf("server.metrics.addr: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle(mc.Path, h)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
	logger.Info("metrics listening: keep it off public networks", "addr", ln.Addr().String(), "path", mc.Path)
	go func() { _ = srv.Serve(ln) }()
	return srv, nil
}

// serverTLS is the one place that decides how the listener is served: TLS
// 1.2 or later from tlsutil (certificate files reloaded when they change,
// ACME, or by default the private CA), or plain HTTP (nil) only when
// server.insecure is set.
func serverTLS(sc ServerConfig, logger *slog.Logger) (*tlsutil.Server, error) {
	if sc.Insecure {
		logger.Warn("serving plain HTTP because server.insecure is set: run behind a reverse proxy that terminates TLS")
		return nil, nil
	}
	ts, err := tlsutil.NewServer(sc.tlsConfig(), logger)
	if err != nil {
		return nil, fmt.Errorf("server TLS: %w (set server.certificate and server.key, server.letsencrypt, or server.insecure behind a TLS proxy)", err)
	}
	return ts, nil
}
