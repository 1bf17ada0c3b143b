package tokenserver

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// newTestThrottle returns a throttle with cfg's limits (zero: the
// defaults) on a clock that moves only when told to.
func newTestThrottle(cfg ThrottleConfig) (*throttle, *clock) {
	c := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	return newThrottle(cfg, c.Now), c
}

// guess is a wrong password for account from address: it reports whether
// the password was checked. A checked wrong password stays charged.
func guess(th *throttle, account, address string) bool {
	_, r := th.admit(account, address)
	return r.wait == 0
}

// logIn is a right password: it reports whether it was checked (and so
// succeeded).
func logIn(th *throttle, account, address string) bool {
	a, r := th.admit(account, address)
	if r.wait > 0 {
		return false
	}
	th.succeeded(a)
	return true
}

func v4(i int) string { return fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255) }

// TestThrottleBounds pins how many guesses each kind of attacker gets
// checked with the default limits (AccountBurst 5, CleanBurst 10,
// AddressBurst 20, Interval 10 s): a burst, then one per Interval.
func TestThrottleBounds(t *testing.T) {
	tests := []struct {
		name     string
		every    time.Duration // one guess every
		for_     time.Duration
		who      func(i int) (account, address string)
		min, max int
	}{
		{"one address, one account", 100 * time.Millisecond, 10 * time.Minute,
			func(int) (string, string) { return "alice", "203.0.113.66" }, 60, 5 + 60 + 1},
		{"one address, a new account each time", 100 * time.Millisecond, 10 * time.Minute,
			func(i int) (string, string) { return "user" + strconv.Itoa(i), "203.0.113.66" }, 60, 20 + 60 + 1},
		{"one IPv6 /64, a new address in it each time", 100 * time.Millisecond, 10 * time.Minute,
			func(i int) (string, string) { return "alice", fmt.Sprintf("2001:db8:1:2:%x::1", i) }, 60, 5 + 60 + 1},
		{"a new address each time", 100 * time.Millisecond, 10 * time.Minute,
			func(i int) (string, string) { return "alice", v4(i) }, 60, 5 + 10 + 60 + 1},
		{"1,000 addresses taking turns, each every 100 s", 100 * time.Millisecond, 10 * time.Minute,
			func(i int) (string, string) { return "alice", v4(i % 1000) }, 60, 5 + 10 + 60 + 1},
		{"slow: 100,000 addresses, one guess every 5 s for a day", 5 * time.Second, 24 * time.Hour,
			func(i int) (string, string) { return "alice", v4(i % 100000) }, 8640, 5 + 10 + 8640 + 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			th, clk := newTestThrottle(ThrottleConfig{})
			checked := 0
			for i := range int(tt.for_ / tt.every) {
				account, address := tt.who(i)
				if guess(th, account, address) {
					checked++
				}
				clk.Advance(tt.every)
			}
			if checked < tt.min || checked > tt.max {
				t.Fatalf("%d guesses checked in %v, want %d to %d", checked, tt.for_, tt.min, tt.max)
			}
		})
	}
}

// TestThrottleConcurrentGuesses: guesses sent all at once are charged when
// they are let through, before their passwords are checked, so they get
// no more checks than guesses sent one after the other.
func TestThrottleConcurrentGuesses(t *testing.T) {
	th, _ := newTestThrottle(ThrottleConfig{})
	var checked atomic.Int32
	var wg sync.WaitGroup
	for range 200 {
		wg.Go(func() {
			if guess(th, "alice", "203.0.113.66") {
				checked.Add(1)
			}
		})
	}
	wg.Wait()
	if n := checked.Load(); n != 5 {
		t.Fatalf("%d concurrent guesses checked, want AccountBurst = 5", n)
	}
}

// TestThrottleOwner pins who gets through while alice's account is under
// attack.
func TestThrottleOwner(t *testing.T) {
	t.Run("typos during a guessing attack", func(t *testing.T) {
		th, clk := newTestThrottle(ThrottleConfig{})
		for range 100 {
			guess(th, "alice", "203.0.113.66")
			clk.Advance(time.Second)
		}
		// Alice, at a new laptop, types her password wrong twice:
		// two typos do not make her address a guesser's.
		for typo := range 2 {
			if !guess(th, "alice", "198.51.100.10") {
				t.Fatalf("alice's typo %d was not checked", typo+1)
			}
		}
		if !logIn(th, "alice", "198.51.100.10") {
			t.Fatal("alice's right password after two typos was refused")
		}
		if guess(th, "alice", "203.0.113.66") {
			t.Fatal("the guesser was let through after alice's login")
		}
	})
	t.Run("known addresses", func(t *testing.T) {
		th, clk := newTestThrottle(ThrottleConfig{})
		for i := range 9 { // the first is forgotten: 8 per account
			if !logIn(th, "alice", "198.51.100."+strconv.Itoa(i)) {
				t.Fatalf("login %d", i)
			}
			clk.Advance(time.Minute)
		}
		for i := range 20 { // many addresses use up the clean allowance
			guess(th, "alice", v4(i))
		}
		if logIn(th, "alice", "192.0.2.1") {
			t.Fatal("a new address got through after the clean allowance was used up")
		}
		if logIn(th, "alice", "198.51.100.0") {
			t.Fatal("the least recent of 9 addresses is still known")
		}
		for i := 1; i < 9; i++ {
			if !logIn(th, "alice", "198.51.100."+strconv.Itoa(i)) {
				t.Fatalf("known address %d refused", i)
			}
		}
		if !logIn(th, "bob", "198.51.100.1") {
			t.Fatal("another account refused")
		}
		// A known address that guesses is still held back by its own
		// count.
		for range 20 {
			guess(th, "alice", "198.51.100.2")
		}
		if logIn(th, "alice", "198.51.100.2") {
			t.Fatal("a known address past AddressBurst was let through")
		}
		// Known addresses are forgotten after 30 days without a login.
		clk.Advance(knownFor)
		for i := range 20 {
			guess(th, "alice", v4(1000+i))
		}
		if logIn(th, "alice", "198.51.100.3") {
			t.Fatal("an address known 30 days ago still passes")
		}
	})
}

func TestKeyOfAddress(t *testing.T) {
	same := [][2]string{
		{"192.0.2.1", "::ffff:192.0.2.1"},
		{"2001:db8:1:2::1", "2001:db8:1:2:ffff:ffff:ffff:ffff"},
		{"fe80::1%eth0", "fe80::2"},
		{"not an address", ""},
	}
	for _, p := range same {
		if keyOfAddress(p[0]) != keyOfAddress(p[1]) {
			t.Errorf("%q and %q count apart", p[0], p[1])
		}
	}
	for _, p := range [][2]string{
		{"192.0.2.1", "192.0.2.2"},
		{"2001:db8:1:2::1", "2001:db8:1:3::1"},
		{"0.0.0.0", "::"},
		{"192.0.2.1", "not an address"},
	} {
		if keyOfAddress(p[0]) == keyOfAddress(p[1]) {
			t.Errorf("%q and %q count together", p[0], p[1])
		}
	}
}

// TestThrottleBehindProxy: behind a reverse proxy listed in TrustedProxies
// the throttle counts the clients the proxy names, so a guesser does not
// hold alice back. Unlisted, the proxy is every client's address, and the
// guesser holds back everyone behind it.
func TestThrottleBehindProxy(t *testing.T) {
	for _, trusted := range []bool{true, false} {
		f := newFixture(t, 4, func(c *Config) {
			if trusted {
				c.TrustedProxies = []string{"10.0.0.0/8"}
			}
		})
		send := func(password, client string) int {
			req := httptest.NewRequest(http.MethodGet, "/token?service="+service, nil)
			req.SetBasicAuth("alice", password)
			req.Header.Set("X-Forwarded-For", client)
			return f.do(req, "10.0.0.1").Code
		}
		for range 50 {
			send("guess", "203.0.113.66")
		}
		want := map[bool]int{true: 200, false: 429}[trusted]
		if got := send(alicePW, "198.51.100.10"); got != want {
			t.Errorf("proxy trusted: %v: alice's login %d, want %d", trusted, got, want)
		}
	}
}

// TestThrottleMemoryBound: an attacker rotating addresses and user names
// does not grow the throttle's tables past their limits, and idle entries
// are dropped when a table fills up.
func TestThrottleMemoryBound(t *testing.T) {
	t.Run("small limits", func(t *testing.T) {
		th, clk := newTestThrottle(ThrottleConfig{})
		th.accounts.limit, th.addresses.limit, th.known.limit = 100, 150, 50
		for i := range 10000 {
			guess(th, "user"+strconv.Itoa(i), v4(i))
			logIn(th, "member"+strconv.Itoa(i), v4(i+1<<20))
			if len(th.accounts.m) > 100 || len(th.addresses.m) > 150 || len(th.known.m) > 50 {
				t.Fatalf("after %d: %d accounts, %d addresses, %d known", i, len(th.accounts.m), len(th.addresses.m), len(th.known.m))
			}
		}
		// Once everything is idle, the next new key sweeps the table.
		clk.Advance(strikeInterval + knownFor)
		guess(th, "late", "192.0.2.1")
		logIn(th, "late member", "192.0.2.2")
		if len(th.accounts.m) != 1 || len(th.addresses.m) != 1 || len(th.known.m) != 1 {
			t.Fatalf("after a sweep: %d accounts, %d addresses, %d known", len(th.accounts.m), len(th.addresses.m), len(th.known.m))
		}
	})
	t.Run("default limits", func(t *testing.T) {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		th, _ := newTestThrottle(ThrottleConfig{})
		long := string(make([]byte, 4096)) // long names are kept as hashes
		for i := range 150000 {
			guess(th, long+strconv.Itoa(i), v4(i))
			// 18,750 accounts log in from 8 addresses each.
			logIn(th, "member"+strconv.Itoa(i/8), fmt.Sprintf("2001:db8:%x::1", i))
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		if len(th.accounts.m) > defaultMaxAccounts || len(th.addresses.m) > defaultMaxAddresses || len(th.known.m) > defaultMaxKnown {
			t.Fatalf("%d accounts, %d addresses, %d known", len(th.accounts.m), len(th.addresses.m), len(th.known.m))
		}
		const limit = 20 << 20
		if grown := int64(after.HeapAlloc) - int64(before.HeapAlloc); grown > limit {
			t.Fatalf("the throttle holds %d MB, more than %d MB", grown>>20, limit>>20)
		}
		runtime.KeepAlive(th)
	})
	t.Run("churn", func(t *testing.T) {
		// A Go map that keeps its number of keys but sees millions of
		// them come and go grows (by 2 MB here) unless rebuilt.
		tb := newTable[addrKey](4096, func(addrCount, time.Duration) bool { return false })
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		for i := range 2000000 {
			var k addrKey
			k[0], k[1], k[2] = byte(i), byte(i>>8), byte(i>>16)
			tb.put(k, addrCount{}, time.Duration(i), time.Hour)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		if grown := int64(after.HeapAlloc) - int64(before.HeapAlloc); len(tb.m) != 4096 || grown > 1<<20 {
			t.Fatalf("%d keys in %d bytes", len(tb.m), grown)
		}
		runtime.KeepAlive(tb.m)
	})
}
