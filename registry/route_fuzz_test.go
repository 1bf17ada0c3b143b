package registry

import (
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"testing"

	"github.com/berth-registry/berth/storage"
)

// FuzzParseRoute checks what the rest of the API relies on: a path the
// parser accepts names a valid repository, carries a reference, digest or
// upload id of the right form, and rebuilds (Route.Path) to the same path,
// which parses back to the same route; the access it asks for names only
// valid repositories; a path it refuses is a client error, never a 500.
func FuzzParseRoute(f *testing.F) {
	for _, p := range routeSeeds() {
		f.Add(p, "")
	}
	f.Add("/a/blobs/uploads/", "mount="+dgA+"&from=b/c")
	f.Add("/a/blobs/uploads", "mount="+dgA+"&from=..")
	f.Add("/a/manifests/"+dgA, "tag=a&tag=b")
	f.Fuzz(func(t *testing.T, p, rawQuery string) {
		r, err := ParseRoute(p)
		if err != nil {
			if r != (Route{}) {
				t.Fatalf("ParseRoute(%q) failed (%v) but returned %+v", p, err, r)
			}
			if status, body := classify(err); status != http.StatusBadRequest && status != http.StatusNotFound {
				t.Fatalf("ParseRoute(%q) error %v maps to %d %s, want a 400 or 404", p, err, status, body.Code)
			}
			return
		}
		checkRoute(t, p, r)
		query, _ := url.ParseQuery(rawQuery)
		for _, m := range []string{"GET", "HEAD", "PUT", "POST", "PATCH", "DELETE"} {
			for _, a := range r.Access(m, query) {
				if len(a.Actions) == 0 {
					t.Fatalf("%s %q: access %+v with no actions", m, p, a)
				}
				if a.Type == "registry" {
					if r.Kind != KindCatalog {
						t.Fatalf("%s %q: registry access %+v outside the catalog", m, p, a)
					}
					continue
				}
				if a.Type != "repository" || storage.ValidateName(a.Name) != nil {
					t.Fatalf("%s %q?%s: access %+v names no valid repository", m, p, rawQuery, a)
				}
			}
		}
	})
}

// checkRoute asserts the properties of a route parsed from p.
func checkRoute(t *testing.T, p string, r Route) {
	t.Helper()
	switch r.Kind {
	case KindBase, KindCatalog:
		if r.Name != "" {
			t.Fatalf("%q: %v route with a name %q", p, r.Kind, r.Name)
		}
	default:
		if err := storage.ValidateName(r.Name); err != nil {
			t.Fatalf("%q: accepted name %q: %v", p, r.Name, err)
		}
	}
	switch r.Kind {
	case KindManifest:
		if r.Reference == "" || strings.Contains(r.Reference, "/") {
			t.Fatalf("%q: manifest reference %q", p, r.Reference)
		}
		if r.Digest != "" && r.Digest.String() != r.Reference {
			t.Fatalf("%q: digest %q differs from reference %q", p, r.Digest, r.Reference)
		}
	case KindBlob, KindReferrers:
		if _, err := storage.ParseDigest(r.Digest.String()); err != nil {
			t.Fatalf("%q: accepted digest %q: %v", p, r.Digest, err)
		}
	case KindUpload:
		if err := storage.ValidateUploadID(r.UploadID); err != nil {
			t.Fatalf("%q: accepted upload id %q: %v", p, r.UploadID, err)
		}
	}
	rebuilt := r.Path()
	again, err := ParseRoute(rebuilt)
	if err != nil || !reflect.DeepEqual(again, r) {
		t.Fatalf("%q parses to %+v, which rebuilds to %q, which parses to %+v, %v", p, r, rebuilt, again, err)
	}
	// The path itself, but for the optional leading slash and, on the
	// upload start, the optional trailing one.
	want := "/" + strings.TrimPrefix(p, "/")
	if r.Kind == KindUploadStart && !strings.HasSuffix(want, "/") {
		want += "/"
	}
	if rebuilt != want {
		t.Fatalf("%q parses to %+v, which rebuilds to %q", p, r, rebuilt)
	}
}

// routeSeeds are the paths of TestParseRoute's table.
func routeSeeds() []string {
	var out []string
	for _, tc := range parseRouteTests() {
		out = append(out, tc.path)
	}
	return out
}
