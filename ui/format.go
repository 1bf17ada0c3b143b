package ui

import (
	"fmt"
	"net/url"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/storage"
)

// Pages of a repository, after /ui/r/.
const (
	pageTags     = iota // <name>/
	pageManifest        // <name>/-/manifests/<digest>
	pageDelete          // <name>/-/delete
)

// repoPage is a parsed /ui/r/ path.
type repoPage struct {
	kind   int
	name   string
	digest digest.Digest // pageManifest
}

// parseRepoPath parses what follows /ui/r/, from the right: "-" is never
// a repository name's component, so the first "/-/" ends the name.
func parseRepoPath(rest string) (repoPage, bool) {
	var p repoPage
	name, tail, found := strings.Cut(rest, "/-/")
	switch {
	case !found:
		n, ok := strings.CutSuffix(rest, "/")
		if !ok {
			return p, false
		}
		p.kind, p.name = pageTags, n
	case tail == "delete":
		p.kind, p.name = pageDelete, name
	case strings.HasPrefix(tail, "manifests/"):
		dg, err := storage.ParseDigest(strings.TrimPrefix(tail, "manifests/"))
		if err != nil {
			return p, false
		}
		p.kind, p.name, p.digest = pageManifest, name, dg
	default:
		return p, false
	}
	if storage.ValidateName(p.name) != nil {
		return p, false
	}
	return p, true
}

func repoURL(name string) string { return "/ui/r/" + name + "/" }

func manifestURL(name string, dg digest.Digest) string {
	return "/ui/r/" + name + "/-/manifests/" + dg.String()
}

// deleteURL is the confirmation page for deleting a tag (kind "tag") or a
// manifest (kind "digest").
func deleteURL(name, kind, ref string) string {
	return "/ui/r/" + name + "/-/delete?" + url.Values{kind: {ref}}.Encode()
}

// humanSize formats a byte count in binary units.
func humanSize(n int64) string {
	if n < 1024 {
		return fmt.Sprintf("%d B", n)
	}
	f := float64(n)
	for _, unit := range []string{"KiB", "MiB", "GiB", "TiB"} {
		f /= 1024
		if f < 1024 || unit == "TiB" {
			if f < 10 {
				return fmt.Sprintf("%.1f %s", f, unit)
			}
			return fmt.Sprintf("%.0f %s", f, unit)
		}
	}
	return ""
}

// shortDigest is a digest cut to 12 hex digits, for tables.
func shortDigest(dg digest.Digest) string {
	s := dg.String()
	alg, hex, ok := strings.Cut(s, ":")
	if !ok || len(hex) <= 12 {
		return s
	}
	return alg + ":" + hex[:12]
}
