package auth

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-registry/berth/internal/testutil"
)

// syncWriter makes a strings.Builder safe for a logger used from Watch.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

func newTestLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(&syncWriter{w: w}, nil))
}

func writeUsers(t *testing.T, path string, cost int, userPw ...string) {
	t.Helper()
	var h Htpasswd
	for i := 0; i < len(userPw); i += 2 {
		if err := h.SetPassword(userPw[i], userPw[i+1], cost); err != nil {
			t.Fatal(err)
		}
	}
	if err := h.WriteFile(path); err != nil {
		t.Fatal(err)
	}
}

// eventually polls cond for up to 5 s.
func eventually(t *testing.T, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for time.Since(start) < 5*time.Second {
		if cond() {
			return time.Since(start)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s: not within 5 s", what)
	return 0
}

func TestUserStoreReloadsChangedFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "htpasswd")
	writeUsers(t, path, 4, "alice", "one")
	s, err := NewUserStore(UserStoreConfig{Path: path, PollInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go s.Watch(ctx)
	if err := s.Authenticate("alice", "one"); err != nil {
		t.Fatal(err)
	}
	// Same length, same user, new password: only the content differs.
	writeUsers(t, path, 4, "alice", "two", "bob", "three")
	took := eventually(t, "new password accepted", func() bool { return s.Authenticate("alice", "two") == nil })
	if err := s.Authenticate("alice", "one"); !errors.Is(err, ErrBadCredentials) {
		t.Fatalf("old password still accepted after reload (cached?): %v", err)
	}
	if err := s.Authenticate("bob", "three"); err != nil {
		t.Fatal(err)
	}
	t.Logf("reloaded %v after the write", took)
	if DefaultPollInterval > 3*time.Second {
		t.Fatalf("default poll interval %v is more than a few seconds", DefaultPollInterval)
	}
	// Removal of the file removes the users.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	eventually(t, "users gone with the file", func() bool { return s.Len() == 0 })
}

func TestUserStoreCorruptFileKeepsLastGoodUsers(t *testing.T) {
	path := filepath.Join(t.TempDir(), "htpasswd")
	writeUsers(t, path, 4, "alice", "one")
	log := &testutil.Buffer{}
	s, err := NewUserStore(UserStoreConfig{Path: path, PollInterval: 20 * time.Millisecond, Logger: newTestLogger(log)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go s.Watch(ctx)

	data, _ := os.ReadFile(path)
	corrupt := string(data) + "bob-without-a-hash\n"
	if err := os.WriteFile(path, []byte(corrupt), 0o600); err != nil {
		t.Fatal(err)
	}
	eventually(t, "error logged", func() bool { return strings.Contains(log.String(), "keeping the last good users") })
	if err := s.Authenticate("alice", "one"); err != nil {
		t.Fatalf("last good users lost: %v", err)
	}
	if !strings.Contains(log.String(), "level=ERROR") || !strings.Contains(log.String(), "line 2") {
		t.Fatalf("log:\n%s", log.String())
	}
	// A repaired file is picked up.
	writeUsers(t, path, 4, "alice", "one", "bob", "b")
	eventually(t, "repaired file loaded", func() bool { return s.Authenticate("bob", "b") == nil })

	// A corrupt file at start-up is an error, not an empty user set.
	if err := os.WriteFile(path, []byte(corrupt), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := NewUserStore(UserStoreConfig{Path: path}); err == nil {
		t.Fatal("corrupt file accepted at start")
	}
}

func TestUserStoreMissingFileStartsEmpty(t *testing.T) {
	path := filepath.Join(t.TempDir(), "htpasswd")
	s, err := NewUserStore(UserStoreConfig{Path: path, PollInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if s.Len() != 0 || !errors.Is(s.Authenticate("alice", "x"), ErrBadCredentials) {
		t.Fatal("users without a file")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go s.Watch(ctx)
	writeUsers(t, path, 4, "alice", "x")
	eventually(t, "file created later", func() bool { return s.Authenticate("alice", "x") == nil })
}

func TestUserStoreCredentialCache(t *testing.T) {
	path := filepath.Join(t.TempDir(), "htpasswd")
	writeUsers(t, path, 8, "alice", "pw") // ≈ 15 ms per check, far more under -race
	s, err := NewUserStore(UserStoreConfig{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := s.Authenticate("alice", "pw"); err != nil {
		t.Fatal(err)
	}
	first := time.Since(start)
	start = time.Now()
	for range 100 {
		if err := s.Authenticate("alice", "pw"); err != nil {
			t.Fatal(err)
		}
	}
	cached := time.Since(start) / 100
	if cached*20 > first {
		t.Fatalf("cached check %v is not much faster than bcrypt %v", cached, first)
	}
	// Wrong passwords are never cached, and never accepted.
	if err := s.Authenticate("alice", "PW"); !errors.Is(err, ErrBadCredentials) {
		t.Fatal(err)
	}
	// The cache goes with the file.
	writeUsers(t, path, 4, "alice", "new")
	if changed, err := s.Reload(); err != nil || !changed {
		t.Fatalf("reload: %v %v", changed, err)
	}
	if err := s.Authenticate("alice", "pw"); !errors.Is(err, ErrBadCredentials) {
		t.Fatalf("cached old password accepted after the file changed: %v", err)
	}
}

func TestUserStoreUnknownUserCostsTheSame(t *testing.T) {
	path := filepath.Join(t.TempDir(), "htpasswd")
	writeUsers(t, path, 8, "alice", "pw", "bob", "pw2")
	s, err := NewUserStore(UserStoreConfig{Path: path, CacheTTL: -1})
	if err != nil {
		t.Fatal(err)
	}
	fastest := func(user string) time.Duration {
		best := time.Hour
		for range 3 {
			start := time.Now()
			if err := s.Authenticate(user, "wrong"); !errors.Is(err, ErrBadCredentials) {
				t.Fatalf("%s: %v", user, err)
			}
			best = min(best, time.Since(start))
		}
		return best
	}
	known, unknown := fastest("alice"), fastest("nobody")
	t.Logf("wrong password: known user %v, unknown user %v", known, unknown)
	if unknown < known*6/10 {
		t.Fatalf("unknown user answered in %v, known in %v: user existence leaks through timing", unknown, known)
	}
	if e1, e2 := s.Authenticate("alice", "wrong"), s.Authenticate("nobody", "wrong"); e1.Error() != e2.Error() {
		t.Fatalf("errors differ: %v / %v", e1, e2)
	}
}
