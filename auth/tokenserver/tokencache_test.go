package tokenserver

import (
	"testing"
	"time"
)

// TestFreshTokenReused pins the token cache: a repeated request for the
// same grant within the reuse window gets the same token, reported with
// issued_at now and expires_in what is left of it; a different grant, or a
// request after the window, gets a newly signed one.
func TestFreshTokenReused(t *testing.T) {
	f := newFixture(t, 4)
	login := func(scope string) map[string]any {
		t.Helper()
		rec := f.get(t, "service="+service+"&scope="+scope, "bob", bobPW, "10.0.0.1")
		if rec.Code != 200 {
			t.Fatalf("login: %d %s", rec.Code, rec.Body)
		}
		return body(t, rec)
	}
	first := login("repository:bob/app:pull")
	f.clock.Advance(10 * time.Second)
	again := login("repository:bob/app:pull")
	if again["token"] != first["token"] {
		t.Fatal("a repeated login within the window was signed anew")
	}
	if again["expires_in"] != float64(290) {
		t.Fatalf("expires_in %v, want 290 (what is left of the reused token)", again["expires_in"])
	}
	issued, _ := time.Parse(time.RFC3339, again["issued_at"].(string))
	if d := f.clock.Now().Sub(issued); d < 0 || d > time.Second {
		t.Fatalf("issued_at %v is not now", again["issued_at"])
	}
	if other := login("repository:bob/app:pull,push"); other["token"] == first["token"] {
		t.Fatal("a different grant got the same token")
	}
	f.clock.Advance(25 * time.Second) // 35 s after signing: past the window
	if late := login("repository:bob/app:pull"); late["token"] == first["token"] || late["expires_in"] != float64(300) {
		t.Fatalf("after the window: same token %v, expires_in %v", late["token"] == first["token"], late["expires_in"])
	}
}

func TestNoReuseForMinimalLifetime(t *testing.T) {
	f := newFixture(t, 4, func(c *Config) { c.Expiration = MinExpiration })
	a := f.get(t, "service="+service+"&scope=repository:bob/app:pull", "bob", bobPW, "10.0.0.1")
	f.clock.Advance(time.Second)
	b := f.get(t, "service="+service+"&scope=repository:bob/app:pull", "bob", bobPW, "10.0.0.1")
	if body(t, a)["token"] == body(t, b)["token"] {
		t.Fatal("a 60 s token was reused: its client would hold it past its expiry")
	}
}
