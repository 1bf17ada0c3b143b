package tokenserver

import (
	"hash/maphash"
	"net/netip"
	"sync"
	"time"
)

// ThrottleConfig limits password guessing at the login endpoints without
// letting the guessing lock the account's owner out.
//
// Every password check counts as a failure against the client address and
// against the account until it succeeds (a success takes its count back).
// Each count is a leaky bucket that forgets one failure every Interval.
// Before a password is checked, the login is refused with 429 and
// Retry-After, without running bcrypt, when:
//
//   - its address holds AddressBurst failures, whatever the accounts: one
//     address guessing, at one account or at many, gets AddressBurst checks
//     and then one per Interval;
//   - its account holds AccountBurst failures and its address is guessing
//     (it has failed three times lately, at any account; such strikes are
//     forgotten one per quarter of an hour): one account guessed at from a
//     few addresses gets AccountBurst checks and then one per Interval, all
//     addresses together;
//   - its account holds AccountBurst+CleanBurst failures, for addresses that
//     are not guessing: the owner logging in from elsewhere while someone
//     guesses is still checked, and slow guessing from many fresh addresses
//     stays bounded by the account's count;
//
// except that an address from which the account logged in successfully in
// the last 30 days (up to 8 addresses per account) is never held back by
// the account's count, only by its own, so that guessing from any number of
// addresses does not lock the owner out of the places she logs in from.
//
// IPv6 clients count per /64, which one subscriber usually holds whole. The
// client address is gin's ClientIP: the peer address unless
// Config.TrustedProxies vouch for a forwarded one. Refresh-token grants are
// never throttled. The zero value is the defaults below.
type ThrottleConfig struct {
	// AccountBurst is how many failures an account may hold before
	// addresses that are guessing are held back from it. Zero means 5.
	AccountBurst int `yaml:"accountburst"`
	// CleanBurst is how many more failures an account may hold before
	// addresses that are not guessing (and have never logged in to it) are
	// held back too. Zero means 10.
	CleanBurst int `yaml:"cleanburst"`
	// AddressBurst is how many failures one client address may hold, at
	// any accounts. Zero means 20.
	AddressBurst int `yaml:"addressburst"`
	// Interval is the time after which one failure of a count is
	// forgotten: the sustained rate of checks a throttled account or
	// address gets. Zero means 10 s.
	Interval time.Duration `yaml:"interval"`
}

// Fixed parts of the throttle's policy; ThrottleConfig documents them.
const (
	// suspectStrikes is the number of recent failures from which an
	// address counts as guessing: two typos do not make it so.
	suspectStrikes = 3
	// strikeInterval forgets one strike of an address. Long, so that an
	// address guessing slowly stays a guesser: to pass as clean on every
	// guess, a guesser needs about strikeInterval/Interval addresses.
	strikeInterval = 15 * time.Minute
	// knownFor is how long a successful login vouches for its address.
	knownFor = 30 * 24 * time.Hour
	// knownPerAccount bounds the addresses remembered per account; the
	// least recently used is forgotten first.
	knownPerAccount = 8
)

// Bounds on the throttle's tables, so that an attacker rotating addresses
// and user names cannot grow them without limit. Entries are small and of
// fixed size (account names are kept as 64-bit keyed hashes): all three
// full take about 13 MB (TestThrottleMemoryBound holds them to 20). A full
// table first drops its idle entries (at most one sweep per Interval), then
// an arbitrary one. Only checked failures add entries, at bcrypt's pace, and
// entries go idle within minutes, so the tables fill only under a flood
// from many thousands of addresses; what evicting an active entry gives
// such a flood back is one more burst for that key.
const (
	defaultMaxAccounts  = 1 << 16
	defaultMaxAddresses = 1 << 16
	defaultMaxKnown     = 1 << 14 // accounts with known addresses
)

// throttle implements ThrottleConfig. Times are kept as durations since
// base: small, and on the monotonic clock.
type throttle struct {
	cfg  ThrottleConfig
	now  func() time.Time
	base time.Time
	seed maphash.Seed

	mu        sync.Mutex
	accounts  table[uint64, bucket]
	addresses table[addrKey, addrCount]
	known     table[uint64, []knownAddr]
}

// table is a map with at most limit keys whose memory stays bounded while
// keys come and go: a Go map never shrinks and can keep growing under such
// churn, so the map is built afresh after every limit deletions.
type table[K comparable, V any] struct {
	m       map[K]V
	limit   int
	deleted int
	swept   time.Duration // last sweep, as a time since base; 0: none
	idle    func(v V, now time.Duration) bool
}

func newTable[K comparable, V any](limit int, idle func(V, time.Duration) bool) table[K, V] {
	return table[K, V]{m: map[K]V{}, limit: limit, idle: idle}
}

// put stores v under k, making room first if k is new and the table full:
// it drops the idle entries, unless it did so less than every ago (entries
// only go idle as time passes), and when none was idle, an arbitrary one.
func (t *table[K, V]) put(k K, v V, now, every time.Duration) {
	if _, ok := t.m[k]; !ok && len(t.m) >= t.limit {
		if t.swept == 0 || now-t.swept >= every {
			t.swept = max(now, 1)
			t.rebuild(func(v V) bool { return !t.idle(v, now) })
		}
		for victim := range t.m {
			if len(t.m) >= t.limit {
				t.delete(victim)
			}
			break
		}
	}
	t.m[k] = v
}

func (t *table[K, V]) delete(k K) {
	if _, ok := t.m[k]; !ok {
		return
	}
	delete(t.m, k)
	if t.deleted++; t.deleted >= t.limit {
		t.rebuild(func(V) bool { return true })
	}
}

// rebuild copies the entries to keep into a new map.
func (t *table[K, V]) rebuild(keep func(V) bool) {
	m := make(map[K]V, len(t.m))
	for k, v := range t.m {
		if keep(v) {
			m[k] = v
		}
	}
	t.m, t.deleted = m, 0
}

// bucket is a count of failures, as of at.
type bucket struct {
	level float64
	at    time.Duration
}

// addrCount is an address's failures (forgotten one per Interval) and its
// strikes (the same failures, forgotten one per strikeInterval), as of at.
type addrCount struct {
	level, strikes float64
	at             time.Duration
}

// knownAddr is an address the account last logged in from at at.
type knownAddr struct {
	addr addrKey
	at   time.Duration
}

// addrKey identifies a client: an IPv4 address, or the /64 of an IPv6
// address, in 16 bytes (IPv4 as IPv4-mapped IPv6, which no masked /64
// equals). Addresses that do not parse share the zero key.
type addrKey [16]byte

func keyOfAddress(address string) addrKey {
	a, err := netip.ParseAddr(address)
	if err != nil {
		return addrKey{}
	}
	a = a.WithZone("").Unmap()
	if a.Is6() {
		a = netip.PrefixFrom(a, 64).Masked().Addr()
	}
	return a.As16()
}

// An attempt is a login the throttle let through: it is charged as a
// failure until succeeded refunds it.
type attempt struct {
	account uint64
	address addrKey
}

// A refusal says why a login is held back and for how long.
type refusal struct {
	wait time.Duration // zero: not refused
	by   string        // "address" or "account"
}

func newThrottle(cfg ThrottleConfig, now func() time.Time) *throttle {
	if cfg.AccountBurst == 0 {
		cfg.AccountBurst = 5
	}
	if cfg.CleanBurst == 0 {
		cfg.CleanBurst = 10
	}
	if cfg.AddressBurst == 0 {
		cfg.AddressBurst = 20
	}
	if cfg.Interval == 0 {
		cfg.Interval = 10 * time.Second
	}
	t := &throttle{cfg: cfg, now: now, base: now(), seed: maphash.MakeSeed()}
	t.accounts = newTable[uint64](defaultMaxAccounts, func(b bucket, now time.Duration) bool {
		return drain(b.level, now-b.at, cfg.Interval) == 0
	})
	t.addresses = newTable[addrKey](defaultMaxAddresses, func(c addrCount, now time.Duration) bool {
		return drain(c.level, now-c.at, cfg.Interval) == 0 && drain(c.strikes, now-c.at, strikeInterval) == 0
	})
	t.known = newTable[uint64](defaultMaxKnown, func(list []knownAddr, now time.Duration) bool {
		for _, k := range list {
			if now-k.at < knownFor {
				return false
			}
		}
		return true
	})
	return t
}

// drain is level after elapsed, forgetting one per every.
func drain(level float64, elapsed, every time.Duration) float64 {
	if elapsed <= 0 {
		return level
	}
	return max(0, level-float64(elapsed)/float64(every))
}

// over is how long until level, forgotten one per every, is at most
// limit-1: zero when it already is.
func over(level float64, limit int, every time.Duration) time.Duration {
	excess := level - float64(limit-1)
	if excess <= 0 {
		return 0
	}
	return max(time.Duration(excess*float64(every)), 1)
}

func (t *throttle) account(key uint64, now time.Duration) bucket {
	b := t.accounts.m[key]
	return bucket{level: drain(b.level, now-b.at, t.cfg.Interval), at: now}
}

func (t *throttle) address(key addrKey, now time.Duration) addrCount {
	c := t.addresses.m[key]
	return addrCount{
		level:   drain(c.level, now-c.at, t.cfg.Interval),
		strikes: drain(c.strikes, now-c.at, strikeInterval),
		at:      now,
	}
}

func (t *throttle) isKnown(a attempt, now time.Duration) bool {
	for _, k := range t.known.m[a.account] {
		if k.addr == a.address && now-k.at < knownFor {
			return true
		}
	}
	return false
}

// admit decides whether a login for account from address may have its
// password checked. If so, it charges the attempt as a failure (so that
// concurrent guesses count before they are checked) and returns it for
// succeeded; if not, the refusal says for how long.
func (t *throttle) admit(account, address string) (attempt, refusal) {
	a := attempt{account: maphash.String(t.seed, account), address: keyOfAddress(address)}
	now := t.now().Sub(t.base)
	t.mu.Lock()
	defer t.mu.Unlock()
	addr, acct := t.address(a.address, now), t.account(a.account, now)
	if w := over(addr.level, t.cfg.AddressBurst, t.cfg.Interval); w > 0 {
		return attempt{}, refusal{wait: w, by: "address"}
	}
	if !t.isKnown(a, now) {
		limit := t.cfg.AccountBurst
		if guessing := addr.strikes > suspectStrikes-1; !guessing {
			limit += t.cfg.CleanBurst
		}
		if w := over(acct.level, limit, t.cfg.Interval); w > 0 {
			return attempt{}, refusal{wait: w, by: "account"}
		}
	}
	addr.level++
	addr.strikes++
	acct.level++
	t.addresses.put(a.address, addr, now, t.cfg.Interval)
	t.accounts.put(a.account, acct, now, t.cfg.Interval)
	return a, refusal{}
}

// succeeded takes back the charge of a, whose password was right, and
// remembers its address as one the account logs in from.
func (t *throttle) succeeded(a attempt) {
	now := t.now().Sub(t.base)
	t.mu.Lock()
	defer t.mu.Unlock()
	if addr := t.address(a.address, now); addr.level <= 1 && addr.strikes <= 1 {
		t.addresses.delete(a.address)
	} else {
		addr.level, addr.strikes = max(0, addr.level-1), max(0, addr.strikes-1)
		t.addresses.put(a.address, addr, now, t.cfg.Interval)
	}
	if acct := t.account(a.account, now); acct.level <= 1 {
		t.accounts.delete(a.account)
	} else {
		acct.level--
		t.accounts.put(a.account, acct, now, t.cfg.Interval)
	}
	t.remember(a, now)
}

// remember records a successful login of a's account from a's address,
// forgetting the account's least recent address if it knows too many.
func (t *throttle) remember(a attempt, now time.Duration) {
	list := t.known.m[a.account]
	oldest := 0
	for i, k := range list {
		if k.addr == a.address {
			list[i].at = now
			return
		}
		if k.at < list[oldest].at {
			oldest = i
		}
	}
	if len(list) == knownPerAccount {
		list[oldest] = knownAddr{addr: a.address, at: now}
		return
	}
	t.known.put(a.account, append(list, knownAddr{addr: a.address, at: now}), now, t.cfg.Interval)
}
