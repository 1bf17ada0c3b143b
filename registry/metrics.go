package registry

import (
	"io"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"
)

// The HTTP metrics: requests by route kind, method and status code, their
// latency by kind and method, bytes received and sent by kind, and blob
// upload requests in flight. Label values come from small fixed sets (the
// route kinds, six methods, status codes), never from the request's path:
// repository names would make a series per repository.
//
// Every series a request touches is looked up once and cached in arrays
// indexed by kind, method and status, so a request costs a few atomic
// operations and allocates nothing.

// Route kinds beyond Kind's: a /v2/ path that does not parse, and any
// other path (health, readiness, unknown).
const (
	kindInvalid = Kind(len(kindNames)) + iota
	kindOther
	numKinds
)

func kindLabel(k Kind) string {
	switch k {
	case kindInvalid:
		return "invalid"
	case kindOther:
		return "other"
	}
	return k.String()
}

// methods are the methods the API routes; others are labelled "other".
var methods = [...]string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete, "other"}

const numMethods = len(methods)

func methodIndex(m string) int {
	for i, name := range methods[:numMethods-1] {
		if m == name {
			return i
		}
	}
	return numMethods - 1
}

// commonStatuses get a cache slot each; a request with another status
// takes client_golang's lookup (a lock and the label's allocation).
var commonStatuses = [...]int{200, 201, 202, 204, 206, 301, 302, 304, 307, 308,
	400, 401, 403, 404, 405, 406, 409, 411, 412, 413, 415, 416, 429, 500, 502, 503, 504}

const numStatuses = len(commonStatuses) + 1 // slot 0: not cached

var statusSlot = func() (t [600]uint8) {
	for i, s := range commonStatuses {
		t[s] = uint8(i + 1)
	}
	return t
}()

// durationBuckets span a manifest HEAD (a millisecond) to a large layer's
// upload or download (minutes).
var durationBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300}

type counterRef struct{ c prometheus.Counter }
type observerRef struct{ o prometheus.Observer }

type httpMetrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	received [numKinds]prometheus.Counter
	sent     [numKinds]prometheus.Counter
	uploads  prometheus.Gauge

	// Series created on first use; a race creates the same one twice,
	// which client_golang allows (it returns the existing series).
	counts [numKinds][numMethods][numStatuses]atomic.Pointer[counterRef]
	durs   [numKinds][numMethods]atomic.Pointer[observerRef]
}

func newHTTPMetrics(reg prometheus.Registerer) *httpMetrics {
	m := &httpMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "berth_http_requests_total",
			Help: "HTTP requests answered, by route kind, method and status code.",
		}, []string{"kind", "method", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "berth_http_request_duration_seconds",
			Help:    "Time from a request's arrival to its last byte written, by route kind and method.",
			Buckets: durationBuckets,
		}, []string{"kind", "method"}),
		uploads: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "berth_http_uploads_in_flight",
			Help: "Blob upload requests (POST, PATCH, PUT on an upload) being served.",
		}),
	}
	received := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "berth_http_received_bytes_total",
		Help: "Request body bytes read, by route kind.",
	}, []string{"kind"})
	sent := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "berth_http_sent_bytes_total",
		Help: "Response body bytes written, by route kind.",
	}, []string{"kind"})
	for k := range numKinds {
		m.received[k] = received.WithLabelValues(kindLabel(k))
		m.sent[k] = sent.WithLabelValues(kindLabel(k))
	}
	reg.MustRegister(m.requests, m.duration, received, sent, m.uploads)
	return m
}

// observe records one answered request.
func (m *httpMetrics) observe(k Kind, method string, status int, d time.Duration, received, sent int64) {
	mi := methodIndex(method)
	m.counter(k, mi, status).Inc()
	m.observer(k, mi).Observe(d.Seconds())
	if received > 0 {
		m.received[k].Add(float64(received))
	}
	if sent > 0 {
		m.sent[k].Add(float64(sent))
	}
}

func (m *httpMetrics) counter(k Kind, mi, status int) prometheus.Counter {
	slot := 0
	if status >= 0 && status < len(statusSlot) {
		slot = int(statusSlot[status])
	}
	if slot != 0 {
		if ref := m.counts[k][mi][slot].Load(); ref != nil {
			return ref.c
		}
	}
	c := m.requests.WithLabelValues(kindLabel(k), methods[mi], strconv.Itoa(status))
	if slot != 0 {
		m.counts[k][mi][slot].Store(&counterRef{c})
	}
	return c
}

func (m *httpMetrics) observer(k Kind, mi int) prometheus.Observer {
	if ref := m.durs[k][mi].Load(); ref != nil {
		return ref.o
	}
	o := m.duration.WithLabelValues(kindLabel(k), methods[mi])
	m.durs[k][mi].Store(&observerRef{o})
	return o
}

// metered is the first middleware when metrics are on: it times the
// request and records it once the inner middlewares (access log,
// recovery) are done, so a panic is counted as the 500 it became.
func (h *Handler) metered(c *gin.Context) {
	start := time.Now()
	body := c.Request.Body // a handler may replace it; the count is in this one
	c.Next()
	kind := kindOther
	if v, ok := c.Get(ctxRoute); ok {
		kind = v.(Route).Kind
	} else if c.FullPath() == apiRoute {
		kind = kindInvalid
	}
	var received int64
	switch b := body.(type) {
	case *idleBody:
		received = b.received()
	case *countingBody:
		received = b.n.Load()
	}
	h.metrics.observe(kind, c.Request.Method, c.Writer.Status(), time.Since(start), received, int64(c.Writer.Size()))
}

// countingBody counts what is read of a request body, when no idleBody
// does (Config.BodyIdleTimeout negative).
type countingBody struct {
	io.ReadCloser
	n atomic.Int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n.Add(int64(n))
	return n, err
}
