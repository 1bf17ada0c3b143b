// Package registry is the HTTP API of the OCI Distribution specification
// (Docker Registry v2): one gin engine with one /v2/*path route, a pure path
// parser, handlers that return errors, and one table that turns those errors
// into OCI error bodies and statuses.
package registry

import (
	"errors"
	"net/http"
	"net/url"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/storage"
)

// Kind says which endpoint a /v2/ path addresses.
type Kind int

// The endpoints of the distribution API.
const (
	KindBase        Kind = iota // /v2/
	KindCatalog                 // /v2/_catalog
	KindTags                    // /v2/<name>/tags/list
	KindManifest                // /v2/<name>/manifests/<reference>
	KindBlob                    // /v2/<name>/blobs/<digest>
	KindUploadStart             // /v2/<name>/blobs/uploads/
	KindUpload                  // /v2/<name>/blobs/uploads/<id>
	KindReferrers               // /v2/<name>/referrers/<digest>
	KindRepository              // /v2/<name>/ (Berth's: DELETE removes the repository)
)

var kindNames = [...]string{"base", "catalog", "tags", "manifest", "blob", "upload-start", "upload", "referrers", "repository"}

func (k Kind) String() string { return kindNames[k] }

// Route is a parsed /v2/ path. Name, Reference, Digest and UploadID are
// validated, but for a manifest's tag.
type Route struct {
	Kind Kind
	// Name is the repository (empty for base and catalog).
	Name string
	// Reference is a manifest's tag or digest string (KindManifest), not
	// yet validated as a tag.
	Reference string
	// Digest is the blob or subject digest (KindBlob, KindReferrers), or the
	// manifest digest when Reference is one.
	Digest digest.Digest
	// UploadID is the upload session (KindUpload).
	UploadID string
}

// errRouteUnknown is returned for a path that is no endpoint of the API.
var errRouteUnknown = errors.New("no such endpoint")

// ParseRoute parses the part of a URL path after "/v2". It matches from the
// right, so repository names may themselves contain "manifests", "blobs" or
// "tags": "/v2/a/manifests/b/manifests/c" is manifest "c" of "a/manifests/b".
func ParseRoute(p string) (Route, error) {
	p = strings.TrimPrefix(p, "/")
	if p == "" {
		return Route{Kind: KindBase}, nil
	}
	if p == "_catalog" {
		return Route{Kind: KindCatalog}, nil
	}
	parts := strings.Split(p, "/")
	n := len(parts)
	last := parts[n-1]
	var r Route
	var nameParts []string
	switch {
	case n >= 3 && parts[n-2] == "blobs" && last == "uploads":
		// ".../blobs/uploads" is accepted without its trailing slash too.
		r.Kind, nameParts = KindUploadStart, parts[:n-2]
	case n >= 4 && parts[n-3] == "blobs" && parts[n-2] == "uploads" && last == "":
		r.Kind, nameParts = KindUploadStart, parts[:n-3]
	case n >= 4 && parts[n-3] == "blobs" && parts[n-2] == "uploads":
		if err := storage.ValidateUploadID(last); err != nil {
			return Route{}, err
		}
		r.Kind, r.UploadID, nameParts = KindUpload, last, parts[:n-3]
	case n >= 3 && parts[n-2] == "tags" && last == "list":
		r.Kind, nameParts = KindTags, parts[:n-2]
	case n >= 3 && parts[n-2] == "manifests" && last != "":
		r.Kind, r.Reference, nameParts = KindManifest, last, parts[:n-2]
	case n >= 3 && parts[n-2] == "blobs":
		r.Kind, nameParts = KindBlob, parts[:n-2]
	case n >= 3 && parts[n-2] == "referrers":
		r.Kind, nameParts = KindReferrers, parts[:n-2]
	case n >= 2 && last == "" && !routeWord(parts[n-2]):
		// "/v2/a/manifests/" is a manifest path missing its reference
		// more likely than repository "a/manifests": such a repository is
		// deleted with the registry's command, not over the API.
		r.Kind, nameParts = KindRepository, parts[:n-1]
	default:
		return Route{}, errRouteUnknown
	}
	r.Name = strings.Join(nameParts, "/")
	if err := storage.ValidateName(r.Name); err != nil {
		return Route{}, err
	}
	switch r.Kind {
	case KindBlob, KindReferrers:
		dg, err := storage.ParseDigest(last)
		if err != nil {
			return Route{}, err
		}
		r.Digest = dg
	case KindManifest:
		// A tag is validated by storage: reading a malformed one is
		// MANIFEST_UNKNOWN, writing one TAG_INVALID.
		if dg, err := digest.Parse(last); err == nil {
			r.Digest = dg
		}
	}
	return r, nil
}

// routeWord reports whether s is a path element the API's routes end with.
func routeWord(s string) bool {
	switch s {
	case "manifests", "blobs", "uploads", "tags", "list", "referrers":
		return true
	}
	return false
}

// Path returns the path after "/v2" that addresses r: the inverse of
// ParseRoute, which parses it back to r.
func (r Route) Path() string {
	switch r.Kind {
	case KindBase:
		return "/"
	case KindCatalog:
		return "/_catalog"
	case KindTags:
		return "/" + r.Name + "/tags/list"
	case KindManifest:
		return "/" + r.Name + "/manifests/" + r.Reference
	case KindBlob:
		return "/" + r.Name + "/blobs/" + r.Digest.String()
	case KindUploadStart:
		return "/" + r.Name + "/blobs/uploads/"
	case KindUpload:
		return "/" + r.Name + "/blobs/uploads/" + r.UploadID
	case KindReferrers:
		return "/" + r.Name + "/referrers/" + r.Digest.String()
	case KindRepository:
		return "/" + r.Name + "/"
	}
	return ""
}

// Access is one grant a request needs, in the token spec's terms: type
// "repository" or "registry", a resource name, actions.
type Access struct {
	Type    string
	Name    string
	Actions []string
}

// Access returns what a request with this method and query needs: reads need
// pull, writes pull and push, deletes delete, the catalog registry:catalog:*,
// and a cross-repository mount also pull on the source. The base route needs
// only an authenticated client (no access).
func (r Route) Access(method string, query url.Values) []Access {
	repo := func(actions ...string) Access {
		return Access{Type: "repository", Name: r.Name, Actions: actions}
	}
	switch r.Kind {
	case KindBase:
		return nil
	case KindCatalog:
		return []Access{{Type: "registry", Name: "catalog", Actions: []string{"*"}}}
	}
	switch method {
	case http.MethodGet, http.MethodHead:
		if r.Kind == KindUpload {
			return []Access{repo("pull", "push")}
		}
		return []Access{repo("pull")}
	case http.MethodDelete:
		if r.Kind == KindUpload {
			return []Access{repo("pull", "push")}
		}
		return []Access{repo("delete")}
	default:
		need := []Access{repo("pull", "push")}
		if r.Kind == KindUploadStart {
			if from := query.Get("from"); from != "" && query.Get("mount") != "" && from != r.Name {
				if storage.ValidateName(from) == nil {
					need = append(need, Access{Type: "repository", Name: from, Actions: []string{"pull"}})
				}
			}
		}
		return need
	}
}
