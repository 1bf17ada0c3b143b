package auth

import (
	"reflect"
	"strings"
	"testing"
)

func strp(s string) *string { return &s }

func TestPolicy(t *testing.T) {
	rules := []Rule{
		{Match: Match{Group: "admins"}, Actions: []string{"*"}},
		{Match: Match{Group: "admins", Type: "registry", Name: "catalog"}, Actions: []string{"*"}}, // rule 1 (no type) covers repositories only, so this rule is reached
		{Match: Match{Account: strp("ci-bot")}, Actions: []string{"pull", "push", "delete"}},
		{Match: Match{Account: strp("/^svc-[a-z]+$/"), Name: "services/*"}, Actions: []string{"pull"}},
		{Match: Match{Account: strp("*"), Name: "${account}/*"}, Actions: []string{"pull", "push"}},
		{Match: Match{Account: strp("*"), Name: "/^shared/.+$/"}, Actions: []string{"pull"}},
		{Match: Match{Account: strp(""), Name: "public/*"}, Actions: []string{"pull"}},
		{Match: Match{Account: strp("*"), Name: "public/*"}, Actions: []string{"pull", "push"}},
		{Match: Match{Account: strp("bob"), Name: "bob/secret"}, Actions: []string{"*"}}, // never reached: rule 5 matches first
	}
	p, err := NewPolicy(rules, map[string][]string{"admins": {"alice"}})
	if err != nil {
		t.Fatal(err)
	}
	repo := func(name string, actions ...string) Scope {
		return Scope{Type: "repository", Name: name, Actions: actions}
	}
	tests := []struct {
		name    string
		account string
		req     Scope
		want    []string
	}{
		{"group member gets everything asked", "alice", repo("any/thing", "pull", "push", "delete"), []string{"pull", "push", "delete"}},
		{"catalog by explicit rule", "alice", Scope{Type: "registry", Name: "catalog", Actions: []string{"*"}}, []string{"*"}},
		{"catalog not for a non-admin", "bob", Scope{Type: "registry", Name: "catalog", Actions: []string{"*"}}, []string{}},
		{"catalog not by a type-less wildcard rule", "ci-bot", Scope{Type: "registry", Name: "catalog", Actions: []string{"*"}}, []string{}},
		{"exact account", "ci-bot", repo("x/y", "push", "delete"), []string{"push", "delete"}},
		{"exact account does not glob", "ci-bot2", repo("x/y", "push"), []string{}},
		{"regex account", "svc-web", repo("services/web", "pull", "push"), []string{"pull"}},
		{"regex is anchored", "svc-web-2", repo("services/web", "pull"), []string{}},
		{"personal namespace", "bob", repo("bob/app", "pull", "push", "delete"), []string{"pull", "push"}},
		{"glob does not cross /", "bob", repo("bob/team/app", "pull"), []string{}},
		{"another's namespace", "bob", repo("carol/app", "pull"), []string{}},
		{"account is literal in the pattern", "b*", repo("bob/app", "pull"), []string{}},
		{"regex name", "bob", repo("shared/base/img", "pull", "push"), []string{"pull"}},
		{"anonymous pull of public", "", repo("public/nginx", "pull", "push"), []string{"pull"}},
		{"anonymous gets nothing else", "", repo("shared/base", "pull"), []string{}},
		{"anonymous never matches a glob account", "", repo("/x", "pull"), []string{}},
		{"user push to public via later rule", "bob", repo("public/nginx", "push"), []string{"push"}},
		{"first match wins", "bob", repo("bob/secret", "delete"), []string{}},
		{"default deny", "bob", repo("elsewhere", "pull"), []string{}},
		{"unknown action not granted by a list", "bob", repo("bob/app", "frobnicate"), []string{}},
		{"host prefix is part of the name", "bob", repo("localhost:5000/bob/app", "pull"), []string{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := p.Allowed(tt.account, tt.req)
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("Allowed(%q, %s) = %q, want %q", tt.account, tt.req, got, tt.want)
			}
		})
	}
}

func TestPolicyGrantKeepsEveryScope(t *testing.T) {
	anyUser := "*"
	p, err := NewPolicy([]Rule{{Match: Match{Account: &anyUser, Name: "team/*"}, Actions: []string{"pull"}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	got := p.Grant("bob", []Scope{
		{Type: "repository", Name: "team/app", Actions: []string{"push", "pull"}},
		{Type: "repository", Class: "plugin", Name: "other", Actions: []string{"pull"}},
	})
	want := []Scope{
		{Type: "repository", Name: "team/app", Actions: []string{"pull"}},
		{Type: "repository", Class: "plugin", Name: "other", Actions: []string{}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Grant = %+v", got)
	}
}

func TestNewPolicyRejects(t *testing.T) {
	for name, tc := range map[string]struct {
		rule Rule
		msg  string
	}{
		"unknown action":  {Rule{Actions: []string{"read"}}, "read"},
		"no actions":      {Rule{}, "no actions"},
		"bad regex":       {Rule{Match: Match{Account: strp("/(/")}, Actions: []string{"pull"}}, "account"},
		"bad glob":        {Rule{Match: Match{Name: "[a"}, Actions: []string{"pull"}}, "name"},
		"undefined group": {Rule{Match: Match{Group: "ops"}, Actions: []string{"pull"}}, "ops"},
	} {
		_, err := NewPolicy([]Rule{tc.rule}, nil)
		if err == nil || !strings.Contains(err.Error(), tc.msg) || !strings.Contains(err.Error(), "rule 1") {
			t.Errorf("%s: error %v, want one naming rule 1 and %q", name, err, tc.msg)
		}
	}
}
