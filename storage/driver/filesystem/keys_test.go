package filesystem

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/berth-registry/berth/storage/driver"
)

// compareKeys and keyAfter agree with comparing the keys themselves, on
// names that are prefixes of one another and continue with bytes on
// either side of '/'.
func TestKeyComparisons(t *testing.T) {
	const alphabet = "a-._0/~"
	rng := rand.New(rand.NewPCG(1, 2))
	word := func(nameOnly bool) string {
		var b []byte
		for range rng.IntN(4) {
			c := alphabet[rng.IntN(len(alphabet))]
			if nameOnly && c == '/' {
				c = 'a'
			}
			b = append(b, c)
		}
		return string(b)
	}
	for range 100000 {
		a := driver.Entry{Name: "x" + word(true), IsDir: rng.IntN(2) == 0}
		b := driver.Entry{Name: "x" + word(true), IsDir: rng.IntN(2) == 0}
		if got, want := compareKeys(a, b), strings.Compare(a.Key(), b.Key()); got != want {
			t.Fatalf("compareKeys(%q, %q) = %d, want %d", a.Key(), b.Key(), got, want)
		}
		after := "x" + word(false)
		if rng.IntN(10) == 0 {
			after = ""
		}
		if got, want := keyAfter(a, after), a.Key() > after; got != want {
			t.Fatalf("keyAfter(%q, %q) = %v, want %v", a.Key(), after, got, want)
		}
	}
}

// selectKeys puts the k entries of smallest key first, whatever the
// order it starts from.
func TestSelectKeys(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for range 2000 {
		n := 2 + rng.IntN(60)
		es := make([]driver.Entry, n)
		for i := range es {
			es[i] = driver.Entry{Name: fmt.Sprintf("%03d", i/2), IsDir: i%2 == 0}
		}
		switch rng.IntN(3) {
		case 0:
			rng.Shuffle(n, func(i, j int) { es[i], es[j] = es[j], es[i] })
		case 1:
			slices.Reverse(es)
		}
		want := slices.Clone(es)
		slices.SortFunc(want, compareKeys)
		k := 1 + rng.IntN(n-1)
		selectKeys(es, k)
		got := slices.Clone(es[:k])
		slices.SortFunc(got, compareKeys)
		if !slices.Equal(got, want[:k]) {
			t.Fatalf("selectKeys(%d of %d): %v, want %v", k, n, got, want[:k])
		}
	}
}
