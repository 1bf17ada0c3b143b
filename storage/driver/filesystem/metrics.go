package filesystem

import "github.com/prometheus/client_golang/prometheus"

// journalMetrics are the journal's Prometheus metrics. They always exist
// (an unregistered counter costs an atomic add), so the journal never
// asks whether metrics are on.
type journalMetrics struct {
	// commits counts records made durable: PutContent and Delete calls
	// the journal acknowledged.
	commits prometheus.Counter
	// failures counts commits that failed (their batch's write or sync).
	failures prometheus.Counter
	// flush times one group commit: the write and fdatasync of a batch
	// of records. Its count is the number of syncs; commits divided by
	// it is how many writes share one.
	flush prometheus.Observer
	// checkpoints counts generations made durable in place and removed.
	checkpoints prometheus.Counter
}

func newJournalMetrics(reg prometheus.Registerer) (*journalMetrics, error) {
	commits := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "berth_filesystem_journal_commits_total",
		Help: "Writes (PutContent, Delete) made durable by the filesystem driver's journal.",
	})
	failures := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "berth_filesystem_journal_commit_failures_total",
		Help: "Journal commits that failed because their batch could not be written or synced.",
	})
	flush := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "berth_filesystem_journal_flush_duration_seconds",
		Help:    "Latency of one group commit of the journal (write and fdatasync of a batch of records).",
		Buckets: []float64{.00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, 1},
	})
	checkpoints := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "berth_filesystem_journal_checkpoints_total",
		Help: "Journal generations checkpointed (their changes synced in place, the journal file removed).",
	})
	if reg != nil {
		for _, c := range []prometheus.Collector{commits, failures, flush, checkpoints} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return &journalMetrics{commits: commits, failures: failures, flush: flush, checkpoints: checkpoints}, nil
}
