package auth

import (
	"errors"
	"reflect"
	"testing"
)

func TestParseScope(t *testing.T) {
	tests := []struct {
		in   string
		want Scope
	}{
		{"repository:team/app:pull", Scope{Type: "repository", Name: "team/app", Actions: []string{"pull"}}},
		{"repository:team/app:push,pull", Scope{Type: "repository", Name: "team/app", Actions: []string{"push", "pull"}}},
		{"repository:localhost:5000/team/app:pull,push", Scope{Type: "repository", Name: "localhost:5000/team/app", Actions: []string{"pull", "push"}}},
		{"repository:registry.example.com/a:delete", Scope{Type: "repository", Name: "registry.example.com/a", Actions: []string{"delete"}}},
		{"repository(plugin):x:pull", Scope{Type: "repository", Class: "plugin", Name: "x", Actions: []string{"pull"}}},
		{"registry:catalog:*", Scope{Type: "registry", Name: "catalog", Actions: []string{"*"}}},
		{"repository:a:pull,pull", Scope{Type: "repository", Name: "a", Actions: []string{"pull"}}},
		// Splitting on the last colon makes "a:b" a (strange) name; the
		// registry's name validation rejects it later.
		{"repository:a:b:push", Scope{Type: "repository", Name: "a:b", Actions: []string{"push"}}},
		{"repository:[::1]:5000/a:pull", Scope{Type: "repository", Name: "[::1]:5000/a", Actions: []string{"pull"}}},
		// Other UTF-8 passes; the registry's name rules refuse it later.
		{"repository:café/app:pull", Scope{Type: "repository", Name: "café/app", Actions: []string{"pull"}}},
	}
	for _, tt := range tests {
		got, err := ParseScope(tt.in)
		if err != nil {
			t.Errorf("ParseScope(%q): %v", tt.in, err)
			continue
		}
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("ParseScope(%q) = %+v, want %+v", tt.in, got, tt.want)
		}
		if again, err := ParseScope(got.String()); err != nil || !reflect.DeepEqual(again, got) {
			t.Errorf("String() of %q = %q does not parse back: %+v %v", tt.in, got.String(), again, err)
		}
	}
}

func TestParseScopeMalformed(t *testing.T) {
	for _, in := range []string{
		"",
		"repository",
		"repository:a",             // no actions
		"repository::pull",         // empty name
		":a:pull",                  // empty type
		"repository:a:",            // empty action
		"repository:a:pull,",       // empty action after comma
		"repository:a:pu ll",       // space
		"repository(plugin:a:pull", // unterminated class
		"repository():a:pull",      // empty class
		"repo sitory:a:pull",       // space in type
		"repository:a\x00b:pull",   // control character
		"repository:a:pull;rm",     // bad action character
		"repository(x)(y):a:pull",  // two classes
		"repository:a\x87:pull",    // not UTF-8: a token's JSON would change it
		"repository:a\u00a0b:pull", // a space ParseScopes would split on
		"repository:a\u0085b:pull", // a C1 control (and a Unicode space)
	} {
		_, err := ParseScope(in)
		if !errors.Is(err, ErrMalformedScope) {
			t.Errorf("ParseScope(%q) error = %v, want ErrMalformedScope", in, err)
		}
	}
}

func TestParseScopesSpaceSeparatedAndRepeated(t *testing.T) {
	got, err := ParseScopes("repository:a:pull repository:b:push", "repository:a:push", "", "registry:catalog:*")
	if err != nil {
		t.Fatal(err)
	}
	want := []Scope{
		{Type: "repository", Name: "a", Actions: []string{"pull", "push"}},
		{Type: "repository", Name: "b", Actions: []string{"push"}},
		{Type: "registry", Name: "catalog", Actions: []string{"*"}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	if _, err := ParseScopes("repository:a:pull bad"); !errors.Is(err, ErrMalformedScope) {
		t.Fatalf("one bad scope among good ones: %v", err)
	}
}

func TestFormatScopesSkipsEmptyGrants(t *testing.T) {
	s := FormatScopes([]Scope{
		{Type: "repository", Name: "a", Actions: []string{"pull", "push"}},
		{Type: "repository", Name: "b", Actions: []string{}},
		{Type: "repository", Class: "plugin", Name: "c", Actions: []string{"pull"}},
	})
	if s != "repository:a:pull,push repository(plugin):c:pull" {
		t.Fatalf("FormatScopes = %q", s)
	}
}

func TestClaimsAllows(t *testing.T) {
	c := Claims{Access: []Scope{
		{Type: "repository", Name: "a", Actions: []string{"pull"}},
		{Type: "registry", Name: "catalog", Actions: []string{"*"}},
	}}
	cases := []struct {
		typ, name, action string
		want              bool
	}{
		{"repository", "a", "pull", true},
		{"repository", "a", "push", false},
		{"repository", "b", "pull", false},
		{"registry", "catalog", "*", true},
		{"registry", "catalog", "pull", true},
		{"repository", "catalog", "pull", false},
	}
	for _, tc := range cases {
		if got := c.Allows(tc.typ, tc.name, tc.action); got != tc.want {
			t.Errorf("Allows(%s, %s, %s) = %v", tc.typ, tc.name, tc.action, got)
		}
	}
}
