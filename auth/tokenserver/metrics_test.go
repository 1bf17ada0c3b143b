package tokenserver

import (
	"net/http"
	"net/url"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestMetrics: tokens are counted by how they were asked for, logins by
// credential and outcome, and refusals by the throttle by what refused.
func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	f := newFixture(t, 4, func(c *Config) { c.Metrics = reg })
	q := "service=" + url.QueryEscape(service) + "&scope=repository:public/x:pull"
	ok := func(w interface{ Result() *http.Response }, what string) {
		t.Helper()
		if code := w.Result().StatusCode; code != http.StatusOK {
			t.Fatalf("%s: %d", what, code)
		}
	}
	ok(f.get(t, q, "", "", ""), "anonymous GET")
	w := f.get(t, q+"&offline_token=true", "alice", alicePW, "")
	ok(w, "GET as alice")
	refresh, _ := body(t, w)["refresh_token"].(string)
	form := url.Values{"service": {service}, "client_id": {"test"}, "grant_type": {"refresh_token"}, "refresh_token": {refresh}}
	ok(f.post(t, form, ""), "POST refresh_token")
	form.Set("refresh_token", refresh+"x")
	if w := f.post(t, form, ""); w.Code != http.StatusUnauthorized {
		t.Fatalf("POST with a bad refresh token: %d", w.Code)
	}
	ok(f.post(t, url.Values{"service": {service}, "client_id": {"test"}, "grant_type": {"password"},
		"username": {"bob"}, "password": {bobPW}}, ""), "POST password")

	// Guess bob's password from one address until the throttle steps in.
	var failed, throttled float64
	for range 40 {
		switch w := f.get(t, q, "bob", "wrong", "203.0.113.9"); w.Code {
		case http.StatusUnauthorized:
			failed++
		case http.StatusTooManyRequests:
			throttled++
		default:
			t.Fatalf("a wrong password: %d", w.Code)
		}
	}
	if throttled == 0 || failed == 0 {
		t.Fatalf("%v failures and %v refusals: the test needs both", failed, throttled)
	}

	for _, c := range []struct {
		name string
		got  prometheus.Collector
		want float64
	}{
		{"issued anonymous", f.srv.metrics.issued.WithLabelValues("anonymous"), 1},
		{"issued basic", f.srv.metrics.issued.WithLabelValues("basic"), 1},
		{"issued refresh_token", f.srv.metrics.issued.WithLabelValues("refresh_token"), 1},
		{"issued password", f.srv.metrics.issued.WithLabelValues("password"), 1},
		{"password logins ok", f.srv.metrics.logins.WithLabelValues("password", "success"), 2},
		{"password logins failed", f.srv.metrics.logins.WithLabelValues("password", "failure"), failed},
		{"password logins throttled", f.srv.metrics.logins.WithLabelValues("password", "throttled"), throttled},
		{"refresh logins ok", f.srv.metrics.logins.WithLabelValues("refresh_token", "success"), 1},
		{"refresh logins failed", f.srv.metrics.logins.WithLabelValues("refresh_token", "failure"), 1},
	} {
		if got := testutil.ToFloat64(c.got); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
	by := testutil.ToFloat64(f.srv.metrics.throttled.WithLabelValues("account")) +
		testutil.ToFloat64(f.srv.metrics.throttled.WithLabelValues("address"))
	if by != throttled {
		t.Errorf("throttled by account or address: %v, want %v", by, throttled)
	}
	if n, err := testutil.GatherAndCount(reg, "berth_auth_tokens_issued_total", "berth_auth_logins_total", "berth_auth_throttled_total"); err != nil || n != 4+5+2 {
		t.Errorf("%d series registered (%v), want 11", n, err)
	}
}
