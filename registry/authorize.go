package registry

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/berth-registry/berth/auth"
)

// ErrInsufficientScope: a valid token that does not grant what the request
// needs (401 DENIED with error="insufficient_scope", as Distribution
// answers, so the client fetches a token for the scope and retries).
var ErrInsufficientScope = errors.New("requested access to the resource is denied")

// challengeError is a refused request with the WWW-Authenticate header
// that tells the client how to authenticate.
type challengeError struct {
	err       error
	challenge string
}

func (e *challengeError) Error() string            { return e.err.Error() }
func (e *challengeError) Unwrap() error            { return e.err }
func (e *challengeError) SetHeaders(h http.Header) { h.Set("WWW-Authenticate", e.challenge) }

// TokenVerifier checks a bearer token and returns what it grants.
// *auth.Verifier is one.
type TokenVerifier interface {
	Verify(token string) (*auth.Claims, error)
}

// TokenAuthorizer authorizes requests with bearer tokens from a token
// server (Docker token authentication). Create it with NewTokenAuthorizer.
type TokenAuthorizer struct {
	realm, service string
	verifier       TokenVerifier
	now            func() time.Time

	mu    sync.Mutex
	cache map[string]*auth.Claims // verified tokens, until they expire
}

// maxCachedTokens bounds the verified-token cache.
const maxCachedTokens = 10000

// NewTokenAuthorizer returns an authorizer whose challenges send clients
// to realm for tokens of service, and which checks tokens with v.
func NewTokenAuthorizer(realm, service string, v TokenVerifier) (*TokenAuthorizer, error) {
	for _, s := range []string{realm, service} {
		// Clients parse the challenge with regular expressions; a quote
		// would end the value, and the words "basic" and "bearer" inside a
		// value confuse the OCI conformance suite's client.
		low := strings.ToLower(s)
		if s == "" || strings.ContainsAny(s, "\"\\\r\n") || strings.Contains(low, "basic") || strings.Contains(low, "bearer") {
			return nil, fmt.Errorf("token auth: realm and service must be set, without quotes or the words basic or bearer: %q", s)
		}
	}
	return &TokenAuthorizer{realm: realm, service: service, verifier: v, now: time.Now, cache: make(map[string]*auth.Claims)}, nil
}

// Authorize implements Authorizer.
func (a *TokenAuthorizer) Authorize(r *http.Request, need []Access) (string, error) {
	token, ok := bearerToken(r)
	if !ok {
		return "", a.challenge(need, "", ErrUnauthorized)
	}
	claims, err := a.verify(token)
	if err != nil {
		return "", a.challenge(need, "invalid_token", fmt.Errorf("%w: %w", ErrUnauthorized, err))
	}
	for _, n := range need {
		for _, action := range n.Actions {
			if !claims.Allows(n.Type, n.Name, action) {
				return claims.Subject, a.challenge(need, "insufficient_scope", ErrInsufficientScope)
			}
		}
	}
	return claims.Subject, nil
}

// Realm is the token endpoint clients are sent to.
func (a *TokenAuthorizer) Realm() string { return a.realm }

// Service is the registry's name at the token server: the audience of its
// tokens.
func (a *TokenAuthorizer) Service() string { return a.service }

// Verifier is what checks the tokens (the web pages check theirs with it).
func (a *TokenAuthorizer) Verifier() TokenVerifier { return a.verifier }

func bearerToken(r *http.Request) (string, bool) {
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	token = strings.TrimSpace(token)
	return token, ok && strings.EqualFold(scheme, "Bearer") && token != ""
}

// verify checks a token, remembering verified ones until they expire so a
// push's many requests do not each pay for a signature check.
func (a *TokenAuthorizer) verify(token string) (*auth.Claims, error) {
	now := a.now()
	a.mu.Lock()
	c, ok := a.cache[token]
	a.mu.Unlock()
	if ok && now.Before(c.ExpiresAt.Time) {
		return c, nil
	}
	c, err := a.verifier.Verify(token)
	if err != nil {
		return nil, err
	}
	if c.ExpiresAt != nil {
		a.mu.Lock()
		if len(a.cache) >= maxCachedTokens {
			for k, v := range a.cache {
				if !now.Before(v.ExpiresAt.Time) {
					delete(a.cache, k)
				}
			}
			if len(a.cache) >= maxCachedTokens {
				clear(a.cache)
			}
		}
		a.cache[token] = c
		a.mu.Unlock()
	}
	return c, nil
}

// challenge builds the refusal: WWW-Authenticate names the realm, the
// service, exactly the scope the request needs, and, when a token was
// sent, why it was not enough.
func (a *TokenAuthorizer) challenge(need []Access, reason string, err error) error {
	var b strings.Builder
	fmt.Fprintf(&b, `Bearer realm="%s",service="%s"`, a.realm, a.service)
	if scope := scopeString(need); scope != "" {
		fmt.Fprintf(&b, `,scope="%s"`, scope)
	}
	if reason != "" {
		fmt.Fprintf(&b, `,error="%s"`, reason)
	}
	return &challengeError{err: err, challenge: b.String()}
}

// scopeString formats needs in the token specification's scope grammar,
// space-separated.
func scopeString(need []Access) string {
	parts := make([]string, 0, len(need))
	for _, n := range need {
		parts = append(parts, n.Type+":"+n.Name+":"+strings.Join(n.Actions, ","))
	}
	return strings.Join(parts, " ")
}

// BasicAuthorizer lets in every user of an htpasswd file with full access:
// Distribution's auth.htpasswd, for single-user setups. Create it with
// NewBasicAuthorizer.
type BasicAuthorizer struct {
	challenge string
	users     *auth.UserStore
}

// NewBasicAuthorizer returns an authorizer that checks Basic credentials
// against users and names realm in its challenge.
func NewBasicAuthorizer(realm string, users *auth.UserStore) *BasicAuthorizer {
	return &BasicAuthorizer{challenge: `Basic realm="` + strings.ReplaceAll(realm, `"`, "") + `"`, users: users}
}

// Users is the htpasswd file's users (the web pages sign them in).
func (a *BasicAuthorizer) Users() *auth.UserStore { return a.users }

// Authorize implements Authorizer.
func (a *BasicAuthorizer) Authorize(r *http.Request, need []Access) (string, error) {
	user, password, ok := r.BasicAuth()
	if !ok {
		return "", &challengeError{err: ErrUnauthorized, challenge: a.challenge}
	}
	if err := a.users.Authenticate(user, password); err != nil {
		return "", &challengeError{err: fmt.Errorf("%w: %w", ErrUnauthorized, err), challenge: a.challenge}
	}
	return user, nil
}
