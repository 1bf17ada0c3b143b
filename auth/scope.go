package auth

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Resource types and names with a fixed meaning in the token protocol.
const (
	// TypeRepository is the resource type of image repositories.
	TypeRepository = "repository"
	// TypeRegistry is the resource type of registry-wide resources.
	TypeRegistry = "registry"
	// NameCatalog is the registry resource that lists repositories
	// (scope "registry:catalog:*").
	NameCatalog = "catalog"
)

// Actions a scope may ask for on a repository.
const (
	// ActionPull reads manifests and blobs.
	ActionPull = "pull"
	// ActionPush writes them.
	ActionPush = "push"
	// ActionDelete deletes them.
	ActionDelete = "delete"
	// ActionAll stands for every action; "registry:catalog:*" uses it.
	ActionAll = "*"
)

// ErrMalformedScope is wrapped by every error of ParseScope.
var ErrMalformedScope = errors.New("malformed scope")

// Scope is a resource and a set of actions on it: what a client asks for in
// the "scope" parameter, and what a token grants in its "access" claim, whose
// JSON shape ({type, class, name, actions}) this type has. The zero value is
// not a valid scope.
type Scope struct {
	// Type is the resource type, such as "repository" or "registry".
	Type string `json:"type"`
	// Class is the optional resource class written in parentheses after
	// the type, as in "repository(plugin)"; empty when absent.
	Class string `json:"class,omitempty"`
	// Name is the resource name. It may start with "host[:port]/".
	Name string `json:"name"`
	// Actions are the actions, in the order given. Never nil in tokens:
	// an empty grant is encoded as [].
	Actions []string `json:"actions"`
}

// ParseScope parses one scope of the grammar type[(class)]:name:action[,action].
// The type ends at the first colon and the actions start after the last one,
// so names with a "host:port/" prefix parse correctly. A name must be UTF-8
// (a token's JSON could not carry it otherwise) without spaces or control
// characters.
func ParseScope(s string) (Scope, error) {
	typ, rest, ok := strings.Cut(s, ":")
	if !ok {
		return Scope{}, fmt.Errorf("%w %q: want type:name:actions", ErrMalformedScope, s)
	}
	i := strings.LastIndexByte(rest, ':')
	if i < 0 {
		return Scope{}, fmt.Errorf("%w %q: want type:name:actions", ErrMalformedScope, s)
	}
	name, actions := rest[:i], rest[i+1:]
	var sc Scope
	if open := strings.IndexByte(typ, '('); open >= 0 {
		if !strings.HasSuffix(typ, ")") {
			return Scope{}, fmt.Errorf("%w %q: unterminated class", ErrMalformedScope, s)
		}
		sc.Class = typ[open+1 : len(typ)-1]
		typ = typ[:open]
		if !isWord(sc.Class) {
			return Scope{}, fmt.Errorf("%w %q: bad class", ErrMalformedScope, s)
		}
	}
	if !isWord(typ) {
		return Scope{}, fmt.Errorf("%w %q: bad type", ErrMalformedScope, s)
	}
	sc.Type = typ
	if name == "" || !utf8.ValidString(name) || strings.ContainsFunc(name, notInName) {
		return Scope{}, fmt.Errorf("%w %q: bad name", ErrMalformedScope, s)
	}
	sc.Name = name
	for _, a := range strings.Split(actions, ",") {
		if a != ActionAll && !isWord(a) {
			return Scope{}, fmt.Errorf("%w %q: bad action %q", ErrMalformedScope, s, a)
		}
		if !slices.Contains(sc.Actions, a) {
			sc.Actions = append(sc.Actions, a)
		}
	}
	return sc, nil
}

// ParseScopes parses the values of one or more "scope" parameters, each of
// which may hold several scopes separated by spaces. Empty values are
// skipped. Scopes naming the same resource are merged.
func ParseScopes(values ...string) ([]Scope, error) {
	var out []Scope
	for _, v := range values {
		for _, f := range strings.Fields(v) {
			sc, err := ParseScope(f)
			if err != nil {
				return nil, err
			}
			out = mergeScope(out, sc)
		}
	}
	return out, nil
}

func mergeScope(list []Scope, sc Scope) []Scope {
	for i := range list {
		if list[i].Type == sc.Type && list[i].Class == sc.Class && list[i].Name == sc.Name {
			for _, a := range sc.Actions {
				if !slices.Contains(list[i].Actions, a) {
					list[i].Actions = append(list[i].Actions, a)
				}
			}
			return list
		}
	}
	return append(list, sc)
}

// UnmarshalJSON decodes a scope of a token's "access" claim by the exact
// names of its members, as Claims are decoded.
func (s *Scope) UnmarshalJSON(data []byte) error {
	return decodeExact(data, []member{
		{"type", &s.Type}, {"class", &s.Class}, {"name", &s.Name}, {"actions", &s.Actions},
	})
}

// String formats the scope in the grammar ParseScope reads. A scope with no
// actions formats with an empty action list ("repository:a:").
func (s Scope) String() string {
	var b strings.Builder
	b.WriteString(s.Type)
	if s.Class != "" {
		b.WriteString("(" + s.Class + ")")
	}
	b.WriteString(":" + s.Name + ":")
	b.WriteString(strings.Join(s.Actions, ","))
	return b.String()
}

// Allows reports whether the scope covers action on the resource of type
// typ called name. ActionAll in the scope covers every action.
func (s Scope) Allows(typ, name, action string) bool {
	if s.Type != typ || s.Name != name {
		return false
	}
	return slices.Contains(s.Actions, action) || slices.Contains(s.Actions, ActionAll)
}

// FormatScopes joins the scopes that carry at least one action with spaces,
// the form of the "scope" field of an OAuth2 token response.
func FormatScopes(scopes []Scope) string {
	parts := make([]string, 0, len(scopes))
	for _, s := range scopes {
		if len(s.Actions) > 0 {
			parts = append(parts, s.String())
		}
	}
	return strings.Join(parts, " ")
}

func isWord(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-') {
			return false
		}
	}
	return true
}

func isSpaceOrControl(r rune) bool { return r <= ' ' || r == 0x7f }

// notInName reports whether a scope name may not hold r: a space of any
// kind (a "scope" parameter separates scopes with them, and ParseScopes
// splits on every Unicode space) or a control character.
func notInName(r rune) bool { return r <= ' ' || unicode.IsSpace(r) || unicode.IsControl(r) }
