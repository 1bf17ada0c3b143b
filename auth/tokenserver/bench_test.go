package tokenserver

import (
	"crypto/x509"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/berth-registry/berth/auth"
)

// benchCost is the bcrypt cost of the benchmarks (issue 7's target is
// stated at cost 10).
const benchCost = 10

func benchFixture(b *testing.B, alg string) *fixture {
	key := testSigningKey(b)
	if alg != auth.RS256 {
		k, err := auth.GenerateKey(alg)
		if err != nil {
			b.Fatal(err)
		}
		c, err := auth.SelfSignedCertificate(k, "bench", time.Hour)
		if err != nil {
			b.Fatal(err)
		}
		key = auth.Key{Private: k, Chain: []*x509.Certificate{c}}
	}
	signer, err := auth.NewSigner(key)
	if err != nil {
		b.Fatal(err)
	}
	return newFixture(b, benchCost, func(c *Config) {
		c.Signer = signer
		c.Logger = nil // the access log would measure the log handler
	})
}

func reportRate(b *testing.B, start time.Time) {
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "tokens/s")
	b.ReportMetric(benchCost, "bcrypt-cost")
}

// BenchmarkBasicLogin is repeated GET /token with the same Basic
// credentials (docker, crane and the conformance suite without a token
// cache): after the first login, the credential cache spares bcrypt.
func BenchmarkBasicLogin(b *testing.B) {
	for _, alg := range []string{auth.RS256, auth.ES256, auth.EdDSA} {
		b.Run(alg, func(b *testing.B) {
			f := benchFixture(b, alg)
			const q = "service=" + service + "&scope=repository:team/app:push,pull"
			if w := f.get(b, q, "bob", bobPW, ""); w.Code != 200 { // the first login, at bcrypt speed
				b.Fatal(w.Code)
			}
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					req := httptest.NewRequest(http.MethodGet, "/token?"+q, nil)
					req.SetBasicAuth("bob", bobPW)
					w := httptest.NewRecorder()
					f.srv.Handler().ServeHTTP(w, req)
					if w.Code != 200 {
						b.Fatal(w.Code)
					}
				}
			})
			reportRate(b, start)
		})
	}
}

// BenchmarkRefreshGrant is POST /token with grant_type=refresh_token, as
// docker sends it for every push or pull after a login.
func BenchmarkRefreshGrant(b *testing.B) {
	for _, alg := range []string{auth.RS256, auth.ES256, auth.EdDSA} {
		b.Run(alg, func(b *testing.B) {
			f := benchFixture(b, alg)
			w := f.get(b, "account=bob&client_id=docker&offline_token=true&service="+service, "bob", bobPW, "")
			rt, _ := body(b, w)["refresh_token"].(string)
			if rt == "" {
				b.Fatal(w.Body.String())
			}
			form := url.Values{
				"grant_type": {"refresh_token"}, "refresh_token": {rt}, "client_id": {"docker"},
				"service": {service}, "scope": {"repository:team/app:push,pull repository:other/base:pull"},
			}.Encode()
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					req := httptest.NewRequest(http.MethodPost, "/token", strings.NewReader(form))
					req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
					w := httptest.NewRecorder()
					f.srv.Handler().ServeHTTP(w, req)
					if w.Code != 200 {
						b.Fatal(w.Code)
					}
				}
			})
			reportRate(b, start)
		})
	}
}

// BenchmarkFirstLogin is a password check that misses the credential
// cache: the bcrypt cost itself, what every first login pays.
func BenchmarkFirstLogin(b *testing.B) {
	f := benchFixture(b, auth.ES256)
	store, err := auth.NewUserStore(auth.UserStoreConfig{Path: f.htpasswd, CacheTTL: -1})
	if err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	for b.Loop() {
		if err := store.Authenticate("bob", bobPW); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "logins/s")
	b.ReportMetric(benchCost, "bcrypt-cost")
}
