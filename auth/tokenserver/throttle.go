package tokenserver

import (
	"sync"
	"time"
)

// ThrottleConfig limits failed logins, per account and per client address.
// Each failure fills a bucket that drains by one every Interval; while a
// bucket holds Burst failures, logins for that key get 429 with
// Retry-After, before any password check. Successful logins add nothing,
// and refresh-token grants are never throttled.
type ThrottleConfig struct {
	// AccountBurst is the number of failures in a row an account may
	// have. Zero means 5.
	AccountBurst int `yaml:"accountburst"`
	// AddressBurst is the same for one client address. Zero means 20.
	AddressBurst int `yaml:"addressburst"`
	// Interval is the time after which one failure is forgotten. Zero
	// means 10 s.
	Interval time.Duration `yaml:"interval"`
}

const maxThrottleKeys = 100000

type throttle struct {
	cfg ThrottleConfig
	now func() time.Time

	mu        sync.Mutex
	accounts  map[string]bucket
	addresses map[string]bucket
}

type bucket struct {
	level float64 // failures not yet forgotten, as of at
	at    time.Time
}

func newThrottle(cfg ThrottleConfig, now func() time.Time) *throttle {
	if cfg.AccountBurst == 0 {
		cfg.AccountBurst = 5
	}
	if cfg.AddressBurst == 0 {
		cfg.AddressBurst = 20
	}
	if cfg.Interval == 0 {
		cfg.Interval = 10 * time.Second
	}
	return &throttle{cfg: cfg, now: now, accounts: map[string]bucket{}, addresses: map[string]bucket{}}
}

// level is the bucket's content at now.
func (t *throttle) level(b bucket, now time.Time) float64 {
	return max(0, b.level-float64(now.Sub(b.at))/float64(t.cfg.Interval))
}

// waitFor is how long until the bucket holds fewer than burst failures.
func (t *throttle) waitFor(m map[string]bucket, key string, burst int, now time.Time) time.Duration {
	b, ok := m[key]
	if !ok {
		return 0
	}
	excess := t.level(b, now) - float64(burst-1)
	if excess <= 0 {
		return 0
	}
	return time.Duration(excess * float64(t.cfg.Interval))
}

// maxKeyLen bounds the memory of one account key: user names are at most
// 255 bytes, longer ones can only fail.
const maxKeyLen = 256

func clip(account string) string {
	if len(account) > maxKeyLen {
		return account[:maxKeyLen]
	}
	return account
}

// wait returns how long a login for account from address must wait; zero
// means go ahead.
func (t *throttle) wait(account, address string) time.Duration {
	account = clip(account)
	now := t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	return max(t.waitFor(t.accounts, account, t.cfg.AccountBurst, now),
		t.waitFor(t.addresses, address, t.cfg.AddressBurst, now))
}

// failed records a failed login.
func (t *throttle) failed(account, address string) {
	account = clip(account)
	now := t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	t.add(t.accounts, account, now)
	t.add(t.addresses, address, now)
}

func (t *throttle) add(m map[string]bucket, key string, now time.Time) {
	if _, ok := m[key]; !ok && len(m) >= maxThrottleKeys {
		for k, b := range m {
			if t.level(b, now) == 0 {
				delete(m, k)
			}
		}
		if len(m) >= maxThrottleKeys {
			return // full of active keys: the other map still limits
		}
	}
	m[key] = bucket{level: t.level(m[key], now) + 1, at: now}
}
