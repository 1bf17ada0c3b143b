package filesystem

import (
	"syscall"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestJournalMetrics: every acknowledged PutContent and Delete is one
// commit, a failed batch one failure, group commits are timed, and Close
// checkpoints.
func TestJournalMetrics(t *testing.T) {
	arm := injectWriteFault(t, syscall.EIO, false)
	reg := prometheus.NewRegistry()
	d, err := NewWithOptions(t.TempDir(), Options{Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"/a", "/b", "/c"} {
		if err := d.PutContent(bg, p, []byte(p)); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.Delete(bg, "/a"); err != nil {
		t.Fatal(err)
	}
	arm()
	if err := d.PutContent(bg, "/d", []byte("d")); err == nil {
		t.Fatal("PutContent succeeded through a failed journal write")
	}
	if got := testutil.ToFloat64(d.journal.m.commits); got != 4 {
		t.Errorf("commits: %v, want 4", got)
	}
	if got := testutil.ToFloat64(d.journal.m.failures); got != 1 {
		t.Errorf("failed commits: %v, want 1", got)
	}
	if n := flushCount(t, reg); n < 1 || n > 5 {
		t.Errorf("group commits: %d, want 1 to 5 for 5 sequential records", n)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if got := testutil.ToFloat64(d.journal.m.checkpoints); got < 1 {
		t.Errorf("checkpoints after Close: %v, want at least 1", got)
	}
	if _, err := NewWithOptions(t.TempDir(), Options{Registerer: reg}); err == nil {
		t.Error("a second driver registered the same metrics without error")
	}
}

func flushCount(t *testing.T, reg *prometheus.Registry) uint64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "berth_filesystem_journal_flush_duration_seconds" {
			return mf.GetMetric()[0].GetHistogram().GetSampleCount()
		}
	}
	t.Fatal("no berth_filesystem_journal_flush_duration_seconds")
	return 0
}
