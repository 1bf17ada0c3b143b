package ui

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/berth-registry/berth/auth"
)

// rights are what a visitor may do with one repository.
type rights struct {
	pull, delete bool
}

// access decides what a visitor may do, with the registry's own
// authorization.
type access interface {
	// rights returns what session s (nil: anonymous) may do with each of
	// names. A name it leaves out may not be pulled.
	rights(ctx context.Context, r *http.Request, s *session, names []string) (map[string]rights, error)
	// signIn checks a user's password and returns the session to keep.
	signIn(ctx context.Context, r *http.Request, user, password string) (*session, error)
	// needsUser reports whether anonymous visitors see nothing (they are
	// sent to the sign-in page).
	needsUser() bool
}

// Sign-in failures, shown on the sign-in page.
var (
	errBadLogin  = errors.New("ui: wrong user name or password")
	errThrottled = errors.New("ui: too many failed sign-ins")
	errNoLogin   = errors.New("ui: this registry has no users")
	// errSessionGone: the token server refused the session's refresh
	// token (password changed, user removed, expired).
	errSessionGone = errors.New("ui: session no longer valid")
)

// openAccess: no auth; everyone may do everything.
type openAccess struct{}

func (openAccess) rights(_ context.Context, _ *http.Request, _ *session, names []string) (map[string]rights, error) {
	m := make(map[string]rights, len(names))
	for _, n := range names {
		m[n] = rights{pull: true, delete: true}
	}
	return m, nil
}

func (openAccess) signIn(context.Context, *http.Request, string, string) (*session, error) {
	return nil, errNoLogin
}

func (openAccess) needsUser() bool { return false }

// userAccess: htpasswd auth, where every user may do everything (as the
// API's BasicAuthorizer allows) and anonymous visitors nothing.
type userAccess struct{ users *auth.UserStore }

func (userAccess) rights(_ context.Context, _ *http.Request, s *session, names []string) (map[string]rights, error) {
	m := make(map[string]rights, len(names))
	if s == nil || s.User == "" {
		return m, nil
	}
	for _, n := range names {
		m[n] = rights{pull: true, delete: true}
	}
	return m, nil
}

func (a userAccess) signIn(_ context.Context, _ *http.Request, user, password string) (*session, error) {
	if user == "" || a.users.Authenticate(user, password) != nil {
		return nil, errBadLogin
	}
	return newSession(user, ""), nil
}

func (userAccess) needsUser() bool { return true }

// tokenAccess asks the token server, as every client does: a session
// trades its refresh token (anonymous visitors: nothing) for an access
// token naming the repositories a page shows, and the page shows what the
// token, checked with the registry's verifier, grants.
//
// Many scopes go in one request (up to maxScopes, within the token
// server's body and header limits), and the answers are kept per session
// for rightsTTL, so a listing that filters 10,000 repositories costs about
// 50 token requests once, not 10,000.
type tokenAccess struct {
	cfg    TokenAuth
	client *http.Client

	mu    sync.Mutex
	cache map[string]*grantCache // by session key (see sessionKey)
	size  int                    // entries over all sessions
}

type grantCache struct {
	m map[string]cachedRights
}

type cachedRights struct {
	rights
	until time.Time
}

const (
	// rightsTTL is how long a session's answer for a repository is kept:
	// a grant taken away shows within that time.
	rightsTTL = 30 * time.Second
	// maxScopes is how many repositories one token request names.
	maxScopes = 200
	// maxPostBytes and maxQueryBytes keep a request well below the token
	// server's limits (64 KiB of body, 64 KiB of headers) and those of
	// proxies in front of it.
	maxPostBytes  = 32 << 10
	maxQueryBytes = 6 << 10
	// maxCachedRights bounds the cache over all sessions.
	maxCachedRights = 200000
	// clientID names the pages at the token server (in its log).
	clientID = "berth-ui"
)

func newTokenAccess(cfg TokenAuth) *tokenAccess {
	c := cfg.Client
	if c == nil {
		c = &http.Client{Timeout: 10 * time.Second}
	}
	return &tokenAccess{cfg: cfg, client: c, cache: make(map[string]*grantCache)}
}

func (a *tokenAccess) needsUser() bool { return false }

// sessionKey identifies whose rights a cache entry holds: the refresh
// token's hash (it names one user), or "" for anonymous visitors.
func sessionKey(s *session) string {
	if s == nil || s.Refresh == "" {
		return ""
	}
	sum := sha256.Sum256([]byte(s.Refresh))
	return string(sum[:])
}

func (a *tokenAccess) rights(ctx context.Context, r *http.Request, s *session, names []string) (map[string]rights, error) {
	key := sessionKey(s)
	now := time.Now()
	out := make(map[string]rights, len(names))
	var ask []string
	a.mu.Lock()
	gc := a.cache[key]
	for _, n := range names {
		if gc != nil {
			if c, ok := gc.m[n]; ok && now.Before(c.until) {
				out[n] = c.rights
				continue
			}
		}
		ask = append(ask, n)
	}
	a.mu.Unlock()
	for len(ask) > 0 {
		batch := a.batch(ask, s)
		ask = ask[len(batch):]
		claims, err := a.token(ctx, r, s, batch)
		if err != nil {
			return nil, err
		}
		until := now.Add(rightsTTL)
		if claims.ExpiresAt != nil && claims.ExpiresAt.Time.Before(until) {
			until = claims.ExpiresAt.Time
		}
		got := make(map[string]rights, len(batch))
		for _, n := range batch {
			got[n] = rights{
				pull:   claims.Allows(auth.TypeRepository, n, auth.ActionPull),
				delete: claims.Allows(auth.TypeRepository, n, auth.ActionDelete),
			}
			out[n] = got[n]
		}
		a.remember(key, got, until)
	}
	for n, r := range out {
		if !r.pull {
			delete(out, n)
		}
	}
	return out, nil
}

// batch is how many of names, from the first, one request can carry.
func (a *tokenAccess) batch(names []string, s *session) []string {
	limit := maxQueryBytes
	if s != nil && s.Refresh != "" {
		limit = maxPostBytes
	}
	size := 0
	for i, n := range names {
		// scope=repository%3A<name>%3Apull%2Cdelete&
		size += len(n) + 40
		if i == maxScopes || (i > 0 && size > limit) {
			return names[:i]
		}
	}
	return names
}

func (a *tokenAccess) remember(key string, got map[string]rights, until time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.size+len(got) > maxCachedRights {
		clear(a.cache)
		a.size = 0
	}
	gc := a.cache[key]
	if gc == nil {
		gc = &grantCache{m: make(map[string]cachedRights)}
		a.cache[key] = gc
	}
	for n, r := range got {
		if _, ok := gc.m[n]; !ok {
			a.size++
		}
		gc.m[n] = cachedRights{rights: r, until: until}
	}
}

// token gets and verifies an access token for pull and delete on names:
// with the session's refresh token (POST, the OAuth2 form), or anonymously
// (GET, the Docker token form).
func (a *tokenAccess) token(ctx context.Context, r *http.Request, s *session, names []string) (*auth.Claims, error) {
	scopes := make([]string, len(names))
	for i, n := range names {
		scopes[i] = auth.Scope{Type: auth.TypeRepository, Name: n, Actions: []string{auth.ActionPull, auth.ActionDelete}}.String()
	}
	form := url.Values{"service": {a.cfg.Service}, "client_id": {clientID}, "scope": scopes}
	var req *http.Request
	var err error
	if s != nil && s.Refresh != "" {
		form.Set("grant_type", "refresh_token")
		form.Set("refresh_token", s.Refresh)
		req, err = http.NewRequestWithContext(ctx, http.MethodPost, a.cfg.Realm, strings.NewReader(form.Encode()))
		if err == nil {
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		}
	} else {
		req, err = http.NewRequestWithContext(ctx, http.MethodGet, a.cfg.Realm, nil)
		if err == nil {
			q := req.URL.Query()
			for k, v := range form {
				q[k] = v
			}
			req.URL.RawQuery = q.Encode()
		}
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errTokenServer, err)
	}
	claims, status, err := a.do(req, r)
	if status == http.StatusUnauthorized && s != nil && s.Refresh != "" {
		return nil, errSessionGone
	}
	return claims, err
}

// signIn trades the user's password for a refresh token (access_type
// offline), which the session keeps; the password is not kept.
func (a *tokenAccess) signIn(ctx context.Context, r *http.Request, user, password string) (*session, error) {
	form := url.Values{
		"grant_type": {"password"}, "username": {user}, "password": {password},
		"service": {a.cfg.Service}, "client_id": {clientID}, "access_type": {"offline"},
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, a.cfg.Realm, strings.NewReader(form.Encode()))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errTokenServer, err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	claims, status, err := a.doRefresh(req, r)
	switch {
	case status == http.StatusUnauthorized || status == http.StatusBadRequest:
		return nil, errBadLogin
	case status == http.StatusTooManyRequests:
		return nil, errThrottled
	case err != nil:
		return nil, err
	}
	return claims, nil
}

// tokenResponse is the token server's answer.
type tokenResponse struct {
	Token        string `json:"token"`
	AccessToken  string `json:"access_token"`
	RefreshToken string `json:"refresh_token"`
}

// send makes a token request on behalf of the browser's request r and
// decodes the answer; the status is returned with any error.
func (a *tokenAccess) send(req *http.Request, r *http.Request) (tokenResponse, int, error) {
	var tr tokenResponse
	if ip, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		// For the token server's throttling, if it trusts this registry
		// as a proxy; ignored otherwise.
		req.Header.Set("X-Forwarded-For", ip)
	}
	resp, err := a.client.Do(req)
	if err != nil {
		// The URL carries no secret (scopes only); the error may name it.
		return tr, 0, fmt.Errorf("%w: %w", errTokenServer, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return tr, resp.StatusCode, fmt.Errorf("%w: %w", errTokenServer, err)
	}
	if resp.StatusCode != http.StatusOK {
		return tr, resp.StatusCode, fmt.Errorf("%w: %s", errTokenServer, resp.Status)
	}
	if err := json.Unmarshal(body, &tr); err != nil {
		return tr, resp.StatusCode, fmt.Errorf("%w: answer: %w", errTokenServer, err)
	}
	if tr.Token == "" {
		tr.Token = tr.AccessToken
	}
	return tr, resp.StatusCode, nil
}

func (a *tokenAccess) do(req *http.Request, r *http.Request) (*auth.Claims, int, error) {
	tr, status, err := a.send(req, r)
	if err != nil {
		return nil, status, err
	}
	claims, err := a.cfg.Verifier.Verify(tr.Token)
	if err != nil {
		return nil, status, fmt.Errorf("%w: its token does not verify: %w", errTokenServer, err)
	}
	return claims, status, nil
}

// doRefresh is do for a sign-in: it returns the new session.
func (a *tokenAccess) doRefresh(req *http.Request, r *http.Request) (*session, int, error) {
	tr, status, err := a.send(req, r)
	if err != nil {
		return nil, status, err
	}
	claims, err := a.cfg.Verifier.Verify(tr.Token)
	if err != nil {
		return nil, status, fmt.Errorf("%w: its token does not verify: %w", errTokenServer, err)
	}
	if tr.RefreshToken == "" || claims.Subject == "" {
		return nil, status, fmt.Errorf("%w: no refresh token for the sign-in", errTokenServer)
	}
	return newSession(claims.Subject, tr.RefreshToken), status, nil
}
