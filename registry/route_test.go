package registry

import (
	"errors"
	"net/url"
	"reflect"
	"strings"
	"testing"

	"github.com/berth-registry/berth/storage"
)

const dgA = "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"

// routeTest is one path of the parser's table and what it must give.
type routeTest struct {
	path string
	want Route
	err  error
}

// parseRouteTests is the parser's table; the fuzz target seeds from it.
func parseRouteTests() []routeTest {
	long := strings.Repeat("a", 256)
	return []routeTest{
		{"", Route{Kind: KindBase}, nil},
		{"/", Route{Kind: KindBase}, nil},
		{"/_catalog", Route{Kind: KindCatalog}, nil},
		{"/library/ubuntu/tags/list", Route{Kind: KindTags, Name: "library/ubuntu"}, nil},
		{"/a/manifests/latest", Route{Kind: KindManifest, Name: "a", Reference: "latest"}, nil},
		{"/a/manifests/" + dgA, Route{Kind: KindManifest, Name: "a", Reference: dgA, Digest: dgA}, nil},
		// Names that contain the keywords: matched from the right.
		{"/a/manifests/b/manifests/c", Route{Kind: KindManifest, Name: "a/manifests/b", Reference: "c"}, nil},
		{"/x/blobs/blobs/" + dgA, Route{Kind: KindBlob, Name: "x/blobs", Digest: dgA}, nil},
		{"/tags/list/tags/list", Route{Kind: KindTags, Name: "tags/list"}, nil},
		{"/blobs/uploads/blobs/uploads/", Route{Kind: KindUploadStart, Name: "blobs/uploads"}, nil},
		{"/x/blobs/uploads/", Route{Kind: KindUploadStart, Name: "x"}, nil},
		{"/x/blobs/uploads", Route{Kind: KindUploadStart, Name: "x"}, nil},
		{"/x/blobs/uploads/0e2c-11ab", Route{Kind: KindUpload, Name: "x", UploadID: "0e2c-11ab"}, nil},
		{"/x/referrers/" + dgA, Route{Kind: KindReferrers, Name: "x", Digest: dgA}, nil},
		{"/a.b_c__d-e/f/blobs/" + dgA, Route{Kind: KindBlob, Name: "a.b_c__d-e/f", Digest: dgA}, nil},
		// Hostile and malformed.
		{"/x/blobs/blobs", Route{}, storage.ErrDigestInvalid},
		{"/x/blobs/sha256:abc", Route{}, storage.ErrDigestInvalid},
		{"/../etc/blobs/" + dgA, Route{}, storage.ErrNameInvalid},
		{"/a/../b/manifests/latest", Route{}, storage.ErrNameInvalid},
		{"/./manifests/latest", Route{}, storage.ErrNameInvalid},
		{"/Upper/manifests/latest", Route{}, storage.ErrNameInvalid},
		{"/a//b/manifests/latest", Route{}, storage.ErrNameInvalid},
		// The repository itself (DELETE only), matched like the rest from
		// the right, but not when the name would end in a route word.
		{"/team/app/", Route{Kind: KindRepository, Name: "team/app"}, nil},
		{"/a/manifests/b/", Route{Kind: KindRepository, Name: "a/manifests/b"}, nil},
		{"/a/manifests/", Route{}, errRouteUnknown},
		{"/a/tags/", Route{}, errRouteUnknown},
		{"/A/", Route{}, storage.ErrNameInvalid},
		{"/-a/manifests/latest", Route{}, storage.ErrNameInvalid},
		{"/a-/manifests/latest", Route{}, storage.ErrNameInvalid},
		{"/a..b/manifests/latest", Route{}, storage.ErrNameInvalid},
		{"/" + long + "/manifests/latest", Route{}, storage.ErrNameInvalid},
		{"/manifests/latest", Route{}, errRouteUnknown},
		{"/a/manifests/.hidden", Route{Kind: KindManifest, Name: "a", Reference: ".hidden"}, nil},
		{"/a/blobs/uploads/..", Route{}, storage.ErrUploadUnknown},
		{"/a/blobs/uploads/a%2Fb", Route{}, storage.ErrUploadUnknown},
		{"/a/b", Route{}, errRouteUnknown},
		{"/a", Route{}, errRouteUnknown},
		{"/a/tags", Route{}, errRouteUnknown},
		{"/_catalog/x", Route{}, errRouteUnknown},
	}
}

func TestParseRoute(t *testing.T) {
	for _, tc := range parseRouteTests() {
		got, err := ParseRoute(tc.path)
		if tc.err != nil {
			if !errors.Is(err, tc.err) {
				t.Errorf("ParseRoute(%q) error = %v, want %v", tc.path, err, tc.err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("ParseRoute(%q) = %+v, %v; want %+v", tc.path, got, err, tc.want)
		}
	}
	// The longest valid name is accepted.
	name := strings.Repeat("a", 127) + "/" + strings.Repeat("b", 127)
	if _, err := ParseRoute("/" + name + "/tags/list"); err != nil {
		t.Errorf("255-character name refused: %v", err)
	}
}

func TestRouteAccess(t *testing.T) {
	pull := []string{"pull"}
	pushPull := []string{"pull", "push"}
	repo := func(name string, actions []string) Access {
		return Access{Type: "repository", Name: name, Actions: actions}
	}
	mount := url.Values{"mount": {dgA}, "from": {"other/base"}}
	tests := []struct {
		route  Route
		method string
		query  url.Values
		want   []Access
	}{
		{Route{Kind: KindBase}, "GET", nil, nil},
		{Route{Kind: KindCatalog}, "GET", nil, []Access{{Type: "registry", Name: "catalog", Actions: []string{"*"}}}},
		{Route{Kind: KindManifest, Name: "a"}, "GET", nil, []Access{repo("a", pull)}},
		{Route{Kind: KindManifest, Name: "a"}, "HEAD", nil, []Access{repo("a", pull)}},
		{Route{Kind: KindManifest, Name: "a"}, "PUT", nil, []Access{repo("a", pushPull)}},
		{Route{Kind: KindManifest, Name: "a"}, "DELETE", nil, []Access{repo("a", []string{"delete"})}},
		{Route{Kind: KindBlob, Name: "a"}, "DELETE", nil, []Access{repo("a", []string{"delete"})}},
		{Route{Kind: KindTags, Name: "a"}, "GET", nil, []Access{repo("a", pull)}},
		{Route{Kind: KindReferrers, Name: "a"}, "GET", nil, []Access{repo("a", pull)}},
		{Route{Kind: KindUploadStart, Name: "a"}, "POST", nil, []Access{repo("a", pushPull)}},
		{Route{Kind: KindUploadStart, Name: "a"}, "POST", mount, []Access{repo("a", pushPull), repo("other/base", pull)}},
		{Route{Kind: KindUploadStart, Name: "a"}, "POST", url.Values{"mount": {dgA}, "from": {"../x"}}, []Access{repo("a", pushPull)}},
		{Route{Kind: KindUpload, Name: "a"}, "GET", nil, []Access{repo("a", pushPull)}},
		{Route{Kind: KindUpload, Name: "a"}, "PATCH", nil, []Access{repo("a", pushPull)}},
		{Route{Kind: KindUpload, Name: "a"}, "DELETE", nil, []Access{repo("a", pushPull)}},
		{Route{Kind: KindRepository, Name: "a"}, "DELETE", nil, []Access{repo("a", []string{"delete"})}},
	}
	for _, tc := range tests {
		got := tc.route.Access(tc.method, tc.query)
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%v %s: Access = %+v, want %+v", tc.route.Kind, tc.method, got, tc.want)
		}
	}
}

func BenchmarkParseRoute(b *testing.B) {
	for b.Loop() {
		if _, err := ParseRoute("/team/app/manifests/latest"); err != nil {
			b.Fatal(err)
		}
	}
}
