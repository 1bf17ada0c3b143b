package tokenserver

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"
)

// attackResult is what one simulated brute force did.
type attackResult struct {
	checked   int // attacker's guesses whose password was checked (401)
	throttled int // attacker's guesses refused before any check (429)
	ownerOK   int // the owner's logins that succeeded
	ownerTry  int // the owner's logins during the attack
	// throttledTime is the real time the throttled guesses took to
	// answer, in all.
	throttledTime time.Duration
}

// bruteForce sends attempts wrong passwords for alice, one every step of
// the fixture's clock, from attacker(i); after every ownerEvery of them
// alice logs in with her password from owner(j). It fails the test on any
// answer other than 200, 401 or a well-formed 429.
func bruteForce(t testing.TB, f *fixture, attempts, ownerEvery int, step time.Duration, attacker, owner func(int) string) attackResult {
	t.Helper()
	const q = "account=alice&client_id=docker&offline_token=true&service=" + service
	var r attackResult
	for i := range attempts {
		start := time.Now()
		w := f.get(t, q, "alice", fmt.Sprintf("guess-%d", i), attacker(i))
		took := time.Since(start)
		switch w.Code {
		case 401:
			r.checked++
		case 429:
			r.throttled++
			r.throttledTime += took
			if ra, err := strconv.Atoi(w.Header().Get("Retry-After")); err != nil || ra < 1 {
				t.Fatalf("attempt %d: 429 with Retry-After %q", i, w.Header().Get("Retry-After"))
			}
		default:
			t.Fatalf("attempt %d: status %d %s", i, w.Code, w.Body.String())
		}
		if (i+1)%ownerEvery == 0 {
			w := f.get(t, q, "alice", alicePW, owner(r.ownerTry))
			r.ownerTry++
			switch w.Code {
			case 200:
				r.ownerOK++
			case 429:
			default:
				t.Fatalf("owner's login %d: status %d %s", r.ownerTry, w.Code, w.Body.String())
			}
		}
		f.clock.Advance(step)
	}
	return r
}

// TestOwnerLogsInDuringBruteForce reproduces issue 12's finding: during a
// brute force of 1,000 guesses at alice's password, alice's own logins
// from another address were all refused. Now they all succeed, whether she
// logs in from where she usually does or from addresses she never used,
// and the guesser still gets only the account's budget of checks.
func TestOwnerLogsInDuringBruteForce(t *testing.T) {
	const (
		attempts = 1000
		step     = 100 * time.Millisecond // 10 guesses a second, 100 s
		// The default budget: 5 failures, then one per 10 s.
		maxChecked = 5 + int(attempts*step/(10*time.Second)) + 1
	)
	attacker := func(int) string { return "203.0.113.66" }
	for _, tc := range []struct {
		name  string
		owner func(int) string
	}{
		{"from her usual address", func(int) string { return "198.51.100.10" }},
		{"from a new address each time", func(j int) string { return "198.51.100." + strconv.Itoa(100+j) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, 4)
			if w := f.get(t, "service="+service, "alice", alicePW, "198.51.100.10"); w.Code != 200 {
				t.Fatalf("alice's login before the attack: %d", w.Code)
			}
			r := bruteForce(t, f, attempts, 10, step, attacker, tc.owner)
			if r.ownerOK != r.ownerTry || r.ownerTry != attempts/10 {
				t.Errorf("alice logged in %d times out of %d during the attack", r.ownerOK, r.ownerTry)
			}
			if r.checked > maxChecked || r.checked+r.throttled != attempts {
				t.Errorf("attacker: %d guesses checked (at most %d allowed), %d throttled", r.checked, maxChecked, r.throttled)
			}
			// The access log says which count held a guess back, and
			// holds no password, guessed or right.
			log := f.log.String()
			if !strings.Contains(log, `"status":429`) || !strings.Contains(log, `"throttled":"account"`) {
				t.Error("the access log does not say why guesses were refused")
			}
			if strings.Contains(log, "guess-") || strings.Contains(log, alicePW) {
				t.Error("the access log holds a password")
			}
		})
	}
}

// TestOwnerLogsInDuringDistributedBruteForce: 1,000 guesses at alice, each
// from an address of its own. The guesses checked stay within the account's
// budget; alice still logs in from where she logged in before. From an
// address she never used she is refused too: such a login cannot be told
// from the guesses.
func TestOwnerLogsInDuringDistributedBruteForce(t *testing.T) {
	const (
		attempts   = 1000
		step       = 100 * time.Millisecond
		maxChecked = 5 + 10 + int(attempts*step/(10*time.Second)) + 1
	)
	attacker := func(i int) string { return fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255) }
	f := newFixture(t, 4)
	if w := f.get(t, "service="+service, "alice", alicePW, "198.51.100.10"); w.Code != 200 {
		t.Fatalf("alice's login before the attack: %d", w.Code)
	}
	r := bruteForce(t, f, attempts, 10, step, attacker, func(int) string { return "198.51.100.10" })
	if r.ownerOK != r.ownerTry {
		t.Errorf("alice logged in %d times out of %d from her usual address", r.ownerOK, r.ownerTry)
	}
	if r.checked > maxChecked {
		t.Errorf("attacker: %d guesses checked, at most %d allowed", r.checked, maxChecked)
	}
	if w := f.get(t, "service="+service, "alice", alicePW, "192.0.2.200"); w.Code != 429 {
		t.Errorf("alice from a new address while many addresses guess: %d, want 429", w.Code)
	}
}

// BenchmarkLoginAttack measures issue 12's brute force at bcrypt cost 10:
// 1,000 wrong passwords for alice, paced on the fixture's clock, while
// alice logs in with her password after every tenth guess. It reports the
// guesses whose password was checked per minute of attack, alice's
// successful logins out of her tries, and how long a throttled guess took
// to be answered. Run it with -benchtime=1x: one attack per scenario.
func BenchmarkLoginAttack(b *testing.B) {
	const attempts = 1000
	one := func(int) string { return "203.0.113.66" }
	many := func(i int) string { return fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255) }
	usual := func(int) string { return "198.51.100.10" }
	fresh := func(j int) string { return "198.51.100." + strconv.Itoa(100+j) }
	for _, sc := range []struct {
		name                string
		step                time.Duration
		attacker, owner     func(int) string
		ownerLoggedInBefore bool
	}{
		{"one address, 10 guesses/s, owner at her usual address", 100 * time.Millisecond, one, usual, true},
		{"one address, 10 guesses/s, owner at new addresses", 100 * time.Millisecond, one, fresh, false},
		{"one address, 1 guess/s, owner at new addresses", time.Second, one, fresh, false},
		{"1000 addresses, 10 guesses/s, owner at her usual address", 100 * time.Millisecond, many, usual, true},
		{"1000 addresses, 10 guesses/s, owner at new addresses", 100 * time.Millisecond, many, fresh, false},
	} {
		b.Run(sc.name, func(b *testing.B) {
			var r attackResult
			for b.Loop() {
				f := newFixture(b, benchCost, func(c *Config) { c.Logger = nil })
				if sc.ownerLoggedInBefore {
					if w := f.get(b, "service="+service, "alice", alicePW, usual(0)); w.Code != 200 {
						b.Fatal(w.Code)
					}
				}
				r = bruteForce(b, f, attempts, 10, sc.step, sc.attacker, sc.owner)
			}
			b.ReportMetric(float64(r.checked)/(attempts*sc.step).Minutes(), "checked/min")
			b.ReportMetric(float64(r.ownerOK), "owner-ok")
			b.ReportMetric(float64(r.ownerTry), "owner-tries")
			b.ReportMetric(float64(r.throttledTime.Nanoseconds())/float64(max(r.throttled, 1)), "ns/throttled")
		})
	}
}
