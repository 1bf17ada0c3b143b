package auth

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"

	"github.com/berth-registry/berth/internal/testutil"
)

// apacheHtpasswd returns the path of Apache's htpasswd (Debian package
// apache2-utils). Under CI=true a missing tool fails the test.
func apacheHtpasswd(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("htpasswd")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("htpasswd not found: CI must install apache2-utils")
		}
		t.Skip("htpasswd (apache2-utils) not installed")
	}
	return p
}

func TestHtpasswdApacheRoundTrip(t *testing.T) {
	bin := apacheHtpasswd(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "htpasswd")

	// Apache writes two users; we read them and check their passwords.
	for i, up := range [][2]string{{"alice", "wonder land"}, {"bob", "b0b:pass"}} {
		args := []string{"-B", "-b", "-C", "5", path, up[0], up[1]}
		if i == 0 {
			args = append([]string{"-c"}, args...)
		}
		if out, err := exec.Command(bin, args...).CombinedOutput(); err != nil {
			t.Fatalf("htpasswd: %v: %s", err, out)
		}
	}
	h, err := ReadHtpasswd(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(h.Users(), ","); got != "alice,bob" {
		t.Fatalf("users %s", got)
	}
	hash, _ := h.Hash("alice")
	if !strings.HasPrefix(hash, "$2y$05$") {
		t.Fatalf("Apache wrote %q, expected $2y$05$", hash)
	}
	store, err := NewUserStore(UserStoreConfig{Path: path, CacheTTL: -1})
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Authenticate("alice", "wonder land"); err != nil {
		t.Fatalf("Apache's hash for alice: %v", err)
	}
	if err := store.Authenticate("bob", "b0b:pass"); err != nil {
		t.Fatalf("Apache's hash for bob: %v", err)
	}

	// We change bob and add carol; Apache verifies our hashes and keeps
	// alice's entry untouched.
	if err := h.SetPassword("bob", "new-bob", 6); err != nil {
		t.Fatal(err)
	}
	if err := h.SetPassword("carol", "c4rol", 0); err != nil {
		t.Fatal(err)
	}
	if err := h.WriteFile(path); err != nil {
		t.Fatal(err)
	}
	for _, up := range [][2]string{{"alice", "wonder land"}, {"bob", "new-bob"}, {"carol", "c4rol"}} {
		if out, err := exec.Command(bin, "-v", "-b", path, up[0], up[1]).CombinedOutput(); err != nil {
			t.Errorf("Apache rejects %s: %v: %s", up[0], err, out)
		}
	}
	if out, err := exec.Command(bin, "-v", "-b", path, "bob", "b0b:pass").CombinedOutput(); err == nil {
		t.Errorf("Apache accepts bob's old password: %s", out)
	}
	data, _ := os.ReadFile(path)
	if !strings.Contains(string(data), "\ncarol:$2y$10$") || !strings.Contains(string(data), "\nbob:$2y$06$") {
		t.Fatalf("file:\n%s", data)
	}

	// Apache deletes a user from our file; we read the result.
	if out, err := exec.Command(bin, "-D", path, "alice").CombinedOutput(); err != nil {
		t.Fatalf("htpasswd -D: %v: %s", err, out)
	}
	h, err = ReadHtpasswd(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(h.Users(), ","); got != "bob,carol" {
		t.Fatalf("after htpasswd -D: %s", got)
	}
}

func TestHtpasswdOtherFormatsRefused(t *testing.T) {
	bin := apacheHtpasswd(t)
	path := filepath.Join(t.TempDir(), "htpasswd")
	for i, c := range []struct{ flag, user string }{{"-B", "good"}, {"-m", "md5user"}, {"-s", "shauser"}} {
		args := []string{c.flag, "-b", path, c.user, "secret"}
		if i == 0 {
			args = append([]string{"-c"}, args...)
		}
		if out, err := exec.Command(bin, args...).CombinedOutput(); err != nil {
			t.Fatalf("htpasswd: %v: %s", err, out)
		}
	}
	h, err := ReadHtpasswd(path)
	if err != nil {
		t.Fatalf("a file with other formats must still load: %v", err)
	}
	var msgs []string
	for _, e := range h.Unsupported() {
		var u *UnsupportedHashError
		if !errors.As(e, &u) {
			t.Fatalf("%T", e)
		}
		msgs = append(msgs, e.Error())
	}
	if len(msgs) != 2 || !strings.Contains(msgs[0], `"md5user"`) || !strings.Contains(msgs[0], "$apr1$") ||
		!strings.Contains(msgs[1], `"shauser"`) || !strings.Contains(msgs[1], "{SHA}") || !strings.Contains(msgs[1], "bcrypt") {
		t.Fatalf("messages: %q", msgs)
	}
	var log strings.Builder
	store, err := NewUserStore(UserStoreConfig{Path: path, Logger: newTestLogger(&log)})
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Authenticate("md5user", "secret"); !errors.Is(err, ErrBadCredentials) {
		t.Fatalf("md5 user logged in: %v", err)
	}
	if err := store.Authenticate("good", "secret"); err != nil {
		t.Fatalf("bcrypt user in the same file: %v", err)
	}
	if !strings.Contains(log.String(), "md5user") || !strings.Contains(log.String(), "level=ERROR") {
		t.Fatalf("log does not name the refused user:\n%s", log.String())
	}
}

func TestParseHtpasswdCorrupt(t *testing.T) {
	good, _ := bcrypt.GenerateFromPassword([]byte("x"), bcrypt.MinCost)
	for name, content := range map[string]string{
		"no colon":         "alice\n",
		"empty user":       ":" + string(good) + "\n",
		"duplicate":        "a:" + string(good) + "\na:" + string(good) + "\n",
		"truncated bcrypt": "a:" + string(good)[:40] + "\n",
		"empty hash":       "a:\n",
		"bcrypt, bad cost": "a:$2y$99$" + string(good)[7:] + "\n",
	} {
		if _, err := ParseHtpasswd([]byte(content)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	h, err := ParseHtpasswd([]byte("# comment\n\na:" + string(good) + "\r\n"))
	if err != nil || len(h.Users()) != 1 {
		t.Fatalf("comments, blank lines, CRLF: %v %v", err, h.Users())
	}
	// A CRLF file converted to CRLF once more.
	twice, err := ParseHtpasswd([]byte("# comment\r\r\na:" + string(good) + "\r\r\n"))
	if hash, _ := twice.Hash("a"); err != nil || hash != string(good) || string(twice.Bytes()) != "# comment\na:"+string(good)+"\n" {
		t.Fatalf("lines ending in \\r\\r\\n: %v, %q", err, twice.Bytes())
	}
	if !strings.HasPrefix(string(h.Bytes()), "# comment\n\na:") {
		t.Fatalf("comments not kept: %q", h.Bytes())
	}
}

func TestHtpasswdWriteFileAtomic0600(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "sub")
	path := filepath.Join(dir, "htpasswd")
	var h Htpasswd
	if err := h.SetPassword("alice", "pw", bcrypt.MinCost); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("old content\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := h.WriteFile(path); err != nil {
		t.Fatal(err)
	}
	testutil.CheckPrivate(t, path)
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("temporary files left: %v", entries)
	}
	back, err := ReadHtpasswd(path)
	if err != nil || strings.Join(back.Users(), ",") != "alice" {
		t.Fatalf("%v %v", err, back)
	}
}

func TestSetPasswordRefusals(t *testing.T) {
	var h Htpasswd
	for _, tc := range []struct{ user, pw string }{
		{"a:b", "pw"}, {"", "pw"}, {"a b", "pw"}, {"a\nb", "pw"}, {"ok", ""}, {"ok", strings.Repeat("x", 73)},
	} {
		if err := h.SetPassword(tc.user, tc.pw, bcrypt.MinCost); err == nil {
			t.Errorf("SetPassword(%q, %d bytes) accepted", tc.user, len(tc.pw))
		}
	}
	if err := h.SetPassword("ok", "pw", 3); err == nil {
		t.Error("bcrypt cost 3 accepted")
	}
}
