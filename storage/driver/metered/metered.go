// Package metered wraps a storage driver so that every operation is timed
// and its failures counted, as Prometheus metrics:
//
//	berth_storage_operation_duration_seconds{op}  histogram of call latency
//	berth_storage_operation_errors_total{op}      failed calls
//
// op is the driver method in snake case (get_content, put_content, reader,
// writer, stat, stat_file, list, list_page, move, delete, redirect_url)
// or a FileWriter's (write_commit, write_cancel, write_close, and write,
// whose calls are counted when they fail but not timed: a blob arrives in
// thousands of them). A Reader's reads are not seen: the reader is the
// driver's own, so that copies out of it keep their fast paths.
//
// A missing path (driver.ErrNotFound) and a cancelled context are answers,
// not failures: storage asks whether files exist all the time, and clients
// go away. Neither is counted as an error.
//
// The wrapper keeps exactly the optional interfaces (driver.Writability,
// driver.Redirector, driver.FileStater) of the driver it wraps, so storage
// behaves the same with metrics on or off.
package metered

import (
	"context"
	"errors"
	"io"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/berth-registry/berth/storage/driver"
)

// The operations, in the order of the names below.
type op int

const (
	opGetContent op = iota
	opPutContent
	opReader
	opWriter
	opStat
	opStatFile
	opList
	opListPage
	opMove
	opDelete
	opRedirectURL
	opWrite
	opWriteCommit
	opWriteCancel
	opWriteClose
	numOps
)

var opNames = [numOps]string{
	"get_content", "put_content", "reader", "writer", "stat", "stat_file", "list", "list_page",
	"move", "delete", "redirect_url", "write", "write_commit", "write_cancel", "write_close",
}

// Buckets spans a filesystem's tens of microseconds to an object store's
// seconds.
var buckets = []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// metrics holds one child per operation, curried once, so that a call
// costs a clock read and an atomic add, and no label lookup.
type metrics struct {
	dur  [numOps]prometheus.Observer
	errs [numOps]prometheus.Counter
}

// observe records one call of o that began at start and ended with err.
func (m *metrics) observe(o op, start time.Time, err error) {
	m.dur[o].Observe(time.Since(start).Seconds())
	m.failed(o, err)
}

// failed counts err against o when it is a failure (see the package doc).
func (m *metrics) failed(o op, err error) {
	if err != nil && !errors.Is(err, driver.ErrNotFound) && !errors.Is(err, context.Canceled) {
		m.errs[o].Inc()
	}
}

// Wrap returns d with its operations measured into reg. With reg nil it
// returns d itself: metrics off cost nothing. It panics if reg already
// has the metrics (one wrapped driver per registry).
func Wrap(d driver.Driver, reg prometheus.Registerer) driver.Driver {
	if reg == nil {
		return d
	}
	dur := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "berth_storage_operation_duration_seconds",
		Help:    "Latency of storage driver operations, by operation.",
		Buckets: buckets,
	}, []string{"op"})
	errs := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "berth_storage_operation_errors_total",
		Help: "Storage driver operations that failed (not counting not-found answers and cancelled requests), by operation.",
	}, []string{"op"})
	reg.MustRegister(dur, errs)

	w, isW := d.(driver.Writability)
	r, isR := d.(driver.Redirector)
	f, isF := d.(driver.FileStater)
	m := &metrics{}
	for o := range numOps {
		if (o == opRedirectURL && !isR) || (o == opStatFile && !isF) {
			continue // no series for what the driver cannot do
		}
		m.dur[o] = dur.WithLabelValues(opNames[o])
		m.errs[o] = errs.WithLabelValues(opNames[o])
	}
	b := &base{d: d, m: m}
	wr := writability{w}
	rd := redirector{r, m}
	fs := fileStater{f, m}
	switch {
	case isW && isR && isF:
		return &struct {
			*base
			writability
			redirector
			fileStater
		}{b, wr, rd, fs}
	case isW && isR:
		return &struct {
			*base
			writability
			redirector
		}{b, wr, rd}
	case isW && isF:
		return &struct {
			*base
			writability
			fileStater
		}{b, wr, fs}
	case isR && isF:
		return &struct {
			*base
			redirector
			fileStater
		}{b, rd, fs}
	case isW:
		return &struct {
			*base
			writability
		}{b, wr}
	case isR:
		return &struct {
			*base
			redirector
		}{b, rd}
	case isF:
		return &struct {
			*base
			fileStater
		}{b, fs}
	}
	return b
}

// base measures the methods of driver.Driver.
type base struct {
	d driver.Driver
	m *metrics
}

func (b *base) GetContent(ctx context.Context, p string) ([]byte, error) {
	start := time.Now()
	c, err := b.d.GetContent(ctx, p)
	b.m.observe(opGetContent, start, err)
	return c, err
}

func (b *base) PutContent(ctx context.Context, p string, content []byte) error {
	start := time.Now()
	err := b.d.PutContent(ctx, p, content)
	b.m.observe(opPutContent, start, err)
	return err
}

func (b *base) Reader(ctx context.Context, p string, offset int64) (io.ReadCloser, error) {
	start := time.Now()
	r, err := b.d.Reader(ctx, p, offset)
	b.m.observe(opReader, start, err)
	return r, err
}

func (b *base) Writer(ctx context.Context, p string, append bool) (driver.FileWriter, error) {
	start := time.Now()
	w, err := b.d.Writer(ctx, p, append)
	b.m.observe(opWriter, start, err)
	if err != nil {
		return nil, err
	}
	return &fileWriter{FileWriter: w, m: b.m}, nil
}

func (b *base) Stat(ctx context.Context, p string) (driver.FileInfo, error) {
	start := time.Now()
	fi, err := b.d.Stat(ctx, p)
	b.m.observe(opStat, start, err)
	return fi, err
}

func (b *base) List(ctx context.Context, p string) ([]string, error) {
	start := time.Now()
	l, err := b.d.List(ctx, p)
	b.m.observe(opList, start, err)
	return l, err
}

func (b *base) ListPage(ctx context.Context, p, after string, limit int) ([]driver.Entry, error) {
	start := time.Now()
	l, err := b.d.ListPage(ctx, p, after, limit)
	b.m.observe(opListPage, start, err)
	return l, err
}

func (b *base) Move(ctx context.Context, src, dst string) error {
	start := time.Now()
	err := b.d.Move(ctx, src, dst)
	b.m.observe(opMove, start, err)
	return err
}

func (b *base) Delete(ctx context.Context, p string) error {
	start := time.Now()
	err := b.d.Delete(ctx, p)
	b.m.observe(opDelete, start, err)
	return err
}

// writability passes driver.Writability through: an in-memory answer, not
// an operation on the store.
type writability struct{ w driver.Writability }

func (x writability) Writable() error { return x.w.Writable() }

type redirector struct {
	r driver.Redirector
	m *metrics
}

func (x redirector) RedirectURL(ctx context.Context, p string) (string, error) {
	start := time.Now()
	u, err := x.r.RedirectURL(ctx, p)
	x.m.observe(opRedirectURL, start, err)
	return u, err
}

type fileStater struct {
	f driver.FileStater
	m *metrics
}

func (x fileStater) StatFile(ctx context.Context, p string) (driver.FileInfo, error) {
	start := time.Now()
	fi, err := x.f.StatFile(ctx, p)
	x.m.observe(opStatFile, start, err)
	return fi, err
}

// fileWriter measures a FileWriter's commit, cancel and close, and counts
// its failed writes.
type fileWriter struct {
	driver.FileWriter
	m *metrics
}

func (w *fileWriter) Write(p []byte) (int, error) {
	n, err := w.FileWriter.Write(p)
	if err != nil {
		w.m.failed(opWrite, err)
	}
	return n, err
}

func (w *fileWriter) Commit(ctx context.Context) error {
	start := time.Now()
	err := w.FileWriter.Commit(ctx)
	w.m.observe(opWriteCommit, start, err)
	return err
}

func (w *fileWriter) Cancel(ctx context.Context) error {
	start := time.Now()
	err := w.FileWriter.Cancel(ctx)
	w.m.observe(opWriteCancel, start, err)
	return err
}

func (w *fileWriter) Close() error {
	start := time.Now()
	err := w.FileWriter.Close()
	w.m.observe(opWriteClose, start, err)
	return err
}
