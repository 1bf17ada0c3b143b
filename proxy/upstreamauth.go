package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// authTransport carries requests to one upstream and answers the
// upstream's authentication challenges itself, so that go-containerregistry's
// remote, which it is given to, never sees one.
//
// Why not remote's own token flow: since v0.21.4 it refuses a token realm
// on a private, loopback or link-local IP literal unless it is the
// registry's own host:port (a defence against a hostile public registry
// sending a client to a cloud metadata endpoint). A mirror's upstream is
// not a stranger: it is configured, and on a LAN its auth server is
// typically https://10.x.y.z:5001/token. Here the realm the configured
// upstream names is used, on these terms:
//
//   - requests go to the upstream with the configured scheme (never the
//     http fallback remote tries for private addresses);
//   - the first request asks GET /v2/ for the upstream's challenge, so
//     that a request for a scope without a token gets one first, as Docker
//     does, rather than after a 401;
//   - a 401 with a Bearer challenge gets a token from its realm (Docker's
//     token specification: GET realm?service=…&scope=…, with Basic
//     credentials when configured, anonymously otherwise), and the request
//     is sent once more with it. The realm must be https unless the
//     upstream itself is http. Tokens are cached by scope until their
//     expires_in;
//   - a 401 with a Basic challenge is answered with the credentials, which
//     are then sent up front;
//   - credentials and tokens go only to the upstream's host and the realm
//     it names: not to any other host a response redirects to (a CDN, a
//     bucket), and a realm's redirect elsewhere carries none. They are
//     never logged or put in an error.
type authTransport struct {
	inner              http.RoundTripper
	scheme, host       string // the upstream: host:port as requests name it
	username, password string

	pingMu sync.Mutex // held while /v2/ is asked

	mu     sync.Mutex
	pinged bool                   // the challenge below is known
	bearer challenge              // the upstream's Bearer challenge, if it sent one
	basic  bool                   // the upstream asked for Basic credentials
	tokens map[string]cachedToken // request scope → token
}

type cachedToken struct {
	token   string
	expires time.Time
}

// tokenSlack is taken off a token's lifetime, so it is not sent as it
// expires.
const tokenSlack = 10 * time.Second

// maxTokenBody bounds a token response.
const maxTokenBody = 64 << 10

// ErrUpstreamAuth wraps ErrUpstream when the upstream's token realm refused
// the configured credentials (or anonymous access): 401 or 403. A cached
// copy does not stand in for it, as for any answer of the upstream.
var ErrUpstreamAuth = fmt.Errorf("%w: it refused the credentials", ErrUpstream)

func newAuthTransport(inner http.RoundTripper, scheme, host, username, password string) *authTransport {
	return &authTransport{inner: inner, scheme: scheme, host: host, username: username, password: password, tokens: map[string]cachedToken{}}
}

func (a *authTransport) credentials() bool { return a.username != "" || a.password != "" }

// RoundTrip implements http.RoundTripper.
func (a *authTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Host != a.host {
		// Elsewhere (a redirect to blob storage): as it is, no credentials.
		return a.inner.RoundTrip(req)
	}
	scope := requestScope(req.URL.Path)
	if err := a.authorizeAhead(req.Context(), scope); err != nil {
		return nil, err
	}
	resp, err := a.send(req, scope)
	if err != nil || resp.StatusCode != http.StatusUnauthorized || (req.Method != http.MethodGet && req.Method != http.MethodHead) {
		return resp, err
	}
	ch, ok := pickChallenge(resp.Header.Values("WWW-Authenticate"))
	if !ok {
		return resp, nil
	}
	switch {
	case ch.scheme == "bearer":
		want := ch.params["scope"]
		if want == "" {
			want = scope
		}
		a.mu.Lock()
		a.bearer, a.pinged = ch, true
		a.mu.Unlock()
		if err := a.refresh(req.Context(), ch, scope, want); err != nil {
			drain(resp)
			return nil, err
		}
	case ch.scheme == "basic" && a.credentials() && !a.isBasic():
		a.mu.Lock()
		a.basic = true
		a.mu.Unlock()
	default:
		return resp, nil
	}
	drain(resp)
	return a.send(req, scope)
}

// send sends req with what authorizes it; a 401 to Basic credentials is
// their refusal (ErrUpstreamAuth).
func (a *authTransport) send(req *http.Request, scope string) (*http.Response, error) {
	out := a.prepare(req, scope)
	resp, err := a.inner.RoundTrip(out)
	if err == nil && resp.StatusCode == http.StatusUnauthorized && strings.HasPrefix(out.Header.Get("Authorization"), "Basic ") {
		drain(resp)
		return nil, fmt.Errorf("%w: %s answered %s to Basic credentials", ErrUpstreamAuth, a.host, resp.Status)
	}
	return resp, err
}

// authorizeAhead makes sure that a request for scope carries a token when
// the upstream is known to want one: it learns the upstream's challenge
// once (GET /v2/), then fetches a token for a scope that has none.
func (a *authTransport) authorizeAhead(ctx context.Context, scope string) error {
	if scope == "" {
		return nil
	}
	a.mu.Lock()
	pinged := a.pinged
	a.mu.Unlock()
	if !pinged {
		a.ping(ctx)
	}
	a.mu.Lock()
	ch, tok := a.bearer, a.tokens[scope]
	a.mu.Unlock()
	if ch.scheme != "bearer" || (tok.token != "" && time.Now().Before(tok.expires)) {
		return nil
	}
	return a.refresh(ctx, ch, scope, scope)
}

// ping asks the upstream's /v2/ for its challenge, once (again after a
// failure).
func (a *authTransport) ping(ctx context.Context) {
	a.pingMu.Lock()
	defer a.pingMu.Unlock()
	a.mu.Lock()
	pinged := a.pinged
	a.mu.Unlock()
	if pinged {
		return
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.scheme+"://"+a.host+"/v2/", nil)
	if err != nil {
		return
	}
	resp, err := a.inner.RoundTrip(req)
	if err != nil {
		return // the request itself will tell
	}
	drain(resp)
	a.mu.Lock()
	defer a.mu.Unlock()
	if resp.StatusCode == http.StatusUnauthorized {
		ch, _ := pickChallenge(resp.Header.Values("WWW-Authenticate"))
		switch {
		case ch.scheme == "bearer":
			a.bearer = ch
		case ch.scheme == "basic" && a.credentials():
			a.basic = true
		}
	}
	a.pinged = resp.StatusCode < 500
}

// refresh fetches a token for want from the realm of challenge ch and
// keeps it for requests of scope.
func (a *authTransport) refresh(ctx context.Context, ch challenge, scope, want string) error {
	tok, err := a.fetchToken(ctx, ch.params["realm"], ch.params["service"], want)
	if err != nil {
		return err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for k, t := range a.tokens { // the expired ones go
		if time.Now().After(t.expires) {
			delete(a.tokens, k)
		}
	}
	a.tokens[scope] = tok
	return nil
}

func (a *authTransport) isBasic() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.basic
}

// prepare returns a copy of req to send: the upstream's scheme, and the
// token for scope or the Basic credentials when there are.
func (a *authTransport) prepare(req *http.Request, scope string) *http.Request {
	out := req.Clone(req.Context())
	out.URL.Scheme = a.scheme
	out.Header.Del("Authorization")
	a.mu.Lock()
	tok, basic := a.tokens[scope], a.basic
	a.mu.Unlock()
	switch {
	case tok.token != "" && time.Now().Before(tok.expires):
		out.Header.Set("Authorization", "Bearer "+tok.token)
	case basic:
		out.SetBasicAuth(a.username, a.password)
	}
	return out
}

// fetchToken asks realm for a token of service and scope.
func (a *authTransport) fetchToken(ctx context.Context, realm, service, scope string) (cachedToken, error) {
	u, err := url.Parse(realm)
	if err != nil || u.Host == "" || (u.Scheme != "https" && (u.Scheme != "http" || a.scheme != "http")) {
		return cachedToken{}, fmt.Errorf("%w: its token realm is not an https URL", ErrUpstream)
	}
	q := u.Query()
	if service != "" {
		q.Set("service", service)
	}
	if scope != "" {
		q.Set("scope", scope)
	}
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return cachedToken{}, fmt.Errorf("%w: %w", ErrUpstream, err)
	}
	if a.credentials() {
		req.SetBasicAuth(a.username, a.password)
	}
	realmHost, realmScheme := u.Host, u.Scheme
	client := &http.Client{Transport: a.inner, CheckRedirect: func(r *http.Request, via []*http.Request) error {
		if len(via) >= 5 {
			return errors.New("too many redirects")
		}
		if r.URL.Host != realmHost || r.URL.Scheme != realmScheme {
			r.Header.Del("Authorization") // the credentials are the realm's only
		}
		return nil
	}}
	resp, err := client.Do(req)
	if err != nil {
		// Not the URL (url.Error's text): only the cause.
		return cachedToken{}, fmt.Errorf("%w: token realm %s: %w", ErrUpstream, realmHost, errors.Unwrap(err))
	}
	defer drain(resp)
	switch {
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
		return cachedToken{}, fmt.Errorf("%w: token realm %s answered %s", ErrUpstreamAuth, realmHost, resp.Status)
	case resp.StatusCode != http.StatusOK:
		return cachedToken{}, fmt.Errorf("%w: token realm %s answered %s", ErrUpstream, realmHost, resp.Status)
	}
	var body struct {
		Token       string `json:"token"`
		AccessToken string `json:"access_token"`
		ExpiresIn   int    `json:"expires_in"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxTokenBody)).Decode(&body); err != nil {
		return cachedToken{}, fmt.Errorf("%w: token realm %s: unreadable answer", ErrUpstream, realmHost)
	}
	tok := body.Token
	if tok == "" {
		tok = body.AccessToken
	}
	if tok == "" {
		return cachedToken{}, fmt.Errorf("%w: token realm %s answered no token", ErrUpstream, realmHost)
	}
	// The specification: 60 s when it is not given (and at least that).
	life := time.Duration(max(body.ExpiresIn, 60)) * time.Second
	return cachedToken{token: tok, expires: time.Now().Add(life - tokenSlack)}, nil
}

// drain reads a little of resp's body, so its connection can be reused,
// and closes it.
func drain(resp *http.Response) {
	_, _ = io.CopyN(io.Discard, resp.Body, 4<<10)
	resp.Body.Close()
}

// requestScope is the token scope a request to path needs:
// repository:<name>:pull for /v2/<name>/(manifests|blobs|tags)/…, empty
// for anything else (/v2/).
func requestScope(path string) string {
	rest, ok := strings.CutPrefix(path, "/v2/")
	if !ok {
		return ""
	}
	end := -1 // the last kind in the path: names may hold the words
	for _, kind := range []string{"/manifests/", "/blobs/", "/tags/"} {
		end = max(end, strings.LastIndex(rest, kind))
	}
	if end <= 0 {
		return ""
	}
	return "repository:" + rest[:end] + ":pull"
}

// challenge is one WWW-Authenticate challenge: its scheme in lower case
// and its parameters (names in lower case).
type challenge struct {
	scheme string
	params map[string]string
}

// pickChallenge returns the Bearer challenge among headers if there is
// one with a realm, else a Basic one.
func pickChallenge(headers []string) (challenge, bool) {
	var basic *challenge
	for _, h := range headers {
		ch := parseChallenge(h)
		switch {
		case ch.scheme == "bearer" && ch.params["realm"] != "":
			return ch, true
		case ch.scheme == "basic" && basic == nil:
			basic = &ch
		}
	}
	if basic != nil {
		return *basic, true
	}
	return challenge{}, false
}

// parseChallenge parses `Scheme k="v", k2=v2`: values quoted (with
// backslash escapes) or plain tokens.
func parseChallenge(h string) challenge {
	scheme, rest, _ := strings.Cut(strings.TrimSpace(h), " ")
	ch := challenge{scheme: strings.ToLower(scheme), params: map[string]string{}}
	for {
		rest = strings.TrimLeft(rest, " ,\t")
		key, after, ok := strings.Cut(rest, "=")
		if !ok {
			return ch
		}
		key = strings.ToLower(strings.TrimSpace(key))
		after = strings.TrimLeft(after, " \t")
		var val strings.Builder
		if strings.HasPrefix(after, `"`) {
			i := 1
			for ; i < len(after) && after[i] != '"'; i++ {
				if after[i] == '\\' && i+1 < len(after) {
					i++
				}
				val.WriteByte(after[i])
			}
			rest = after[min(i+1, len(after)):]
		} else {
			end := strings.IndexAny(after, ", \t")
			if end < 0 {
				end = len(after)
			}
			val.WriteString(after[:end])
			rest = after[end:]
		}
		ch.params[key] = val.String()
	}
}
