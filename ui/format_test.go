package ui

import "testing"

func TestParseRepoPath(t *testing.T) {
	const dg = "sha256:4355a46b19d348dc2f57c046f8ef63d4538ebb936000f3c9ee954a27460dd865"
	tests := []struct {
		rest string
		ok   bool
		kind int
		name string
	}{
		{"a/", true, pageTags, "a"},
		{"team/app/", true, pageTags, "team/app"},
		{"a/manifests/b/", true, pageTags, "a/manifests/b"},
		{"team/app/-/manifests/" + dg, true, pageManifest, "team/app"},
		{"team/app/-/delete", true, pageDelete, "team/app"},
		{"team/app", false, 0, ""},
		{"team/app/-/manifests/latest", false, 0, ""},
		{"team/app/-/manifests/sha256:00", false, 0, ""},
		{"team/app/-/other", false, 0, ""},
		{"team/app/-/delete/x", false, 0, ""},
		{"Team/", false, 0, ""},
		{"../", false, 0, ""},
		{"a//", false, 0, ""},
		{"-/", false, 0, ""},
		{"/-/delete", false, 0, ""},
		{"", false, 0, ""},
		{"a/<script>/", false, 0, ""},
	}
	for _, tc := range tests {
		p, ok := parseRepoPath(tc.rest)
		if ok != tc.ok || (ok && (p.kind != tc.kind || p.name != tc.name)) {
			t.Errorf("%q: %+v %v, want kind %d name %q ok %v", tc.rest, p, ok, tc.kind, tc.name, tc.ok)
		}
	}
}
