package storage

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"
)

// RetentionRule says which tags of the repositories it matches a
// collection removes. A tag is removed when it does not match KeepTags,
// is not among the KeepLast most recently pushed of the tags that do not
// match KeepTags, and was pushed more than TagsOlderThan ago; a criterion
// that is zero does not apply, and a rule with neither KeepLast nor
// TagsOlderThan removes no tag. The zero value removes nothing.
type RetentionRule struct {
	// Repositories is a pattern on repository names: "*" matches within a
	// path component, "**" across components ("team/**"). Empty: every
	// repository.
	Repositories string
	// KeepLast keeps the N most recently pushed tags (re-pushing a tag
	// counts as pushing it).
	KeepLast int
	// KeepTags is a regular expression; tags it matches are always kept
	// ("^v[0-9]+" for releases). Empty: none.
	KeepTags string
	// TagsOlderThan removes only tags pushed longer ago than this.
	TagsOlderThan time.Duration
	// UntaggedOlderThan removes the repositories' untagged manifests (as
	// GCOptions.DeleteUntagged does) once they are this old, and never
	// before the grace period has passed. Zero: only DeleteUntagged does.
	UntaggedOlderThan time.Duration

	repos *regexp.Regexp
	keep  *regexp.Regexp
}

// Compile checks the rule's patterns; a collection compiles rules it is
// given, and ignores a rule that does not compile (so call this first).
func (r *RetentionRule) Compile() error {
	var b strings.Builder
	b.WriteString("^")
	for i := 0; i < len(r.Repositories); i++ {
		switch ch := r.Repositories[i]; {
		case strings.HasPrefix(r.Repositories[i:], "**"):
			b.WriteString(".*")
			i++
		case ch == '*':
			b.WriteString("[^/]*")
		case ch == '?':
			b.WriteString("[^/]")
		default:
			b.WriteString(regexp.QuoteMeta(string(ch)))
		}
	}
	b.WriteString("$")
	repos, err := regexp.Compile(b.String())
	if err != nil {
		return fmt.Errorf("retention: repositories %q: %w", r.Repositories, err)
	}
	if r.Repositories == "" {
		repos = regexp.MustCompile("")
	}
	var keep *regexp.Regexp
	if r.KeepTags != "" {
		if keep, err = regexp.Compile(r.KeepTags); err != nil {
			return fmt.Errorf("retention: keeptags %q: %w", r.KeepTags, err)
		}
	}
	if r.KeepLast < 0 || r.TagsOlderThan < 0 || r.UntaggedOlderThan < 0 {
		return fmt.Errorf("retention: keeplast and ages cannot be negative")
	}
	r.repos, r.keep = repos, keep
	return nil
}

// matchRule returns the first rule that applies to repository name, or nil.
func matchRule(rules []RetentionRule, name string) *RetentionRule {
	for i := range rules {
		r := &rules[i]
		if r.repos == nil && r.Compile() != nil {
			continue
		}
		if r.repos.MatchString(name) {
			return r
		}
	}
	return nil
}

// needsTagTimes reports whether the rule looks at when tags were pushed.
func (r *RetentionRule) needsTagTimes() bool {
	return r != nil && (r.KeepLast > 0 || r.TagsOlderThan > 0)
}

// dropTags returns the tags the rule removes, at time now.
func (r *RetentionRule) dropTags(tags map[string]tagState, now time.Time) []string {
	if !r.needsTagTimes() {
		return nil
	}
	var candidates []string
	for tag := range tags {
		if r.keep == nil || !r.keep.MatchString(tag) {
			candidates = append(candidates, tag)
		}
	}
	// Most recently pushed first; ties by name, so a run is repeatable.
	slices.SortFunc(candidates, func(a, b string) int {
		if c := tags[b].modTime.Compare(tags[a].modTime); c != 0 {
			return c
		}
		return strings.Compare(a, b)
	})
	var drop []string
	for i, tag := range candidates {
		if r.KeepLast > 0 && i < r.KeepLast {
			continue
		}
		if r.TagsOlderThan > 0 && now.Sub(tags[tag].modTime) <= r.TagsOlderThan {
			continue
		}
		drop = append(drop, tag)
	}
	return drop
}
