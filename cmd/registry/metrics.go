package main

import (
	"log/slog"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/berth-registry/berth/internal/cli"
)

// newMetrics returns the process's metrics registry and the handler that
// serves it when http.debug.prometheus is enabled; otherwise nil and nil,
// and every package keeps no metrics. The Registerer is a nil interface
// then, never a nil *prometheus.Registry, so the packages see "none".
func newMetrics(cfg Config, log *slog.Logger) (prometheus.Registerer, http.Handler) {
	if !cfg.HTTP.Debug.Prometheus.Enabled {
		return nil, nil
	}
	return cli.NewMetrics(log)
}
