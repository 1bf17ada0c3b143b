package proxy

import (
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
)

// record keeps the Authorization headers a test server saw, by path.
type record struct {
	mu   sync.Mutex
	seen []string
}

func (r *record) add(req *http.Request) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seen = append(r.seen, req.URL.Path+" "+req.Header.Get("Authorization"))
}

func (r *record) all() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.seen...)
}

// TestAuthTransport: an upstream whose realm is on another loopback port
// (what remote refuses), a token fetched with the credentials once per
// scope, access_token accepted, and neither credentials nor token sent on
// a redirect to another host; a realm that is not https is refused.
func TestAuthTransport(t *testing.T) {
	var cdnSeen, realmSeen, upSeen record
	cdn := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cdnSeen.add(r)
		io.WriteString(w, "blob")
	}))
	defer cdn.Close()
	realm := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		realmSeen.add(r)
		if u, p, ok := r.BasicAuth(); !ok || u != "mirror" || p != "s3cret" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		fmt.Fprintf(w, `{"access_token": "tok:%s", "expires_in": 3600}`, r.URL.Query().Get("scope"))
	}))
	defer realm.Close()
	var realmURL = realm.URL + "/token"
	up := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		upSeen.add(r)
		scope := requestScope(r.URL.Path)
		if r.Header.Get("Authorization") != "Bearer tok:"+scope || scope == "" {
			w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm=%q,service="up"`, realmURL))
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		if strings.Contains(r.URL.Path, "/blobs/") {
			http.Redirect(w, r, cdn.URL+"/data", http.StatusTemporaryRedirect)
			return
		}
		io.WriteString(w, "manifest")
	}))
	defer up.Close()
	pool := x509.NewCertPool()
	for _, s := range []*httptest.Server{cdn, realm, up} {
		pool.AddCert(s.Certificate())
	}
	inner := up.Client().Transport.(*http.Transport).Clone()
	inner.TLSClientConfig.RootCAs = pool
	host := strings.TrimPrefix(up.URL, "https://")

	at := newAuthTransport(inner, "https", host, "mirror", "s3cret")
	client := &http.Client{Transport: at}
	get := func(path string) string {
		t.Helper()
		resp, err := client.Get(up.URL + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("GET %s: %d %s", path, resp.StatusCode, b)
		}
		return string(b)
	}
	if got := get("/v2/team/app/manifests/v1"); got != "manifest" {
		t.Errorf("manifest: %q", got)
	}
	if got := get("/v2/team/app/blobs/sha256:1"); got != "blob" {
		t.Errorf("blob through the redirect: %q", got)
	}
	get("/v2/team/app/manifests/v2")
	if got := realmSeen.all(); len(got) != 1 || !strings.Contains(got[0], "Basic ") {
		t.Errorf("token requests %q, want one, with Basic credentials", got)
	}
	for _, s := range cdnSeen.all() {
		if strings.TrimPrefix(s, "/data") != " " {
			t.Errorf("the redirect's host got credentials: %q", s)
		}
	}
	// The first request asked /v2/ for the challenge: every request for
	// the repository carried the token from the start.
	for _, s := range upSeen.all() {
		if strings.HasPrefix(s, "/v2/team/") && !strings.HasSuffix(s, "Bearer tok:repository:team/app:pull") {
			t.Errorf("upstream request without the token: %q", s)
		}
	}

	// Wrong credentials: ErrUpstreamAuth, no secret in its text.
	wrong := &http.Client{Transport: newAuthTransport(inner, "https", host, "mirror", "wrong-pass")}
	_, err := wrong.Get(up.URL + "/v2/team/app/manifests/v1")
	if !errors.Is(err, ErrUpstreamAuth) || strings.Contains(err.Error(), "wrong-pass") {
		t.Errorf("wrong credentials: %v, want ErrUpstreamAuth without the password", err)
	}

	// A realm over http for an https upstream: refused, nothing sent there.
	realmURL = "http://" + strings.TrimPrefix(realm.URL, "https://") + "/token"
	before := len(realmSeen.all())
	_, err = (&http.Client{Transport: newAuthTransport(inner, "https", host, "mirror", "s3cret")}).Get(up.URL + "/v2/team/app/manifests/v1")
	var uerr *url.Error
	if !errors.As(err, &uerr) || !errors.Is(err, ErrUpstream) || len(realmSeen.all()) != before {
		t.Errorf("an http realm: %v, %d token requests; want ErrUpstream and none", err, len(realmSeen.all())-before)
	}
}

func TestParseChallenge(t *testing.T) {
	ch, ok := pickChallenge([]string{`Basic realm="x"`, `Bearer realm="https://10.1.2.3:5001/token",service="reg \"a\"",scope="repository:a/b:pull,push"`})
	if !ok || ch.scheme != "bearer" || ch.params["realm"] != "https://10.1.2.3:5001/token" || ch.params["service"] != `reg "a"` || ch.params["scope"] != "repository:a/b:pull,push" {
		t.Errorf("challenge %+v", ch)
	}
	if ch, ok := pickChallenge([]string{`basic realm=Berth`}); !ok || ch.scheme != "basic" || ch.params["realm"] != "Berth" {
		t.Errorf("basic challenge %+v", ch)
	}
	for path, want := range map[string]string{
		"/v2/":                           "",
		"/v2/a/b/manifests/v1":           "repository:a/b:pull",
		"/v2/x/blobs/blobs/sha256:1":     "repository:x/blobs:pull",
		"/v2/a/tags/list":                "repository:a:pull",
		"/v2/a/manifests/blobs/sha256:1": "repository:a/manifests:pull",
	} {
		if got := requestScope(path); got != want {
			t.Errorf("requestScope(%q) = %q, want %q", path, got, want)
		}
	}
}
