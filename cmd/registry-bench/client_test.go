package main

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestParseChallenge(t *testing.T) {
	tests := []struct {
		in      string
		want    challenge
		wantErr bool
	}{
		{
			in: `Bearer realm="https://auth.example:5001/token",service="registry.example",scope="repository:team/app:pull,push"`,
			want: challenge{"bearer", map[string]string{
				"realm": "https://auth.example:5001/token", "service": "registry.example", "scope": "repository:team/app:pull,push"}},
		},
		{
			in:   `Basic realm="Registry Realm"`,
			want: challenge{"basic", map[string]string{"realm": "Registry Realm"}},
		},
		{
			in: `bearer Realm=https://a/token, service="a \"quoted\" svc" ,error="insufficient_scope"`,
			want: challenge{"bearer", map[string]string{
				"realm": "https://a/token", "service": `a "quoted" svc`, "error": "insufficient_scope"}},
		},
		{
			in:   `Bearer realm="r",scope="repository:a:pull repository:b:pull"`,
			want: challenge{"bearer", map[string]string{"realm": "r", "scope": "repository:a:pull repository:b:pull"}},
		},
		{in: `Bearer`, want: challenge{"bearer", map[string]string{}}},
		{in: ``, wantErr: true},
		{in: `Bearer realm="unterminated`, wantErr: true},
		{in: `Bearer novalue`, wantErr: true},
	}
	for _, tt := range tests {
		got, err := parseChallenge(tt.in)
		if (err != nil) != tt.wantErr {
			t.Errorf("parseChallenge(%q) error = %v, want error %v", tt.in, err, tt.wantErr)
			continue
		}
		if !tt.wantErr && !reflect.DeepEqual(got, tt.want) {
			t.Errorf("parseChallenge(%q) = %+v, want %+v", tt.in, got, tt.want)
		}
	}
}

func TestPickChallengePrefersBearer(t *testing.T) {
	ch, ok := pickChallenge([]string{`Basic realm="x"`, `Bearer realm="https://a/token"`})
	if !ok || ch.Scheme != "bearer" {
		t.Fatalf("got %+v, %v; want the bearer challenge", ch, ok)
	}
	if _, ok := pickChallenge([]string{`Negotiate`}); ok {
		t.Fatal("an unknown scheme was picked")
	}
}

func TestTokenCacheExpiry(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	tc := tokenCache{now: func() time.Time { return now }}
	if _, ok := tc.get("s"); ok {
		t.Fatal("empty cache returned a token")
	}
	tc.put("s", "tok", 60*time.Second)
	if got, ok := tc.get("s"); !ok || got != "tok" {
		t.Fatalf("get = %q, %v", got, ok)
	}
	if _, ok := tc.get("other"); ok {
		t.Fatal("a token was reused for another scope")
	}
	now = now.Add(60*time.Second - tokenMargin)
	if _, ok := tc.get("s"); ok {
		t.Fatal("a token within the margin of its expiry was used")
	}
}

func TestTokenLifetime(t *testing.T) {
	for in, want := range map[int]time.Duration{0: time.Minute, 30: time.Minute, 300: 5 * time.Minute} {
		if got := (tokenResponse{ExpiresIn: in}).lifetime(); got != want {
			t.Errorf("lifetime(expires_in %d) = %v, want %v", in, got, want)
		}
	}
}

// TestBearerFlow runs a fake registry that wants a Bearer token and a fake
// token server, and checks that tokens are fetched with Basic credentials
// and the challenge's scope, reused while valid, and fetched again after
// they expire.
func TestBearerFlow(t *testing.T) {
	var fetches atomic.Int32
	var lastQuery atomic.Value
	mux := http.NewServeMux()
	srv := httptest.NewTLSServer(mux)
	defer srv.Close()
	mux.HandleFunc("/token", func(w http.ResponseWriter, r *http.Request) {
		if u, p, ok := r.BasicAuth(); !ok || u != "alice" || p != "secret" {
			http.Error(w, "bad credentials", http.StatusUnauthorized)
			return
		}
		lastQuery.Store(r.URL.Query())
		n := fetches.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"access_token":"tok` + string(rune('0'+n)) + `","expires_in":120}`))
	})
	mux.HandleFunc("/v2/", func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.Header.Get("Authorization"), "Bearer tok") {
			w.Header().Set("WWW-Authenticate", `Bearer realm="`+srv.URL+`/token",service="reg",scope="repository:team/app:pull,push"`)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		w.Header().Set("X-Token", strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "))
	})
	u, _ := url.Parse(srv.URL)
	c := newClientTLS(u, srv.Client().Transport.(*http.Transport).TLSClientConfig, false, "alice", "secret")
	now := time.Now()
	c.tokens.now = func() time.Time { return now }
	get := func() string {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, srv.URL+"/v2/team/app/tags/list", nil)
		resp, err := c.Do(req, "repository:team/app:pull,push")
		if err != nil {
			t.Fatal(err)
		}
		drain(resp)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d", resp.StatusCode)
		}
		return resp.Header.Get("X-Token")
	}
	if tok := get(); tok != "tok1" || fetches.Load() != 1 {
		t.Fatalf("first request used %q after %d fetches", tok, fetches.Load())
	}
	q := lastQuery.Load().(url.Values)
	if q.Get("service") != "reg" || q.Get("scope") != "repository:team/app:pull,push" {
		t.Errorf("token request query %v", q)
	}
	for range 5 {
		get()
	}
	if fetches.Load() != 1 {
		t.Fatalf("%d token fetches for 6 requests within the token's lifetime", fetches.Load())
	}
	now = now.Add(2 * time.Minute)
	if tok := get(); tok != "tok2" || fetches.Load() != 2 {
		t.Fatalf("after expiry: token %q, %d fetches", tok, fetches.Load())
	}
}

func TestBasicFlow(t *testing.T) {
	var unauthorized atomic.Int32
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u, p, ok := r.BasicAuth(); !ok || u != "bob" || p != "pw" {
			unauthorized.Add(1)
			w.Header().Set("WWW-Authenticate", `Basic realm="Registry"`)
			w.WriteHeader(http.StatusUnauthorized)
		}
	}))
	defer srv.Close()
	u, _ := url.Parse(srv.URL)
	c := newClientTLS(u, srv.Client().Transport.(*http.Transport).TLSClientConfig, false, "bob", "pw")
	for range 3 {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+"/v2/", nil)
		resp, err := expect(http.StatusOK)(c.Do(req, "x"))
		if err != nil {
			t.Fatal(err)
		}
		drain(resp)
	}
	if unauthorized.Load() != 1 {
		t.Fatalf("%d unauthorized requests, want only the first", unauthorized.Load())
	}
}
