package tokenserver

import (
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/golang-jwt/jwt/v5"

	"github.com/berth-registry/berth/auth"
)

// basicChallenge is sent with every 401 caused by missing or bad credentials.
const basicChallenge = `Basic realm="Berth token server"`

// tokenResponse is the body of a successful token request. GET answers
// carry token, access_token, expires_in, issued_at and refresh_token (the
// Docker token spec); POST answers also carry scope (its OAuth2 form).
type tokenResponse struct {
	Token        string `json:"token"`
	AccessToken  string `json:"access_token"`
	Scope        string `json:"scope,omitempty"`
	ExpiresIn    int    `json:"expires_in"`
	IssuedAt     string `json:"issued_at"`
	RefreshToken string `json:"refresh_token,omitempty"`
}

// grant is what a request asks for once its credentials are checked.
type grant struct {
	subject string // "" for anonymous clients
	service string
	scopes  []auth.Scope
	offline bool // hand out a refresh token
}

// getToken serves GET /token: service, scope (repeated and space-separated),
// account, client_id and offline_token, with optional Basic credentials.
func (s *Server) getToken(c *gin.Context) {
	q := c.Request.URL.Query()
	g, ok := s.readCommon(c, q.Get("service"), q["scope"], q.Get("client_id"), false)
	if !ok {
		return
	}
	account := q.Get("account")
	if user, password, basic := c.Request.BasicAuth(); basic {
		if !s.login(c, user, password) {
			return
		}
		if account != "" && account != user {
			fail(c, http.StatusBadRequest, "invalid_request", "account does not match the authenticated user")
			return
		}
		g.subject = user
		g.offline = q.Get("offline_token") == "true"
	} else if account != "" {
		challenge(c, "authentication required")
		return
	}
	s.respond(c, g, false)
}

// postToken serves POST /token, the OAuth2 form: grant_type password (with
// username and password) or refresh_token (with refresh_token); service and
// client_id required; access_type=offline asks for a refresh token.
func (s *Server) postToken(c *gin.Context) {
	if err := c.Request.ParseForm(); err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			fail(c, http.StatusRequestEntityTooLarge, "invalid_request", "request body too large")
			return
		}
		fail(c, http.StatusBadRequest, "invalid_request", "unreadable form")
		return
	}
	f := c.Request.PostForm
	g, ok := s.readCommon(c, f.Get("service"), f["scope"], f.Get("client_id"), true)
	if !ok {
		return
	}
	grantType := f.Get("grant_type")
	c.Set(logGrant, grantType)
	switch grantType {
	case "password":
		user := f.Get("username")
		if user == "" {
			fail(c, http.StatusBadRequest, "invalid_request", "username is required")
			return
		}
		if !s.login(c, user, f.Get("password")) {
			return
		}
		g.subject = user
	case "refresh_token":
		sub, err := s.refresh.verify(f.Get("refresh_token"), g.service, s.cfg.Users)
		if err != nil {
			c.Header("WWW-Authenticate", basicChallenge)
			fail(c, http.StatusUnauthorized, "invalid_grant", "refresh token is invalid, expired or revoked")
			return
		}
		g.subject = sub
	default:
		fail(c, http.StatusBadRequest, "unsupported_grant_type", "grant_type must be password or refresh_token")
		return
	}
	c.Set(logAccount, g.subject)
	g.offline = f.Get("access_type") == "offline"
	s.respond(c, g, true)
}

// readCommon checks the parameters both forms share.
func (s *Server) readCommon(c *gin.Context, service string, scopes []string, clientID string, needClientID bool) (grant, bool) {
	if clientID != "" {
		c.Set(logClient, clientID)
	}
	if !s.knownService(service) {
		fail(c, http.StatusBadRequest, "invalid_request", "unknown service")
		return grant{}, false
	}
	c.Set(logService, service)
	if needClientID && clientID == "" {
		fail(c, http.StatusBadRequest, "invalid_request", "client_id is required")
		return grant{}, false
	}
	parsed, err := auth.ParseScopes(scopes...)
	if err != nil {
		fail(c, http.StatusBadRequest, "invalid_scope", err.Error())
		return grant{}, false
	}
	return grant{service: service, scopes: parsed}, true
}

// login checks credentials, subject to throttling. On failure it has
// answered the request and returns false.
func (s *Server) login(c *gin.Context, user, password string) bool {
	c.Set(logAccount, user)
	ip := c.ClientIP()
	if wait := s.throttle.wait(user, ip); wait > 0 {
		c.Header("Retry-After", strconv.Itoa(int((wait+time.Second-1)/time.Second)))
		fail(c, http.StatusTooManyRequests, "too_many_requests", "too many failed logins; try again later")
		return false
	}
	if user == "" || s.cfg.Users.Authenticate(user, password) != nil {
		s.throttle.failed(user, ip)
		challenge(c, "invalid user name or password")
		return false
	}
	return true
}

func challenge(c *gin.Context, description string) {
	c.Header("WWW-Authenticate", basicChallenge)
	fail(c, http.StatusUnauthorized, "invalid_grant", description)
}

// respond signs the token for g and answers with it.
func (s *Server) respond(c *gin.Context, g grant, withScope bool) {
	now := s.cfg.Now()
	granted := s.cfg.Policy.Grant(g.subject, g.scopes)
	c.Set(logGranted, auth.FormatScopes(granted))
	token, err := s.cfg.Signer.Sign(auth.Claims{
		Issuer:    s.cfg.Issuer,
		Subject:   g.subject,
		Audience:  auth.Audience{g.service},
		ExpiresAt: jwt.NewNumericDate(now.Add(s.cfg.Expiration)),
		NotBefore: jwt.NewNumericDate(now),
		IssuedAt:  jwt.NewNumericDate(now),
		Access:    granted,
	})
	if err != nil {
		s.log.Error("signing token", "error", err)
		fail(c, http.StatusInternalServerError, "server_error", "internal error")
		return
	}
	resp := tokenResponse{
		Token:       token,
		AccessToken: token,
		ExpiresIn:   int(s.cfg.Expiration / time.Second),
		IssuedAt:    now.UTC().Format(time.RFC3339),
	}
	if withScope {
		resp.Scope = auth.FormatScopes(granted)
	}
	if g.offline && g.subject != "" {
		if resp.RefreshToken, err = s.refresh.issue(g.subject, g.service, s.cfg.Users); err != nil {
			s.log.Error("issuing refresh token", "error", err)
			fail(c, http.StatusInternalServerError, "server_error", "internal error")
			return
		}
	}
	c.Header("Cache-Control", "no-store")
	c.Header("Pragma", "no-cache")
	c.JSON(http.StatusOK, resp)
}
