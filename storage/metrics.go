package storage

import (
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// gcMetrics are garbage collection's Prometheus metrics. They always
// exist; Options.Registerer decides whether anyone sees them.
type gcMetrics struct {
	success, failure, skipped prometheus.Counter // runs, by result
	blobs, bytes              prometheus.Counter
	manifests, tags           prometheus.Counter
	lastSuccess, lastDuration prometheus.Gauge
}

func newGCMetrics(reg prometheus.Registerer) *gcMetrics {
	runs := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "berth_gc_runs_total",
		Help: "Garbage collections run by this process, by result (success, failure, skipped: another collection held the store's lock).",
	}, []string{"result"})
	counter := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
	}
	gauge := func(name, help string) prometheus.Gauge {
		return prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: help})
	}
	m := &gcMetrics{
		success:      runs.WithLabelValues("success"),
		failure:      runs.WithLabelValues("failure"),
		skipped:      runs.WithLabelValues("skipped"),
		blobs:        counter("berth_gc_blobs_deleted_total", "Blobs removed by garbage collection (dry runs not counted)."),
		bytes:        counter("berth_gc_freed_bytes_total", "Bytes of blobs removed by garbage collection (dry runs not counted)."),
		manifests:    counter("berth_gc_manifests_deleted_total", "Manifest revisions removed from repositories by garbage collection."),
		tags:         counter("berth_gc_tags_deleted_total", "Tags removed by garbage collection's retention rules."),
		lastSuccess:  gauge("berth_gc_last_success_timestamp_seconds", "When the last successful garbage collection ended, in Unix seconds."),
		lastDuration: gauge("berth_gc_last_duration_seconds", "How long the last garbage collection that ran took."),
	}
	if reg != nil {
		reg.MustRegister(runs, m.blobs, m.bytes, m.manifests, m.tags, m.lastSuccess, m.lastDuration)
	}
	return m
}

// collected records one call of CollectGarbage.
func (m *gcMetrics) collected(r GCReport, dryRun bool, err error) {
	switch {
	case errors.Is(err, ErrGCRunning):
		m.skipped.Inc()
		return
	case err != nil:
		m.failure.Inc()
	default:
		m.success.Inc()
		m.lastSuccess.Set(float64(time.Now().UnixNano()) / 1e9)
	}
	m.lastDuration.Set(r.Duration.Seconds())
	if !dryRun {
		// A failed run still removed what it counted.
		m.blobs.Add(float64(r.BlobsDeleted))
		m.bytes.Add(float64(r.BytesFreed))
		m.manifests.Add(float64(r.ManifestsDeleted))
		m.tags.Add(float64(r.TagsDeleted))
	}
}
