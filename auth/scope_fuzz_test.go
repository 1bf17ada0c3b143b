package auth

import (
	"encoding/json"
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

// The package's fuzz targets (here, in htpasswd_fuzz_test.go and in
// verifier_fuzz_test.go) check properties of what they accept, not only
// that nothing panics. CI runs each for a bounded time, as in
// go test -run='^$' -fuzz='^FuzzParseScope$' -fuzztime=20s ./auth/; inputs
// that once failed are kept under testdata/fuzz and run with every go test.

// scopeSeeds are the scopes of scope_test.go, good and bad.
var scopeSeeds = []string{
	"repository:team/app:pull",
	"repository:team/app:push,pull",
	"repository:localhost:5000/team/app:pull,push",
	"repository:registry.example.com/a:delete",
	"repository(plugin):x:pull",
	"registry:catalog:*",
	"repository:a:pull,pull",
	"repository:a:b:push",
	"repository:[::1]:5000/a:pull",
	"repository:a:pull repository:b:push",
	"",
	"repository",
	"repository:a",
	"repository::pull",
	":a:pull",
	"repository:a:",
	"repository:a:pull,",
	"repository:a:pu ll",
	"repository(plugin:a:pull",
	"repository():a:pull",
	"repo sitory:a:pull",
	"repository:a\x00b:pull",
	"repository:a:pull;rm",
	"repository(x)(y):a:pull",
}

// FuzzParseScope checks that every scope ParseScope accepts is well formed,
// formats back to a string that parses to the same scope (and to the input
// itself when no action was repeated), reads the same as one value of a
// "scope" parameter, and survives the JSON of a token's access claim.
func FuzzParseScope(f *testing.F) {
	for _, s := range scopeSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		sc, err := ParseScope(s)
		if err != nil {
			if !errors.Is(err, ErrMalformedScope) {
				t.Fatalf("ParseScope(%q): error %v does not wrap ErrMalformedScope", s, err)
			}
			return
		}
		if !isWord(sc.Type) || sc.Class != "" && !isWord(sc.Class) {
			t.Fatalf("ParseScope(%q): type %q, class %q", s, sc.Type, sc.Class)
		}
		if sc.Name == "" || !utf8.ValidString(sc.Name) || strings.ContainsFunc(sc.Name, unicode.IsSpace) || strings.ContainsFunc(sc.Name, unicode.IsControl) {
			t.Fatalf("ParseScope(%q): name %q", s, sc.Name)
		}
		if len(sc.Actions) == 0 {
			t.Fatalf("ParseScope(%q): no actions", s)
		}
		for i, a := range sc.Actions {
			if a != ActionAll && !isWord(a) || slices.Contains(sc.Actions[:i], a) {
				t.Fatalf("ParseScope(%q): actions %q", s, sc.Actions)
			}
		}

		out := sc.String()
		again, err := ParseScope(out)
		if err != nil || !reflect.DeepEqual(again, sc) {
			t.Fatalf("ParseScope(%q) = %+v, formats as %q, which parses as %+v, %v", s, sc, out, again, err)
		}
		if asked := s[strings.LastIndexByte(s, ':')+1:]; strings.Count(asked, ",")+1 == len(sc.Actions) && out != s {
			t.Fatalf("ParseScope(%q) formats as %q, though no action was repeated", s, out)
		}

		list, err := ParseScopes(s)
		if err != nil || len(list) != 1 || !reflect.DeepEqual(list[0], sc) {
			t.Fatalf("ParseScopes(%q) = %+v, %v; ParseScope gives %+v", s, list, err, sc)
		}
		if list, err := ParseScopes(FormatScopes([]Scope{sc, sc})); err != nil || len(list) != 1 || !reflect.DeepEqual(list[0], sc) {
			t.Fatalf("ParseScopes(FormatScopes(%+v twice)) = %+v, %v", sc, list, err)
		}

		data, err := json.Marshal(sc)
		if err != nil {
			t.Fatal(err)
		}
		var back Scope
		if err := json.Unmarshal(data, &back); err != nil || !reflect.DeepEqual(back, sc) {
			t.Fatalf("scope %+v encodes as %s, which decodes as %+v, %v", sc, data, back, err)
		}
	})
}

// FuzzParseScopes checks that what ParseScopes accepts from a "scope"
// parameter formats back (FormatScopes, the "scope" of a token response)
// to a value that parses to the same scopes, and that each resource occurs
// once.
func FuzzParseScopes(f *testing.F) {
	for _, s := range scopeSeeds {
		f.Add(s, "")
	}
	f.Add("repository:a:pull repository:b:push", "repository:a:push registry:catalog:*")
	f.Add("repository:a:pull\trepository:a:pull", " ")
	f.Fuzz(func(t *testing.T, a, b string) {
		list, err := ParseScopes(a, b)
		if err != nil {
			if !errors.Is(err, ErrMalformedScope) {
				t.Fatalf("ParseScopes(%q, %q): error %v does not wrap ErrMalformedScope", a, b, err)
			}
			return
		}
		for i, sc := range list {
			for _, prev := range list[:i] {
				if prev.Type == sc.Type && prev.Class == sc.Class && prev.Name == sc.Name {
					t.Fatalf("ParseScopes(%q, %q): %v twice", a, b, sc)
				}
			}
		}
		out := FormatScopes(list)
		again, err := ParseScopes(out)
		if err != nil || len(again) != len(list) || len(list) > 0 && !reflect.DeepEqual(again, list) {
			t.Fatalf("ParseScopes(%q, %q) = %+v, formats as %q, which parses as %+v, %v", a, b, list, out, again, err)
		}
	})
}
