package main

import (
	"log/slog"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// newMetrics returns the process's one metrics registry, with the Go
// runtime's and the process's collectors, and the handler that serves it,
// when http.debug.prometheus is enabled; otherwise nil and nil, and every
// package keeps no metrics. The Registerer is a nil interface then, never
// a nil *prometheus.Registry, so the packages see "none".
// A collector that fails (the process collector on an unusual platform)
// costs its own series, logged, not the whole scrape.
func newMetrics(cfg Config, log *slog.Logger) (prometheus.Registerer, http.Handler) {
	if !cfg.HTTP.Debug.Prometheus.Enabled {
		return nil, nil
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		collectors.NewBuildInfoCollector(),
	)
	return reg, promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		Registry:      reg,
		ErrorHandling: promhttp.ContinueOnError,
		ErrorLog:      slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	})
}
