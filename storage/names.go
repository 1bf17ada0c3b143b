package storage

import (
	"fmt"
	"regexp"

	"github.com/opencontainers/go-digest"
)

// MaxNameLength is the longest repository name accepted, as in Distribution.
const MaxNameLength = 255

var (
	nameRE = regexp.MustCompile(`^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$`)
	tagRE  = regexp.MustCompile(`^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$`)
)

// ValidateName checks a repository name against the OCI grammar and length
// limit. Every storage method that takes a name calls it first.
func ValidateName(name string) error {
	if len(name) > MaxNameLength || !nameRE.MatchString(name) {
		return fmt.Errorf("%w: %q", ErrNameInvalid, truncate(name))
	}
	return nil
}

// ValidateTag checks a tag against the OCI grammar.
func ValidateTag(tag string) error {
	if !tagRE.MatchString(tag) {
		return fmt.Errorf("%w: %q", ErrTagInvalid, truncate(tag))
	}
	return nil
}

// ParseDigest parses and validates a digest of an algorithm the registry
// can compute.
func ParseDigest(s string) (digest.Digest, error) {
	dg, err := digest.Parse(s)
	if err != nil {
		return "", fmt.Errorf("%w: %q", ErrDigestInvalid, truncate(s))
	}
	return dg, nil
}

func truncate(s string) string {
	if len(s) > 300 {
		return s[:300] + "…"
	}
	return s
}
