package auth

import (
	"bytes"
	"slices"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"
)

// htpasswdSeeds are files like those of htpasswd_test.go.
func htpasswdSeeds(f *testing.F) []string {
	good, err := bcrypt.GenerateFromPassword([]byte("x"), bcrypt.MinCost)
	if err != nil {
		f.Fatal(err)
	}
	g := string(good)
	y := "$2y$" + g[4:]
	return []string{
		"",
		"\n",
		"alice:" + y + "\n",
		"alice:" + y + "\nbob:" + g + "\n",
		"# comment\n\na:" + g + "\r\n",
		"md5user:$apr1$abcdefgh$0123456789abcdefghijkl\nshauser:{SHA}qUqP5cyxm6YcTAhz05Hph5gvu9M=\ngood:" + y + "\n",
		"des:abcdefghijklm\nplain:secret",
		"alice\n",
		":" + g + "\n",
		"a:" + g + "\na:" + g + "\n",
		"a:" + g[:40] + "\n",
		"a:\n",
		"a:$2y$99$" + g[7:] + "\n",
		"  spaced:" + y + "  \n\t\n",
	}
}

// FuzzParseHtpasswd checks that a file ParseHtpasswd accepts has unique,
// non-empty user names without colons and well-formed bcrypt hashes, that
// its Bytes parse back to the same users, hashes and unsupported entries
// (and are then stable), and that removing a user leaves the others.
func FuzzParseHtpasswd(f *testing.F) {
	for _, s := range htpasswdSeeds(f) {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		h, err := ParseHtpasswd(data)
		if err != nil {
			return
		}
		users := h.Users()
		for i, u := range users {
			if u == "" || strings.Contains(u, ":") || slices.Contains(users[:i], u) {
				t.Fatalf("users %q", users)
			}
			hash, ok := h.Hash(u)
			if !ok || hash == "" {
				t.Fatalf("user %q has no hash", u)
			}
			if hashFormat(hash) == "bcrypt" {
				if _, err := bcrypt.Cost([]byte(hash)); err != nil || len(hash) != 60 {
					t.Fatalf("user %q: malformed bcrypt hash %q accepted", u, hash)
				}
			}
		}

		out := h.Bytes()
		h2, err := ParseHtpasswd(out)
		if err != nil {
			t.Fatalf("Bytes() of %q = %q does not parse: %v", data, out, err)
		}
		sameFile(t, h, h2)
		if out2 := h2.Bytes(); !bytes.Equal(out2, out) {
			t.Fatalf("Bytes() not stable: %q, then %q", out, out2)
		}
		if len(data) > 0 && len(out) == 0 && strings.TrimSpace(string(data)) != "" {
			t.Fatalf("%q rendered as nothing", data)
		}

		if len(users) > 0 {
			gone := users[len(users)/2]
			if !h2.Remove(gone) || h2.Remove(gone) {
				t.Fatalf("Remove(%q) did not remove exactly one entry", gone)
			}
			h3, err := ParseHtpasswd(h2.Bytes())
			if err != nil {
				t.Fatalf("after Remove(%q): %v", gone, err)
			}
			if want := slices.DeleteFunc(slices.Clone(users), func(u string) bool { return u == gone }); !slices.Equal(h3.Users(), want) {
				t.Fatalf("after Remove(%q): users %q, want %q", gone, h3.Users(), want)
			}
		}
	})
}

// sameFile fails unless a and b hold the same users with the same hashes
// and the same unsupported entries.
func sameFile(t *testing.T, a, b *Htpasswd) {
	t.Helper()
	if !slices.Equal(a.Users(), b.Users()) {
		t.Fatalf("users %q, then %q", a.Users(), b.Users())
	}
	for _, u := range a.Users() {
		ha, _ := a.Hash(u)
		hb, _ := b.Hash(u)
		if ha != hb {
			t.Fatalf("user %q: hash %q, then %q", u, ha, hb)
		}
	}
	ua, ub := a.Unsupported(), b.Unsupported()
	if len(ua) != len(ub) {
		t.Fatalf("unsupported %v, then %v", ua, ub)
	}
	for i := range ua {
		if ua[i].Error() != ub[i].Error() {
			t.Fatalf("unsupported %v, then %v", ua[i], ub[i])
		}
	}
}
