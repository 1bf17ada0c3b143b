package auth

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/crypto/bcrypt"

	"github.com/berth-registry/berth/internal/osfile"
)

// DefaultBcryptCost is the bcrypt cost of new password hashes.
const DefaultBcryptCost = 10

// UnsupportedHashError reports an htpasswd entry whose hash is not bcrypt.
// Such users cannot log in; the rest of the file stays usable.
type UnsupportedHashError struct {
	User   string
	Format string
}

// Error names the user and the format, and says how to fix it.
func (e *UnsupportedHashError) Error() string {
	return fmt.Sprintf("htpasswd: user %q has a %s password hash; only bcrypt is accepted: set the password again with `htpasswd -B` or `authserver user passwd`", e.User, e.Format)
}

// Htpasswd is the content of an htpasswd file in Apache's format, one
// "user:hash" per line. It keeps every line, including comments and entries
// it cannot use, so editing a file written by another tool loses nothing.
// The zero value is an empty file.
type Htpasswd struct {
	lines []htLine
}

type htLine struct {
	user string // empty for comments and blank lines
	hash string
	raw  string
}

// ParseHtpasswd parses htpasswd content. Lines without a colon, empty or
// duplicate user names and malformed bcrypt hashes make the whole file
// invalid; entries with other hash formats are kept and reported by
// Unsupported.
func ParseHtpasswd(data []byte) (*Htpasswd, error) {
	h := &Htpasswd{}
	seen := map[string]bool{}
	for i, raw := range strings.Split(strings.TrimSuffix(string(data), "\n"), "\n") {
		// Every carriage return at the end: a CRLF file converted twice
		// ends its lines in "\r\r\n", and one left on a line would be
		// read back from Bytes as the line's end.
		raw = strings.TrimRight(raw, "\r")
		trimmed := strings.TrimSpace(raw)
		if trimmed == "" || strings.HasPrefix(trimmed, "#") {
			if len(data) > 0 {
				h.lines = append(h.lines, htLine{raw: raw})
			}
			continue
		}
		user, hash, ok := strings.Cut(raw, ":")
		if !ok || user == "" || hash == "" {
			return nil, fmt.Errorf("htpasswd line %d: want user:hash", i+1)
		}
		if seen[user] {
			return nil, fmt.Errorf("htpasswd line %d: user %q appears twice", i+1, user)
		}
		seen[user] = true
		if hashFormat(hash) == "bcrypt" {
			if _, err := bcrypt.Cost([]byte(hash)); err != nil || len(hash) != 60 {
				return nil, fmt.Errorf("htpasswd line %d: user %q: malformed bcrypt hash", i+1, user)
			}
		}
		h.lines = append(h.lines, htLine{user: user, hash: hash, raw: raw})
	}
	return h, nil
}

// ReadHtpasswd reads and parses an htpasswd file. A missing file reads as an
// empty one.
func ReadHtpasswd(path string) (*Htpasswd, error) {
	data, err := osfile.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return &Htpasswd{}, nil
	}
	if err != nil {
		return nil, err
	}
	return ParseHtpasswd(data)
}

// EditHtpasswd reads the htpasswd file at path, lets edit change it and
// writes it back, holding a lock (the file .<name>.lock beside it) from the
// read to the write: two edits at the same time, from two processes, both
// land. An error from edit leaves the file as it was. Readers need no
// lock: the file is replaced atomically.
func EditHtpasswd(path string, edit func(*Htpasswd) error) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	unlock, err := osfile.Lock(filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".lock"))
	if err != nil {
		return err
	}
	defer unlock()
	h, err := ReadHtpasswd(path)
	if err != nil {
		return err
	}
	if err := edit(h); err != nil {
		return err
	}
	return h.WriteFile(path)
}

// hashFormat names the format of a password hash as Apache's htpasswd
// writes them.
func hashFormat(hash string) string {
	switch {
	case strings.HasPrefix(hash, "$2y$"), strings.HasPrefix(hash, "$2a$"), strings.HasPrefix(hash, "$2b$"):
		return "bcrypt"
	case strings.HasPrefix(hash, "$apr1$"):
		return "Apache MD5 ($apr1$)"
	case strings.HasPrefix(hash, "{SHA}"):
		return "SHA-1 ({SHA})"
	case strings.HasPrefix(hash, "$5$"):
		return "SHA-256 crypt ($5$)"
	case strings.HasPrefix(hash, "$6$"):
		return "SHA-512 crypt ($6$)"
	case strings.HasPrefix(hash, "$1$"):
		return "MD5 crypt ($1$)"
	case len(hash) == 13:
		return "DES crypt"
	}
	return "unknown or plain-text"
}

// Users lists the user names in file order, including users whose hash is
// unsupported.
func (h *Htpasswd) Users() []string {
	var out []string
	for _, l := range h.lines {
		if l.user != "" {
			out = append(out, l.user)
		}
	}
	return out
}

// Hash returns the stored hash of user.
func (h *Htpasswd) Hash(user string) (string, bool) {
	for _, l := range h.lines {
		if l.user != "" && l.user == user {
			return l.hash, true
		}
	}
	return "", false
}

// Unsupported returns one *UnsupportedHashError per entry whose hash is not
// bcrypt.
func (h *Htpasswd) Unsupported() []error {
	var out []error
	for _, l := range h.lines {
		if l.user != "" && hashFormat(l.hash) != "bcrypt" {
			out = append(out, &UnsupportedHashError{User: l.user, Format: hashFormat(l.hash)})
		}
	}
	return out
}

// ValidateUserName checks that name can be stored in an htpasswd file and
// used as a token subject: not empty, at most 255 bytes, no colon, no
// whitespace or control characters.
func ValidateUserName(name string) error {
	if name == "" || len(name) > 255 || strings.ContainsRune(name, ':') || strings.ContainsFunc(name, isSpaceOrControl) {
		return fmt.Errorf("invalid user name %q: want 1 to 255 characters without colon, space or control characters", name)
	}
	return nil
}

// SetPassword hashes password with bcrypt at cost (DefaultBcryptCost when
// zero) in the "$2y$" form of `htpasswd -B`, and adds the user or replaces
// their hash. Passwords longer than 72 bytes, bcrypt's limit, are refused.
func (h *Htpasswd) SetPassword(user, password string, cost int) error {
	if err := ValidateUserName(user); err != nil {
		return err
	}
	if cost == 0 {
		cost = DefaultBcryptCost
	}
	if cost < bcrypt.MinCost || cost > bcrypt.MaxCost {
		return fmt.Errorf("bcrypt cost %d out of range %d..%d", cost, bcrypt.MinCost, bcrypt.MaxCost)
	}
	if password == "" {
		return errors.New("empty password")
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(password), cost)
	if err != nil {
		return err
	}
	// x/crypto writes $2a$; Apache writes $2y$. Both name the same
	// algorithm; write what `htpasswd -B` writes.
	s := "$2y$" + strings.TrimPrefix(string(hash), "$2a$")
	line := htLine{user: user, hash: s, raw: user + ":" + s}
	for i, l := range h.lines {
		if l.user == user {
			h.lines[i] = line
			return nil
		}
	}
	h.lines = append(h.lines, line)
	return nil
}

// Remove deletes user and reports whether it was there.
func (h *Htpasswd) Remove(user string) bool {
	for i, l := range h.lines {
		if l.user != "" && l.user == user {
			h.lines = append(h.lines[:i], h.lines[i+1:]...)
			return true
		}
	}
	return false
}

// Bytes renders the file, one line per entry, each ending in a newline.
func (h *Htpasswd) Bytes() []byte {
	var b bytes.Buffer
	for _, l := range h.lines {
		b.WriteString(l.raw)
		b.WriteByte('\n')
	}
	return b.Bytes()
}

// WriteFile replaces the file at path atomically: it writes a temporary file
// in the same directory with mode 0600, syncs it, renames it over path and
// syncs the directory. Parent directories are created with mode 0700.
func (h *Htpasswd) WriteFile(path string) error {
	return osfile.WriteFile(path, h.Bytes(), 0o600)
}
