package driver

import (
	"math/rand/v2"
	"path"
	"regexp"
	"strings"
	"testing"
)

// CheckPath accepts exactly the absolute, clean paths whose components
// are made of letters, digits and ._:@+- and are not "." or "..".
func TestCheckPath(t *testing.T) {
	component := regexp.MustCompile(`^[A-Za-z0-9._:@+-]+$`)
	valid := func(p string) bool {
		if p == "/" {
			return true
		}
		if !strings.HasPrefix(p, "/") || path.Clean(p) != p {
			return false
		}
		for _, c := range strings.Split(p[1:], "/") {
			if c == "." || c == ".." || !component.MatchString(c) {
				return false
			}
		}
		return true
	}
	paths := []string{"/", "/a", "/a/b", "/a/../b", "/a/./b", "/.", "/..", "/...", "/a//b", "/a/", "a/b", "",
		"/a b", "/a\x00", "/ä", "/_x/@y:1+2-3.4", "/A/Z/a/z/0/9"}
	const alphabet = "/a.Z9_:@+-~ \x00\xff"
	rng := rand.New(rand.NewPCG(3, 4))
	for range 50000 {
		b := []byte{'/'}
		for range rng.IntN(8) {
			b = append(b, alphabet[rng.IntN(len(alphabet))])
		}
		paths = append(paths, string(b))
	}
	for _, p := range paths {
		if got := CheckPath("test", p) == nil; got != valid(p) {
			t.Fatalf("CheckPath(%q) accepts: %v, want %v", p, got, valid(p))
		}
	}
}
