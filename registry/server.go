package registry

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/berth-registry/berth/notify"
	"github.com/berth-registry/berth/proxy"
	"github.com/berth-registry/berth/storage"
)

// Authorizer decides whether a request may have the access its route needs.
// It returns the subject (user) to log, or an error wrapping ErrUnauthorized
// or ErrDenied; an error that implements HeaderSetter adds its challenge to
// the response.
type Authorizer interface {
	Authorize(r *http.Request, need []Access) (subject string, err error)
}

// Config is what New needs.
type Config struct {
	// Store holds the content. Required.
	Store *storage.Store
	// Logger receives the access log and errors. Nil discards them.
	Logger *slog.Logger
	// Authorizer checks every request. Nil lets every request through.
	Authorizer Authorizer
	// DeleteEnabled allows deleting manifests, tags and blobs; when false
	// those requests get 405 UNSUPPORTED.
	DeleteEnabled bool
	// BodyIdleTimeout is how long a request body may deliver no byte while
	// the registry waits for one; then the read fails and the request ends
	// (see idleBody), so a stalled client holds neither a connection nor an
	// upload session for longer. Zero: DefaultBodyIdleTimeout; negative:
	// no limit. Give the Store an UploadWait a little above it, so a request
	// on an upload that a stalled one holds outwaits the cut.
	BodyIdleTimeout time.Duration
	// Redirect answers blob downloads with a 307 to a URL the store gives
	// (a presigned URL of an object store), after authorization, when the
	// store's driver can give one. Off: the registry streams every blob.
	Redirect bool
	// ReadOnly refuses every write (push, delete, upload) with 405
	// UNSUPPORTED, after authorization, while pulls go on: Distribution's
	// storage.maintenance.readonly.
	ReadOnly bool
	// StorageCheck, if not nil, takes part in readiness: /readyz answers
	// 503 while it fails. Its Run is the caller's to start.
	StorageCheck *StorageCheck
	// Notify receives an event for every push, pull, mount and deletion
	// (see package notify). Nil: none are made.
	Notify notify.Sink
	// Metrics receives the HTTP metrics (berth_http_*, see metrics.go).
	// Nil: none are kept, at no cost.
	Metrics prometheus.Registerer
	// Proxy makes the repositories it mirrors pull-through caches of
	// their upstreams: manifests and blobs that are not stored are
	// fetched, and writes are refused with 405 UNSUPPORTED after
	// authorization. Its store must be Store. Nil: no repository is
	// mirrored.
	Proxy *proxy.Proxy
	// UI serves the web pages (package ui) under /ui/, and / redirects
	// there; it runs behind the access log, the metrics and the panic
	// recovery like every request. Nil: /ui/ answers 404 like any path
	// outside the API.
	UI http.Handler
}

// Handler serves the distribution API. Create it with New.
type Handler struct {
	engine   *gin.Engine
	store    *storage.Store
	log      *slog.Logger
	authz    Authorizer
	delete   bool
	redirect bool
	readOnly bool
	check    *StorageCheck
	memory   *memoryReleaser
	// bodyIdle is Config.BodyIdleTimeout resolved: 0 means no limit.
	bodyIdle time.Duration
	sink     notify.Sink
	// pulls: the sink takes pull events, so GETs make them.
	pulls   bool
	metrics *httpMetrics // nil: off
	proxy   *proxy.Proxy // nil: none
}

// apiRoute is the one route of the API (see ParseRoute).
const apiRoute = "/v2/*path"

// uiRoute is where Config.UI is mounted.
const uiRoute = "/ui/*path"

// New returns the API handler.
func New(cfg Config) *Handler {
	gin.SetMode(gin.ReleaseMode)
	h := &Handler{store: cfg.Store, log: cfg.Logger, authz: cfg.Authorizer, delete: cfg.DeleteEnabled, redirect: cfg.Redirect,
		readOnly: cfg.ReadOnly, check: cfg.StorageCheck, memory: newMemoryReleaser(), sink: cfg.Notify,
		pulls: sinkWants(cfg.Notify, notify.ActionPull), proxy: cfg.Proxy}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	switch {
	case cfg.BodyIdleTimeout == 0:
		h.bodyIdle = DefaultBodyIdleTimeout
	case cfg.BodyIdleTimeout > 0:
		h.bodyIdle = cfg.BodyIdleTimeout
	}
	e := gin.New()
	_ = e.SetTrustedProxies(nil)
	e.HandleMethodNotAllowed = false
	if cfg.Metrics != nil {
		h.metrics = newHTTPMetrics(cfg.Metrics)
		e.Use(h.metered)
	}
	e.Use(h.accessLog, h.recover)
	for _, m := range []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete} {
		e.Handle(m, apiRoute, h.serve)
	}
	// Liveness for container health checks and load balancers: no
	// authentication, no storage access.
	e.GET("/healthz", func(c *gin.Context) { c.String(http.StatusOK, "ok") })
	// Readiness: 503 while storage writes fail or the storage check fails
	// (pulls may still work, so liveness stays 200), for load balancers to
	// send requests elsewhere.
	e.GET("/readyz", h.ready)
	if cfg.UI != nil {
		ui := gin.WrapH(cfg.UI)
		for _, m := range []string{http.MethodGet, http.MethodHead, http.MethodPost} {
			e.Handle(m, uiRoute, ui)
		}
		e.GET("/", func(c *gin.Context) { c.Redirect(http.StatusFound, "/ui/") })
	}
	e.NoRoute(func(c *gin.Context) { h.fail(c, errRouteUnknown) })
	h.engine = e
	return h
}

// ready answers 200 while the store is writable and the storage check
// passes, else 503 with a short reason; the cause goes to the log, not to
// the (unauthenticated) client.
func (h *Handler) ready(c *gin.Context) {
	reason := ""
	err := h.store.Writable()
	switch {
	case errors.Is(err, storage.ErrStorageFull):
		reason = "storage is full"
	case err != nil:
		reason = "storage writes are failing"
	case h.check != nil:
		if err = h.check.Err(); err != nil {
			reason = "storage is failing"
		}
	}
	if err == nil {
		c.String(http.StatusOK, "ok")
		return
	}
	h.log.Warn("not ready", "reason", reason, "err", err)
	c.Header("Retry-After", strconv.Itoa(retryAfterStorage))
	c.String(http.StatusServiceUnavailable, "not ready: "+reason)
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h.bodyIdle > 0 && r.Body != nil && r.Body != http.NoBody {
		body := h.watchBody(w, r)
		defer body.finish()
		r2 := *r
		r2.Body = body
		r = &r2
	} else if h.metrics != nil && r.Body != nil && r.Body != http.NoBody {
		r2 := *r
		r2.Body = &countingBody{ReadCloser: r.Body} // idleBody counts too
		r = &r2
	}
	h.engine.ServeHTTP(w, r)
}

// Keys under which a request's route and subject reach the access log.
const (
	ctxRoute   = "berth.route"
	ctxSubject = "berth.subject"
)

func (h *Handler) serve(c *gin.Context) {
	c.Header("Docker-Distribution-API-Version", "registry/2.0")
	route, err := ParseRoute(c.Param("path"))
	if err != nil {
		h.fail(c, err)
		return
	}
	c.Set(ctxRoute, route)
	if h.authz != nil {
		subject, err := h.authz.Authorize(c.Request, route.Access(c.Request.Method, c.Request.URL.Query()))
		if subject != "" {
			c.Set(ctxSubject, subject)
		}
		if err != nil {
			h.fail(c, err)
			return
		}
	}
	if h.readOnly && writes(c.Request.Method) {
		h.fail(c, errReadOnly)
		return
	}
	if writes(c.Request.Method) && h.proxy.Mirrors(route.Name) {
		h.fail(c, errMirrored)
		return
	}
	if h.metrics != nil && (route.Kind == KindUpload || route.Kind == KindUploadStart) {
		switch c.Request.Method {
		case http.MethodPost, http.MethodPatch, http.MethodPut:
			h.metrics.uploads.Inc()
			defer h.metrics.uploads.Dec()
		}
	}
	if route.Kind == KindBlob || route.Kind == KindUpload || route.Kind == KindUploadStart {
		h.memory.begin()
		defer func() {
			moved := c.Request.ContentLength // -1: a streamed body, of unknown length
			if moved >= 0 {
				moved = max(moved, int64(c.Writer.Size()))
			}
			h.memory.end(moved)
		}()
	}
	if err := h.dispatch(c, route); err != nil {
		h.fail(c, err)
	}
}

// dispatch picks the handler for a route and method.
func (h *Handler) dispatch(c *gin.Context, r Route) error {
	m := c.Request.Method
	switch r.Kind {
	case KindBase:
		if m == http.MethodGet || m == http.MethodHead {
			c.Header("Content-Type", "application/json")
			c.Header("Content-Length", "2")
			c.Status(http.StatusOK)
			if m == http.MethodGet {
				_, _ = c.Writer.WriteString("{}")
			}
			return nil
		}
	case KindCatalog:
		if m == http.MethodGet {
			return h.getCatalog(c)
		}
	case KindTags:
		if m == http.MethodGet {
			return h.getTags(c, r)
		}
	case KindReferrers:
		if m == http.MethodGet {
			return h.getReferrers(c, r)
		}
	case KindRepository:
		if m == http.MethodDelete {
			return h.deleteRepository(c, r)
		}
	case KindManifest:
		switch m {
		case http.MethodGet, http.MethodHead:
			return h.getManifest(c, r)
		case http.MethodPut:
			return h.putManifest(c, r)
		case http.MethodDelete:
			return h.deleteManifest(c, r)
		}
	case KindBlob:
		switch m {
		case http.MethodGet, http.MethodHead:
			return h.getBlob(c, r)
		case http.MethodDelete:
			return h.deleteBlob(c, r)
		}
	case KindUploadStart:
		if m == http.MethodPost {
			return h.startUpload(c, r)
		}
	case KindUpload:
		switch m {
		case http.MethodGet:
			return h.uploadStatus(c, r)
		case http.MethodPatch:
			return h.patchUpload(c, r)
		case http.MethodPut:
			return h.putUpload(c, r)
		case http.MethodDelete:
			return h.cancelUpload(c, r)
		}
	}
	return errUnsupported
}

// fail answers with err, logging it when it is an internal error.
func (h *Handler) fail(c *gin.Context, err error) {
	if c.Writer.Written() {
		h.log.Error("error after the response started", "err", err)
		return
	}
	c.Header("Docker-Distribution-API-Version", "registry/2.0")
	drainBody(c)
	if status := writeError(c.Writer, err); status >= 500 {
		h.log.Error("request failed", "method", c.Request.Method, "path", c.Request.URL.Path, "err", err)
	}
	c.Abort()
}

// Bounds on what an error answer reads of a request body it has no use for.
const (
	maxDrain  = 4 << 20
	drainTime = 2 * time.Second
)

// drainBody reads what is left of an HTTP/2 request body, up to maxDrain
// bytes and for drainTime at most, before an error answer (a 416 to a
// chunk out of order, a 401 to a push). Answered with its body unread, a
// stream is ended by the server with RST_STREAM(NO_ERROR) after the
// response; the protocol says clients must keep that response, but some
// drop it (curl 7.88 lost the 416's body in 3 of 30 tries: "transfer
// closed with 104 bytes remaining"). A body read to its end needs no
// reset. HTTP/1.1 needs nothing: net/http drains or closes the connection
// gracefully itself.
func drainBody(c *gin.Context) {
	r := c.Request
	if r.ProtoMajor != 2 || r.Body == nil || r.Body == http.NoBody || r.ContentLength > maxDrain {
		return
	}
	_ = http.NewResponseController(c.Writer).SetReadDeadline(time.Now().Add(drainTime))
	_, _ = io.CopyN(io.Discard, r.Body, maxDrain)
}

// recover turns a panic into a 500 in the OCI error format.
func (h *Handler) recover(c *gin.Context) {
	defer func() {
		if v := recover(); v != nil {
			if v == http.ErrAbortHandler {
				panic(v)
			}
			h.fail(c, fmt.Errorf("panic: %v", v))
		}
	}()
	c.Next()
}

// accessLog writes one line per request.
func (h *Handler) accessLog(c *gin.Context) {
	start := time.Now()
	c.Next()
	attrs := []slog.Attr{
		slog.String("method", c.Request.Method),
		slog.Int("status", c.Writer.Status()),
		slog.Int("bytes", max(c.Writer.Size(), 0)),
		slog.Duration("duration", time.Since(start)),
		slog.String("remote", c.ClientIP()),
	}
	if v, ok := c.Get(ctxRoute); ok {
		r := v.(Route)
		attrs = append(attrs, slog.String("route", r.Kind.String()))
		if r.Name != "" {
			attrs = append(attrs, slog.String("repository", r.Name))
		}
	} else {
		attrs = append(attrs, slog.String("path", c.Request.URL.Path))
	}
	if v, ok := c.Get(ctxSubject); ok {
		attrs = append(attrs, slog.String("user", v.(string)))
	}
	h.log.LogAttrs(c.Request.Context(), slog.LevelInfo, "request", attrs...)
}

// writes reports whether an API request of this method changes the
// registry.
func writes(method string) bool {
	switch method {
	case http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete:
		return true
	}
	return false
}
