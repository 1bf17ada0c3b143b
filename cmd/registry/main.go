// Command registry serves the OCI Distribution API.
//
//	registry serve [config.yml]
//	registry garbage-collect [--dry-run] [--delete-untagged] [config.yml]
//	registry repository delete NAME [config.yml]
//	registry purge-uploads [--dry-run] [config.yml]
//	registry version
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"runtime/debug"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/berth-registry/berth/internal/cli"
	"github.com/berth-registry/berth/internal/config"
	"github.com/berth-registry/berth/notify"
	"github.com/berth-registry/berth/proxy"
	"github.com/berth-registry/berth/registry"
	"github.com/berth-registry/berth/storage"
	"github.com/berth-registry/berth/storage/driver/metered"
	"github.com/berth-registry/berth/tlsutil"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = ""

func main() {
	if err := rootCommand().Execute(); err != nil {
		os.Exit(1)
	}
}

func rootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:           "registry",
		Short:         "Berth container registry (OCI Distribution API)",
		SilenceUsage:  true,
		SilenceErrors: false,
	}
	root.AddCommand(&cobra.Command{
		Use:   "serve [config.yml]",
		Short: "Serve the registry API",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			path := ""
			if len(args) == 1 {
				path = args[0]
			}
			cfg, err := loadConfig(path)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return serve(ctx, cfg, newLogger(cfg, os.Stderr), nil)
		},
	})
	root.AddCommand(garbageCollectCommand())
	root.AddCommand(repositoryCommand())
	root.AddCommand(purgeUploadsCommand())
	root.AddCommand(cli.CertsCommand("registry", "5000"))
	var live bool
	health := &cobra.Command{
		Use:   "healthcheck [config.yml]",
		Short: "Exit 0 when the configured server is ready: /readyz, or /healthz with --live (for container health checks)",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			path := ""
			if len(args) == 1 {
				path = args[0]
			}
			// Only where to knock is needed: a container that gets the
			// rest of its configuration from the environment must not fail
			// its health check over, say, the auth section.
			cfg := defaultConfig()
			if err := config.Load(path, "REGISTRY", &cfg); err != nil {
				return err
			}
			endpoint := "/readyz"
			if live {
				endpoint = "/healthz"
			}
			url, err := cli.HealthURL(cfg.HTTP.Addr, !cfg.HTTP.TLS.Disabled, endpoint)
			if err != nil {
				return err
			}
			return cli.Healthcheck(cmd.Context(), url)
		},
	}
	health.Flags().BoolVar(&live, "live", false, "ask liveness (/healthz): whether the process answers at all")
	root.AddCommand(health)
	root.AddCommand(&cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, args []string) {
			fmt.Fprintln(cmd.OutOrStdout(), "berth registry", versionString())
		},
	})
	return root
}

func versionString() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				return "dev-" + s.Value
			}
		}
		if bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			return bi.Main.Version
		}
	}
	return "dev"
}

// serve runs the registry until ctx ends, then drains requests in flight.
// With ln nil it listens on cfg.HTTP.Addr; ready, if not nil, is told the
// bound address (tests listen on ":0").
func serve(ctx context.Context, cfg Config, log *slog.Logger, ready func(addr string)) error {
	metrics, metricsHandler := newMetrics(cfg, log)
	drv, where, closeDriver, err := openDriver(ctx, cfg, false, metrics)
	if err != nil {
		return err
	}
	// Runs after the server has drained: journaled writes go in place, so
	// the next start has nothing to replay.
	defer func() {
		if err := closeDriver(); err != nil {
			log.Error("closing storage", "err", err)
		}
	}()
	apiLog := log
	if cfg.Log.AccessLog.Disabled {
		apiLog = slog.New(errorsOnly{log.Handler()})
	}
	authz, err := newAuthorizer(ctx, cfg, log)
	if err != nil {
		return err
	}
	// One driver, metered when metrics are on, for the store and the
	// notification queue.
	drv = metered.Wrap(drv, metrics)
	if cfg.wrapDriver != nil {
		drv = cfg.wrapDriver(drv)
	}
	storeOpts := cfg.storageOptions()
	storeOpts.Registerer = metrics
	store := storage.NewWithOptions(drv, storeOpts)
	var check *registry.StorageCheck
	if h := cfg.Health.StorageDriver; h.Enabled {
		check = registry.NewStorageCheck(store, h.Interval, h.Threshold)
	}
	readOnly := cfg.Storage.Maintenance.ReadOnly.Enabled
	var sink notify.Sink
	notifier, err := newNotifier(cfg, drv, log)
	if err != nil {
		return err
	}
	if notifier != nil {
		// Stops after the server has drained (the events of the last
		// requests go into the queue) and before the driver closes.
		notifier.Start()
		defer func() {
			nctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := notifier.Close(nctx); err != nil {
				log.Error("closing notifications", "err", err)
			}
		}()
		sink = notifier
	}
	var mirror *proxy.Proxy
	if ups := cfg.proxyUpstreams(); len(ups) > 0 {
		for i := range ups {
			ups[i].Transport = cfg.proxyTransport
			log.Info("pull-through cache", "prefix", ups[i].Prefix, "remoteurl", ups[i].RemoteURL,
				"authenticated", ups[i].Username != "", "ttl", ups[i].TTL, "tagcheck", ups[i].TagCheck, "ca", ups[i].CAFile)
		}
		if mirror, err = proxy.New(store, ups, log); err != nil {
			return err
		}
	}
	pages, err := newUI(cfg, store, drv, authz, sink, mirror, log)
	if err != nil {
		return err
	}
	handler := registry.New(registry.Config{
		Store:           store,
		Logger:          apiLog,
		Authorizer:      authz,
		DeleteEnabled:   cfg.Storage.Delete.Enabled,
		BodyIdleTimeout: cfg.HTTP.BodyIdleTimeout,
		Redirect:        !cfg.Storage.Redirect.Disable,
		ReadOnly:        readOnly,
		StorageCheck:    check,
		Notify:          sink,
		Metrics:         metrics,
		Proxy:           mirror,
		UI:              pages,
	})
	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	tlsOn := !cfg.HTTP.TLS.Disabled
	var ts *tlsutil.Server
	if tlsOn {
		if ts, err = tlsutil.NewServer(cfg.tlsConfig(), log); err != nil {
			return err
		}
		srv.TLSConfig = ts.TLSConfig()
	}
	ln, err := net.Listen("tcp", cfg.HTTP.Addr)
	if err != nil {
		return err
	}
	if tlsOn && cfg.HTTP.TLS.HTTPAddr != "" {
		_, port, _ := net.SplitHostPort(ln.Addr().String())
		plain, addr, err := ts.StartHTTP(cfg.HTTP.TLS.HTTPAddr, port)
		if err != nil {
			ln.Close()
			return err
		}
		log.Info("plain-HTTP listener for ACME http-01 and redirects", "addr", addr.String())
		defer plain.Close()
	}
	if cfg.HTTP.Debug.Addr != "" {
		debug, err := startDebug(cfg.HTTP.Debug.Addr, log, cfg.HTTP.Debug.Prometheus.Path, metricsHandler, http.HandlerFunc(handler.DebugHealth))
		if err != nil {
			ln.Close()
			return err
		}
		defer debug.Close()
	}
	// Scheduled collection and purging (none in read-only mode) and the
	// storage check stop before the driver closes, and also when serve
	// returns early with an error.
	mctx, stopMaintenance := context.WithCancel(ctx)
	var background sync.WaitGroup
	if !readOnly {
		background.Go(startMaintenance(mctx, cfg, store, log))
	}
	if check != nil {
		background.Go(func() { check.Run(mctx) })
	}
	defer func() {
		stopMaintenance()
		background.Wait()
	}()
	log.Info("registry listening", "addr", ln.Addr().String(), "tls", tlsOn,
		"storage", where, "delete", cfg.Storage.Delete.Enabled, "readonly", readOnly, "version", versionString())
	if cfg.HTTP.Secret != "" {
		log.Info("http.secret is ignored: upload state is kept in storage, not signed into upload URLs")
	}
	if !tlsOn {
		log.Warn("serving plain HTTP (http.tls.disabled): only behind a TLS-terminating proxy")
	}
	if ready != nil {
		ready(ln.Addr().String())
	}
	errc := make(chan error, 1)
	go func() {
		if tlsOn {
			errc <- srv.Serve(ts.Listener(ln))
		} else {
			errc <- srv.Serve(ln)
		}
	}()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down", "drain", cfg.HTTP.DrainTimeout)
	sctx, cancel := context.WithTimeout(context.Background(), cfg.HTTP.DrainTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		// Drain time is up: cut the requests still running.
		srv.Close()
		return err
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// startDebug serves Go's profiler on its own listener at addr, the
// Distribution-style /debug/health, and the metrics at metricsPath when
// metrics is not nil.
func startDebug(addr string, log *slog.Logger, metricsPath string, metrics, health http.Handler) (*http.Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.Handle("/debug/health", health)
	if metrics != nil {
		mux.Handle(metricsPath, metrics)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	log.Warn("debug listener (profiling) is on: keep it off public networks", "addr", ln.Addr().String())
	go func() { _ = srv.Serve(ln) }()
	return srv, nil
}

// errorsOnly drops records below warning level (the access log).
type errorsOnly struct{ slog.Handler }

func (h errorsOnly) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelWarn && h.Handler.Enabled(ctx, l)
}

// WithAttrs keeps the filter on derived loggers.
func (h errorsOnly) WithAttrs(attrs []slog.Attr) slog.Handler {
	return errorsOnly{h.Handler.WithAttrs(attrs)}
}

// WithGroup keeps the filter on derived loggers.
func (h errorsOnly) WithGroup(name string) slog.Handler { return errorsOnly{h.Handler.WithGroup(name)} }
