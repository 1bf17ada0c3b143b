package storage

import (
	"path"
	"strconv"

	"github.com/opencontainers/go-digest"
)

// The on-disk tree is CNCF Distribution's, so either program serves the
// other's data directory. Berth adds _referrers (an index Distribution
// does not keep) and, beside Distribution's tree where it never looks, the
// state garbage collection shares with requests (see lease.go):
//
//	/docker/registry/v2/_berth/
//	├── leases/<alg>/<hex[0:2]>/<hex>                           renewed by requests that rely on content
//	├── doomed/blobs/<alg>/<hex>                                a collection is removing this digest
//	├── doomed/tags/<name>/@<tag>                               retention is removing this tag
//	├── gc/lock                                                 the collection running, if any
//	├── proxy/fetched/<name>/@<tag>                             when a pull-through cache last fetched the tag (RFC 3339)
//	├── proxy/foreign/<name>/@<alg>/<hex>                       a foreign layer of a manifest the cache stored
//	├── ui/session-key                                          the key sealing the web pages' session cookies (package ui)
//	└── events/<instance>/…                                     the notification queue (package notify)
//
// Upload hash states are kept in memory, not in
// _uploads/<id>/hashstates as Distribution does (see Store.hashState).
//
//	/docker/registry/v2/
//	├── blobs/<alg>/<hex[0:2]>/<hex>/data                      content, write-once
//	└── repositories/<name>/
//	    ├── _layers/<alg>/<hex>/link                           blob linked into the repository
//	    ├── _manifests/revisions/<alg>/<hex>/link              manifest in the repository
//	    ├── _manifests/tags/<tag>/current/link                 what the tag points at
//	    ├── _manifests/tags/<tag>/index/<alg>/<hex>/link       every digest the tag has pointed at
//	    ├── _uploads/<id>/data                                 bytes received so far
//	    ├── _uploads/<id>/startedat                            RFC 3339 start time
//	    └── _referrers/<alg>/<hex>/<alg>/<hex>/link            subject → referring manifest
//
// A link file holds a digest string ("sha256:…") and nothing else.
const root = "/docker/registry/v2"

func blobDataPath(dg digest.Digest) string {
	hex := dg.Encoded()
	return path.Join(root, "blobs", dg.Algorithm().String(), hex[:2], hex, "data")
}

func repoPath(name string) string { return path.Join(root, "repositories", name) }

func repositoriesPath() string { return path.Join(root, "repositories") }

func layerLinkPath(name string, dg digest.Digest) string {
	return path.Join(repoPath(name), "_layers", dg.Algorithm().String(), dg.Encoded(), "link")
}

func revisionLinkPath(name string, dg digest.Digest) string {
	return path.Join(repoPath(name), "_manifests", "revisions", dg.Algorithm().String(), dg.Encoded(), "link")
}

func tagsPath(name string) string { return path.Join(repoPath(name), "_manifests", "tags") }

func tagPath(name, tag string) string { return path.Join(tagsPath(name), tag) }

func tagCurrentPath(name, tag string) string { return path.Join(tagPath(name, tag), "current", "link") }

func tagIndexPath(name, tag string, dg digest.Digest) string {
	return path.Join(tagPath(name, tag), "index", dg.Algorithm().String(), dg.Encoded(), "link")
}

func uploadPath(name, id string) string { return path.Join(repoPath(name), "_uploads", id) }

func uploadDataPath(name, id string) string { return path.Join(uploadPath(name, id), "data") }

func uploadStartedPath(name, id string) string { return path.Join(uploadPath(name, id), "startedat") }

// uploadHashStatesPath holds an upload's saved sha256 states, one file per
// size the upload had after a chunk, as Distribution keeps them.
func uploadHashStatesPath(name, id string) string {
	return path.Join(uploadPath(name, id), "hashstates", "sha256")
}

func uploadHashStatePath(name, id string, size int64) string {
	return path.Join(uploadHashStatesPath(name, id), strconv.FormatInt(size, 10))
}

func referrersPath(name string, subject digest.Digest) string {
	return path.Join(repoPath(name), "_referrers", subject.Algorithm().String(), subject.Encoded())
}

func referrerLinkPath(name string, subject, referrer digest.Digest) string {
	return path.Join(referrersPath(name, subject), referrer.Algorithm().String(), referrer.Encoded(), "link")
}
