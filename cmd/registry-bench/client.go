package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Client talks to one registry (or auth server) over TLS. It answers a 401
// by itself: Basic credentials for a Basic challenge, or a Bearer token
// fetched from the challenge's realm, cached per scope until it expires.
type Client struct {
	base     *url.URL
	hc       *http.Client
	user     string
	password string
	// proto is "HTTP/1.1" or "HTTP/2.0": what the transport is limited to.
	proto string
	// basic is set once the registry has asked for Basic credentials.
	basic  atomic.Bool
	tokens tokenCache
}

// newClient returns a client for base. caFile (PEM) is added to the
// system roots; with http2 the client speaks only HTTP/2, without it only
// HTTP/1.1.
func newClient(base, caFile string, http2 bool, user, password string) (*Client, error) {
	u, err := url.Parse(strings.TrimRight(base, "/"))
	if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		return nil, fmt.Errorf("url %q: want https://host:port", base)
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, err
		}
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s: no PEM certificate", caFile)
		}
		tc.RootCAs = pool
	}
	return newClientTLS(u, tc, http2, user, password), nil
}

func newClientTLS(u *url.URL, tc *tls.Config, http2 bool, user, password string) *Client {
	var p http.Protocols
	proto := "HTTP/1.1"
	if http2 && u.Scheme == "https" {
		p.SetHTTP2(true)
		proto = "HTTP/2.0"
	} else {
		p.SetHTTP1(true)
	}
	tr := &http.Transport{
		Proxy:               nil, // loopback benchmarks: never through a proxy
		TLSClientConfig:     tc,
		Protocols:           &p,
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     90 * time.Second,
		WriteBufferSize:     64 << 10,
		ReadBufferSize:      64 << 10,
		DisableCompression:  true,
	}
	return &Client{
		base:     u,
		hc:       &http.Client{Transport: tr},
		user:     user,
		password: password,
		proto:    proto,
		tokens:   tokenCache{now: time.Now},
	}
}

// close drops idle connections.
func (c *Client) close() { c.hc.CloseIdleConnections() }

// resolve turns a path or a Location header into an absolute URL.
func (c *Client) resolve(ref string) (*url.URL, error) {
	r, err := url.Parse(ref)
	if err != nil {
		return nil, err
	}
	return c.base.ResolveReference(r), nil
}

// Do sends req with the credentials scope needs, and on a 401 fetches them
// and retries once. A request with a body is retried only when GetBody is
// set. The caller closes the response body.
func (c *Client) Do(req *http.Request, scope string) (*http.Response, error) {
	c.authorize(req, scope)
	resp, err := c.hc.Do(req)
	if err != nil || resp.StatusCode != http.StatusUnauthorized {
		return resp, err
	}
	if req.Body != nil && req.GetBody == nil {
		return resp, nil
	}
	ch, ok := pickChallenge(resp.Header.Values("WWW-Authenticate"))
	drain(resp)
	if !ok {
		return nil, fmt.Errorf("%s %s: 401 without a usable WWW-Authenticate challenge", req.Method, req.URL.Path)
	}
	switch ch.Scheme {
	case "basic":
		if c.user == "" {
			return nil, fmt.Errorf("%s %s: registry wants Basic credentials: set --user/--password", req.Method, req.URL.Path)
		}
		c.basic.Store(true)
	case "bearer":
		if _, err := c.fetchToken(req, ch, scope); err != nil {
			return nil, err
		}
	}
	retry := req.Clone(req.Context())
	if req.GetBody != nil {
		if retry.Body, err = req.GetBody(); err != nil {
			return nil, err
		}
	}
	c.authorize(retry, scope)
	return c.hc.Do(retry)
}

func (c *Client) authorize(req *http.Request, scope string) {
	if c.basic.Load() {
		req.SetBasicAuth(c.user, c.password)
		return
	}
	if tok, ok := c.tokens.get(scope); ok {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
}

// fetchToken asks the challenge's realm for a token for the challenge's
// scopes (or scope, when the challenge names none) and caches it under
// scope.
func (c *Client) fetchToken(orig *http.Request, ch challenge, scope string) (string, error) {
	realm := ch.Params["realm"]
	if realm == "" {
		return "", errors.New("bearer challenge without realm")
	}
	u, err := url.Parse(realm)
	if err != nil {
		return "", fmt.Errorf("bearer realm %q: %w", realm, err)
	}
	q := u.Query()
	if s := ch.Params["service"]; s != "" {
		q.Set("service", s)
	}
	scopes := strings.Fields(ch.Params["scope"])
	if len(scopes) == 0 && scope != "" {
		scopes = []string{scope}
	}
	for _, s := range scopes {
		q.Add("scope", s)
	}
	q.Set("client_id", "registry-bench")
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(orig.Context(), http.MethodGet, u.String(), nil)
	if err != nil {
		return "", err
	}
	if c.user != "" {
		req.SetBasicAuth(c.user, c.password)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return "", err
	}
	tr, err := decodeToken(resp)
	if err != nil {
		return "", fmt.Errorf("token from %s: %w", u.Redacted(), err)
	}
	c.tokens.put(scope, tr.Token, tr.lifetime())
	return tr.Token, nil
}

// tokenResponse is the token server's answer (both spellings of the token).
type tokenResponse struct {
	Token        string `json:"token"`
	AccessToken  string `json:"access_token"`
	ExpiresIn    int    `json:"expires_in"`
	IssuedAt     string `json:"issued_at"`
	RefreshToken string `json:"refresh_token"`
}

// lifetime is expires_in, treated as 60 s when missing or smaller, as
// Docker does.
func (t tokenResponse) lifetime() time.Duration {
	return time.Duration(max(t.ExpiresIn, 60)) * time.Second
}

// decodeToken reads and closes a token response.
func decodeToken(resp *http.Response) (tokenResponse, error) {
	defer resp.Body.Close()
	var tr tokenResponse
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return tr, fmt.Errorf("status %s: %s", resp.Status, strings.TrimSpace(string(b)))
	}
	if err := json.NewDecoder(resp.Body).Decode(&tr); err != nil {
		return tr, err
	}
	if tr.Token == "" {
		tr.Token = tr.AccessToken
	}
	if tr.Token == "" {
		return tr, errors.New("no token in the response")
	}
	return tr, nil
}

// tokenCache holds one token per scope until shortly before it expires.
type tokenCache struct {
	now func() time.Time
	mu  sync.Mutex
	m   map[string]cachedToken
}

type cachedToken struct {
	token   string
	expires time.Time
}

// tokenMargin is how long before expiry a token stops being used, so a
// request does not arrive with a token that expires on the way.
const tokenMargin = 10 * time.Second

func (tc *tokenCache) get(scope string) (string, bool) {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	t, ok := tc.m[scope]
	if !ok || !tc.now().Before(t.expires.Add(-tokenMargin)) {
		return "", false
	}
	return t.token, true
}

func (tc *tokenCache) put(scope, token string, lifetime time.Duration) {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	if tc.m == nil {
		tc.m = make(map[string]cachedToken)
	}
	tc.m[scope] = cachedToken{token: token, expires: tc.now().Add(lifetime)}
}

// challenge is one parsed WWW-Authenticate challenge.
type challenge struct {
	Scheme string            // lower case: "bearer", "basic"
	Params map[string]string // keys lower case
}

// pickChallenge prefers a Bearer challenge over a Basic one.
func pickChallenge(headers []string) (challenge, bool) {
	var basic *challenge
	for _, h := range headers {
		ch, err := parseChallenge(h)
		if err != nil {
			continue
		}
		switch ch.Scheme {
		case "bearer":
			return ch, true
		case "basic":
			basic = &ch
		}
	}
	if basic != nil {
		return *basic, true
	}
	return challenge{}, false
}

// parseChallenge parses `Scheme k="v", k2=v2` (RFC 7235 auth-params with
// quoted strings, which may hold commas and backslash escapes).
func parseChallenge(h string) (challenge, error) {
	h = strings.TrimSpace(h)
	scheme, rest, _ := strings.Cut(h, " ")
	if scheme == "" {
		return challenge{}, errors.New("empty challenge")
	}
	ch := challenge{Scheme: strings.ToLower(scheme), Params: map[string]string{}}
	for {
		rest = strings.TrimLeft(rest, " \t,")
		if rest == "" {
			return ch, nil
		}
		eq := strings.IndexByte(rest, '=')
		if eq <= 0 {
			return ch, fmt.Errorf("challenge %q: parameter without '='", h)
		}
		key := strings.ToLower(strings.TrimSpace(rest[:eq]))
		rest = strings.TrimLeft(rest[eq+1:], " \t")
		var val strings.Builder
		if strings.HasPrefix(rest, `"`) {
			i, closed := 1, false
			for ; i < len(rest); i++ {
				if rest[i] == '\\' && i+1 < len(rest) {
					i++
					val.WriteByte(rest[i])
					continue
				}
				if rest[i] == '"' {
					closed = true
					break
				}
				val.WriteByte(rest[i])
			}
			if !closed {
				return ch, fmt.Errorf("challenge %q: unterminated quoted string", h)
			}
			rest = rest[i+1:]
		} else {
			end := strings.IndexByte(rest, ',')
			if end < 0 {
				end = len(rest)
			}
			val.WriteString(strings.TrimSpace(rest[:end]))
			rest = rest[end:]
		}
		ch.Params[key] = val.String()
	}
}

// drain reads what is left of a response body (so the connection can be
// reused) and closes it.
func drain(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
}

// expect returns a check of a response's status: on a mismatch it reads
// the error body into the error and closes it; on success the body is left
// open.
func expect(want ...int) func(*http.Response, error) (*http.Response, error) {
	return func(resp *http.Response, err error) (*http.Response, error) {
		if err != nil {
			return nil, err
		}
		for _, w := range want {
			if resp.StatusCode == w {
				return resp, nil
			}
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return nil, fmt.Errorf("%s %s: %s: %s", resp.Request.Method, resp.Request.URL.Path, resp.Status, strings.TrimSpace(string(b)))
	}
}
