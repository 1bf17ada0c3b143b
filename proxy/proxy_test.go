package proxy

import (
	"strings"
	"testing"
	"time"
)

func TestLookup(t *testing.T) {
	p, err := New(nil, []Upstream{
		{Prefix: "hub", RemoteURL: "https://registry-1.docker.io"},
		{Prefix: "mirrors/mcr", RemoteURL: "http://mcr.example:5000"},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		local, prefix, remote string
	}{
		{"hub/library/alpine", "hub", "library/alpine"},
		{"hub/alpine", "hub", "alpine"},
		{"hub", "", ""},         // the prefix alone is no mirrored repository
		{"hubx/alpine", "", ""}, // a component, not a string prefix
		{"team/hub/alpine", "", ""},
		{"mirrors/mcr/windows/nanoserver", "mirrors/mcr", "windows/nanoserver"},
		{"mirrors/other", "", ""},
		{"", "", ""},
	} {
		u, remote := p.lookup(tc.local)
		prefix := ""
		if u != nil {
			prefix = u.Prefix
		}
		if prefix != tc.prefix || remote != tc.remote || p.Mirrors(tc.local) != (tc.prefix != "") {
			t.Errorf("lookup(%q) = %q, %q; want %q, %q", tc.local, prefix, remote, tc.prefix, tc.remote)
		}
	}
	if p.upstreams[1].reg.Scheme() != "http" || p.upstreams[0].reg.Scheme() != "https" {
		t.Errorf("schemes: %s, %s", p.upstreams[0].reg.Scheme(), p.upstreams[1].reg.Scheme())
	}

	// One upstream without a prefix mirrors every repository as it is.
	all, err := New(nil, []Upstream{{RemoteURL: "https://registry-1.docker.io"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if u, remote := all.lookup("library/alpine"); u == nil || remote != "library/alpine" {
		t.Errorf("whole-registry mirror: %v, %q", u, remote)
	}
	var none *Proxy
	if none.Mirrors("hub/alpine") {
		t.Error("a nil Proxy mirrors")
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		ups  []Upstream
		want string
	}{
		{[]Upstream{{RemoteURL: "https://a"}, {Prefix: "hub", RemoteURL: "https://b"}}, "only upstream"},
		{[]Upstream{{Prefix: "a/b", RemoteURL: "https://a"}, {Prefix: "a", RemoteURL: "https://b"}}, "overlap"},
		{[]Upstream{{Prefix: "a", RemoteURL: "https://a"}, {Prefix: "ab", RemoteURL: "https://b"}}, ""},
		{[]Upstream{{Prefix: "a", RemoteURL: "a.example"}}, "remoteurl"},
		{[]Upstream{{Prefix: "a", RemoteURL: "https://"}}, "remoteurl"},
		{[]Upstream{{Prefix: "..", RemoteURL: "https://a"}}, "not a valid"},
	} {
		err := Validate(tc.ups)
		if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("Validate(%+v) = %v, want %q", tc.ups, err, tc.want)
		}
	}
}

func TestRetention(t *testing.T) {
	rules := Retention([]Upstream{
		{Prefix: "hub", TTL: time.Hour},
		{Prefix: "mcr", TTL: 0},
		{Prefix: "ghcr", TTL: -time.Second},
	})
	if len(rules) != 1 || rules[0].Repositories != "hub/**" || rules[0].TagsOlderThan != time.Hour || rules[0].UntaggedOlderThan != time.Hour {
		t.Fatalf("Retention = %+v, want one rule for hub/** of 1h", rules)
	}
	if all := Retention([]Upstream{{TTL: time.Hour}}); len(all) != 1 || all[0].Repositories != "" {
		t.Fatalf("Retention of Distribution's mode = %+v, want one rule for every repository", all)
	}
	if err := Validate([]Upstream{{Prefix: "a", RemoteURL: "https://a", TagCheck: -time.Second}}); err == nil || !strings.Contains(err.Error(), "tagcheck") {
		t.Fatalf("a negative tagcheck: %v", err)
	}
}
