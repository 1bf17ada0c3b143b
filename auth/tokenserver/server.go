// Package tokenserver serves the token endpoints of the Docker registry token
// protocol over gin: GET /token (the Docker token spec), POST /token (its
// OAuth2 form), GET /.well-known/jwks.json and GET /healthz. It checks users
// with an auth.UserStore, decides grants with an auth.Policy and signs tokens
// with an auth.Signer.
package tokenserver

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"runtime/debug"
	"slices"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/berth-registry/berth/auth"
)

// Defaults of Config.
const (
	// DefaultExpiration is the access-token lifetime.
	DefaultExpiration = 5 * time.Minute
	// MinExpiration is the shortest access-token lifetime: Docker treats
	// anything shorter as 60 s anyway.
	MinExpiration = 60 * time.Second
	// DefaultRefreshExpiration is the refresh-token lifetime.
	DefaultRefreshExpiration = 30 * 24 * time.Hour
	// DefaultMaxBodyBytes bounds request bodies.
	DefaultMaxBodyBytes = 64 << 10
)

// Config configures a Server. Issuer, Services, Signer, Users and Policy are
// required.
type Config struct {
	// Issuer is the "iss" of every token.
	Issuer string
	// Services are the accepted "service" values; a token's "aud" is the
	// service it was asked for. Other values get 400.
	Services []string
	// Expiration is the lifetime of access tokens. Zero means
	// DefaultExpiration; less than MinExpiration is raised to it.
	Expiration time.Duration
	// RefreshExpiration is the lifetime of refresh tokens. Zero means
	// DefaultRefreshExpiration.
	RefreshExpiration time.Duration
	// Signer signs the access tokens; its keys also key the refresh
	// tokens.
	Signer *auth.Signer
	// Users checks user names and passwords.
	Users *auth.UserStore
	// Policy decides what a user is granted.
	Policy *auth.Policy
	// Logger receives the access log (one line per request) and errors.
	// Nil discards them.
	Logger *slog.Logger
	// TrustedProxies are the addresses or CIDRs whose X-Forwarded-For and
	// X-Real-IP headers name the client. Nil or empty: none; the peer
	// address is the client address.
	TrustedProxies []string
	// Throttle limits password guessing; its zero value is the
	// defaults ThrottleConfig documents.
	Throttle ThrottleConfig
	// MaxBodyBytes limits request bodies; larger ones get 413. Zero means
	// DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// Now returns the current time. Nil means time.Now.
	Now func() time.Time
	// Metrics receives the server's metrics (berth_auth_*: tokens
	// issued, logins by outcome, throttled logins; see metrics.go). Nil:
	// none are registered.
	Metrics prometheus.Registerer
}

// Server holds the token endpoints. Create it with New.
type Server struct {
	cfg      Config
	log      *slog.Logger
	refresh  *refresher
	throttle *throttle
	tokens   *tokenCache
	metrics  *metrics
	jwks     []byte
	engine   *gin.Engine
}

// New checks cfg and builds the server and its gin engine.
func New(cfg Config) (*Server, error) {
	switch {
	case cfg.Issuer == "":
		return nil, errors.New("tokenserver: issuer is required")
	case len(cfg.Services) == 0:
		return nil, errors.New("tokenserver: at least one service is required")
	case cfg.Signer == nil || cfg.Users == nil || cfg.Policy == nil:
		return nil, errors.New("tokenserver: signer, users and policy are required")
	}
	if cfg.Expiration == 0 {
		cfg.Expiration = DefaultExpiration
	}
	cfg.Expiration = max(cfg.Expiration, MinExpiration)
	if cfg.RefreshExpiration == 0 {
		cfg.RefreshExpiration = DefaultRefreshExpiration
	}
	if cfg.MaxBodyBytes == 0 {
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Server{cfg: cfg, log: cfg.Logger}
	if s.log == nil {
		s.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	s.refresh = &refresher{secrets: cfg.Signer.DeriveSecrets("refresh-token"), ttl: cfg.RefreshExpiration, now: cfg.Now}
	s.throttle = newThrottle(cfg.Throttle, cfg.Now)
	s.tokens = newTokenCache(cfg.Expiration)
	var err error
	if s.metrics, err = newMetrics(cfg.Metrics); err != nil {
		return nil, fmt.Errorf("tokenserver: metrics: %w", err)
	}
	if s.jwks, err = json.Marshal(cfg.Signer.JWKS()); err != nil {
		return nil, err
	}

	gin.SetMode(gin.ReleaseMode)
	e := gin.New()
	if err := e.SetTrustedProxies(cfg.TrustedProxies); err != nil {
		return nil, fmt.Errorf("tokenserver: trusted proxies: %w", err)
	}
	e.Use(s.accessLog, s.recover, s.limitBody)
	e.GET("/token", s.getToken)
	e.POST("/token", s.postToken)
	e.GET("/.well-known/jwks.json", s.serveJWKS)
	e.GET("/healthz", func(c *gin.Context) { c.JSON(http.StatusOK, gin.H{"status": "ok"}) })
	e.NoRoute(func(c *gin.Context) { fail(c, http.StatusNotFound, "not_found", "no such endpoint") })
	s.engine = e
	return s, nil
}

// Handler returns the HTTP handler of the endpoints.
func (s *Server) Handler() http.Handler { return s.engine }

func (s *Server) knownService(service string) bool {
	return service != "" && slices.Contains(s.cfg.Services, service)
}

func (s *Server) serveJWKS(c *gin.Context) {
	c.Header("Cache-Control", "public, max-age=300")
	c.Data(http.StatusOK, "application/json", s.jwks)
}

// Keys under which handlers leave facts for the access log.
const (
	logAccount = "berth.account"
	logService = "berth.service"
	logGranted = "berth.granted"
	logGrant   = "berth.grant"
	logClient  = "berth.client"
	// logThrottled names the count that held a login back.
	logThrottled = "berth.throttled"
)

// accessLog writes one line per request. It never logs query strings, forms
// or headers: they may hold passwords and tokens.
func (s *Server) accessLog(c *gin.Context) {
	start := time.Now()
	c.Next()
	attrs := []slog.Attr{
		slog.String("method", c.Request.Method),
		slog.String("path", c.Request.URL.Path),
		slog.Int("status", c.Writer.Status()),
		slog.Int("bytes", max(c.Writer.Size(), 0)),
		slog.Duration("duration", time.Since(start)),
		slog.String("client_ip", c.ClientIP()),
	}
	for _, k := range []string{logAccount, logService, logGrant, logClient, logGranted, logThrottled} {
		if v, ok := c.Get(k); ok {
			attrs = append(attrs, slog.Any(k[len("berth."):], v))
		}
	}
	s.log.LogAttrs(c.Request.Context(), slog.LevelInfo, "request", attrs...)
}

func (s *Server) recover(c *gin.Context) {
	defer func() {
		if v := recover(); v != nil {
			if err, ok := v.(error); ok && errors.Is(err, http.ErrAbortHandler) {
				panic(v)
			}
			s.log.Error("panic serving request", "path", c.Request.URL.Path, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
			if !c.Writer.Written() {
				fail(c, http.StatusInternalServerError, "server_error", "internal error")
			}
			c.Abort()
		}
	}()
	c.Next()
}

func (s *Server) limitBody(c *gin.Context) {
	if c.Request.Body != nil {
		c.Request.Body = http.MaxBytesReader(c.Writer, c.Request.Body, s.cfg.MaxBodyBytes)
	}
	c.Next()
}

// fail answers with an OAuth2 error body ({"error", "error_description"}),
// which Docker's client reads for every status.
func fail(c *gin.Context, status int, code, description string) {
	c.Header("Cache-Control", "no-store")
	c.AbortWithStatusJSON(status, gin.H{"error": code, "error_description": description})
}
