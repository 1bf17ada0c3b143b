package auth

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/berth-registry/berth/internal/osfile"
)

// ErrBadCredentials is the one error Authenticate returns for an unknown user
// and for a wrong password alike.
var ErrBadCredentials = errors.New("invalid user name or password")

// Defaults of UserStoreConfig.
const (
	// DefaultPollInterval is how often the htpasswd file is checked.
	DefaultPollInterval = 2 * time.Second
	// DefaultCacheTTL is how long a successful password check is cached.
	DefaultCacheTTL = 60 * time.Second

	maxCacheEntries = 10000
	settleTime      = 200 * time.Millisecond
)

// UserStoreConfig configures a UserStore.
type UserStoreConfig struct {
	// Path is the htpasswd file. A missing file means no users (only
	// anonymous access) until it appears.
	Path string
	// Logger receives reload events and errors. Nil discards them.
	Logger *slog.Logger
	// PollInterval is how often Watch checks the file's size, modification
	// time and identity. Zero means DefaultPollInterval.
	PollInterval time.Duration
	// CacheTTL is how long a successful user+password check is remembered,
	// so repeated logins skip bcrypt. The cache is keyed by an HMAC with a
	// per-process random secret (never the password itself) and dropped
	// whenever the file changes. Zero means DefaultCacheTTL; negative
	// disables the cache.
	CacheTTL time.Duration
}

// UserStore authenticates users against an htpasswd file, reloading it when
// it changes. It is safe for concurrent use.
type UserStore struct {
	cfg    UserStoreConfig
	log    *slog.Logger
	secret []byte
	snap   atomic.Pointer[userSnapshot]

	mu      sync.Mutex // guards dummies and seen
	dummies map[int][]byte
	seen    os.FileInfo // last stat looked at, loaded or not
	// seenSettled: when seen was taken, its modification time was older
	// than settleTime, so a later write shows as another time. A write in
	// the same clock tick as the one seen can leave size and time as they
	// were, and on Windows os.SameFile looks the file up by name when it
	// compares, so a replaced file can look the same.
	seenSettled bool
}

type userSnapshot struct {
	users map[string][]byte // bcrypt hashes of usable entries
	sum   [32]byte          // of the file content
	dummy []byte            // bcrypt hash compared for unknown users

	mu    sync.Mutex
	cache map[[32]byte]time.Time // successful checks → expiry
}

// NewUserStore loads the file. A missing file is an empty user set; a file
// that does not parse is an error.
func NewUserStore(cfg UserStoreConfig) (*UserStore, error) {
	if cfg.PollInterval == 0 {
		cfg.PollInterval = DefaultPollInterval
	}
	if cfg.CacheTTL == 0 {
		cfg.CacheTTL = DefaultCacheTTL
	}
	s := &UserStore{cfg: cfg, log: cfg.Logger, secret: make([]byte, 32), dummies: map[int][]byte{}}
	if s.log == nil {
		s.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if _, err := rand.Read(s.secret); err != nil {
		return nil, err
	}
	if _, err := s.Reload(); err != nil {
		return nil, err
	}
	return s, nil
}

// Reload reads the file now and, when its content changed and parses,
// replaces the users (dropping the credential cache). On a parse error the
// previous users stay in force and the error is returned.
func (s *UserStore) Reload() (changed bool, err error) {
	fi, statErr := os.Stat(s.cfg.Path)
	s.mu.Lock()
	s.seen, s.seenSettled = fi, fi == nil || !recent(fi.ModTime())
	s.mu.Unlock()
	var data []byte
	switch {
	case errors.Is(statErr, os.ErrNotExist):
		if s.snap.Load() == nil {
			s.log.Warn("htpasswd file not found: no users until it is created", "path", s.cfg.Path)
		}
	case statErr != nil:
		return false, statErr
	default:
		if data, err = osfile.ReadFile(s.cfg.Path); err != nil {
			return false, err
		}
	}
	sum := sha256.Sum256(data)
	if old := s.snap.Load(); old != nil && old.sum == sum {
		return false, nil
	}
	h, err := ParseHtpasswd(data)
	if err != nil {
		return false, err
	}
	snap := &userSnapshot{users: map[string][]byte{}, sum: sum, cache: map[[32]byte]time.Time{}}
	costs := map[int]int{}
	for _, l := range h.lines {
		if l.user == "" || hashFormat(l.hash) != "bcrypt" {
			continue
		}
		snap.users[l.user] = []byte(l.hash)
		c, _ := bcrypt.Cost([]byte(l.hash))
		costs[c]++
	}
	for _, e := range h.Unsupported() {
		s.log.Error("htpasswd entry refused", "path", s.cfg.Path, "error", e.Error())
	}
	cost, n := DefaultBcryptCost, 0
	for c, k := range costs {
		if k > n || k == n && c > cost {
			cost, n = c, k
		}
	}
	if snap.dummy, err = s.dummyHash(cost); err != nil {
		return false, err
	}
	s.snap.Store(snap)
	s.log.Info("htpasswd loaded", "path", s.cfg.Path, "users", len(snap.users))
	return true, nil
}

// dummyHash returns a bcrypt hash of a random password at cost, so unknown
// users cost as much as the most common entry of the file.
func (s *UserStore) dummyHash(cost int) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if d, ok := s.dummies[cost]; ok {
		return d, nil
	}
	d, err := bcrypt.GenerateFromPassword([]byte(NewID()), cost)
	if err != nil {
		return nil, err
	}
	s.dummies[cost] = d
	return d, nil
}

// Watch polls the file every PollInterval until ctx is done and reloads it
// when its size, modification time or identity changes. A file that does
// not parse is logged and the last good users are kept.
func (s *UserStore) Watch(ctx context.Context) {
	t := time.NewTicker(s.cfg.PollInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		fi, err := os.Stat(s.cfg.Path)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			s.log.Error("htpasswd stat failed", "path", s.cfg.Path, "error", err)
			continue
		}
		s.mu.Lock()
		same := sameStat(s.seen, fi) && s.seenSettled
		s.mu.Unlock()
		if same || fi != nil && recent(fi.ModTime()) {
			// Unchanged, or written a moment ago by a tool that
			// truncates and rewrites in place: look again next tick.
			continue
		}
		if _, err := s.Reload(); err != nil {
			s.log.Error("htpasswd reload failed; keeping the last good users", "path", s.cfg.Path, "error", err)
		}
	}
}

func recent(t time.Time) bool {
	d := time.Since(t)
	return d >= 0 && d < settleTime
}

func sameStat(a, b os.FileInfo) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return os.SameFile(a, b) && a.Size() == b.Size() && a.ModTime().Equal(b.ModTime())
}

// Authenticate checks a user name and password. Unknown users are compared
// against a dummy bcrypt hash so they take as long as known ones, and both
// failures return ErrBadCredentials.
func (s *UserStore) Authenticate(user, password string) error {
	snap := s.snap.Load()
	var key [32]byte
	if s.cfg.CacheTTL > 0 {
		key = s.cacheKey(user, password)
		snap.mu.Lock()
		exp, ok := snap.cache[key]
		snap.mu.Unlock()
		if ok && time.Now().Before(exp) {
			return nil
		}
	}
	hash, known := snap.users[user]
	if !known {
		hash = snap.dummy
	}
	err := bcrypt.CompareHashAndPassword(hash, []byte(password))
	if err != nil || !known {
		return ErrBadCredentials
	}
	if s.cfg.CacheTTL > 0 {
		snap.remember(key, time.Now().Add(s.cfg.CacheTTL))
	}
	return nil
}

func (s *UserStore) cacheKey(user, password string) [32]byte {
	m := hmac.New(sha256.New, s.secret)
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(len(user)))
	m.Write(n[:])
	m.Write([]byte(user))
	m.Write([]byte(password))
	var k [32]byte
	m.Sum(k[:0])
	return k
}

func (snap *userSnapshot) remember(key [32]byte, exp time.Time) {
	snap.mu.Lock()
	defer snap.mu.Unlock()
	if len(snap.cache) >= maxCacheEntries {
		now := time.Now()
		for k, e := range snap.cache {
			if now.After(e) {
				delete(snap.cache, k)
			}
		}
		if len(snap.cache) >= maxCacheEntries {
			return
		}
	}
	snap.cache[key] = exp
}

// Lookup returns the stored bcrypt hash of user, if the user exists with a
// usable hash. The token server binds refresh tokens to it, so they stop
// working when the user is removed or the password changes.
func (s *UserStore) Lookup(user string) (hash string, ok bool) {
	h, ok := s.snap.Load().users[user]
	return string(h), ok
}

// Len is the number of users who can log in.
func (s *UserStore) Len() int { return len(s.snap.Load().users) }
