package auth

import (
	"errors"
	"fmt"
	"path"
	"regexp"
	"slices"
	"strings"
)

// Rule is one entry of the access policy, in the shape of
// cesanta/docker_auth's ACL entries, for example
//
//	acl:
//	  - match: {account: "*", name: "${account}/*"}
//	    actions: [pull, push]
type Rule struct {
	// Match selects the requests the rule applies to.
	Match Match `yaml:"match"`
	// Actions are granted, intersected with those asked for: pull, push,
	// delete, or "*" for every action asked for.
	Actions []string `yaml:"actions"`
	// Comment is free text for the reader of the configuration.
	Comment string `yaml:"comment"`
}

// Match holds the conditions of a rule; all that are set must hold.
//
// Account, Name and Type are patterns: a glob in the syntax of path.Match
// ("*" does not cross "/"), or a regular expression between slashes
// ("/^ci-.*$/", matched against the whole string).
type Match struct {
	// Account matches the user name. Nil (absent): any authenticated
	// user. "" matches only anonymous clients; no other pattern ever
	// matches an anonymous client.
	Account *string `yaml:"account"`
	// Group names a group of the configuration the user must belong to.
	// Empty: no group condition. Anonymous clients belong to no group.
	Group string `yaml:"group"`
	// Type matches the resource type. Empty means "repository": the
	// catalog (registry:catalog:*) is granted only by a rule that says
	// type: registry.
	Type string `yaml:"type"`
	// Name matches the resource name; "${account}" stands for the user
	// name, so "${account}/*" is a personal namespace. Empty: any name.
	Name string `yaml:"name"`
}

// Policy decides which of the requested actions an account gets: the first
// rule that matches decides, and without a matching rule nothing is granted.
type Policy struct {
	rules  []compiledRule
	groups map[string]map[string]bool
}

type compiledRule struct {
	account *pattern // nil: any authenticated user
	group   string
	typ     *pattern
	name    string   // a pattern holding ${account}, compiled per request
	namePat *pattern // a pattern without ${account}
	all     bool     // actions contain "*"
	actions []string
}

type pattern struct {
	glob string
	re   *regexp.Regexp
}

// NewPolicy compiles rules and groups (group name → member user names). It
// checks every pattern, action and group reference.
func NewPolicy(rules []Rule, groups map[string][]string) (*Policy, error) {
	p := &Policy{groups: map[string]map[string]bool{}}
	for g, members := range groups {
		set := map[string]bool{}
		for _, m := range members {
			set[m] = true
		}
		p.groups[g] = set
	}
	for i, r := range rules {
		c, err := p.compile(r)
		if err != nil {
			return nil, fmt.Errorf("acl rule %d: %w", i+1, err)
		}
		p.rules = append(p.rules, c)
	}
	return p, nil
}

func (p *Policy) compile(r Rule) (compiledRule, error) {
	var c compiledRule
	if r.Match.Account != nil {
		pt, err := compilePattern(*r.Match.Account)
		if err != nil {
			return c, fmt.Errorf("account: %w", err)
		}
		c.account = pt
	}
	if r.Match.Group != "" {
		if _, ok := p.groups[r.Match.Group]; !ok {
			return c, fmt.Errorf("group %q is not defined under groups", r.Match.Group)
		}
		c.group = r.Match.Group
	}
	typ := r.Match.Type
	if typ == "" {
		typ = TypeRepository
	}
	pt, err := compilePattern(typ)
	if err != nil {
		return c, fmt.Errorf("type: %w", err)
	}
	c.typ = pt
	if r.Match.Name != "" {
		// Check the syntax with a placeholder account.
		if _, err := compilePattern(expandAccount(r.Match.Name, "x")); err != nil {
			return c, fmt.Errorf("name: %w", err)
		}
	}
	if strings.Contains(r.Match.Name, "${account}") {
		c.name = r.Match.Name
	} else if r.Match.Name != "" {
		c.namePat, _ = compilePattern(r.Match.Name)
	}
	if len(r.Actions) == 0 {
		return c, errors.New("no actions: list pull, push, delete or \"*\"")
	}
	for _, a := range r.Actions {
		switch a {
		case ActionAll:
			c.all = true
		case ActionPull, ActionPush, ActionDelete:
			c.actions = append(c.actions, a)
		default:
			return c, fmt.Errorf("unknown action %q (want pull, push, delete or \"*\")", a)
		}
	}
	return c, nil
}

func compilePattern(s string) (*pattern, error) {
	if len(s) >= 2 && strings.HasPrefix(s, "/") && strings.HasSuffix(s, "/") {
		re, err := regexp.Compile("^(?:" + s[1:len(s)-1] + ")$")
		if err != nil {
			return nil, err
		}
		return &pattern{re: re}, nil
	}
	if _, err := path.Match(s, ""); err != nil {
		return nil, fmt.Errorf("bad glob %q: %w", s, err)
	}
	return &pattern{glob: s}, nil
}

func (pt *pattern) match(s string) bool {
	if pt.re != nil {
		return pt.re.MatchString(s)
	}
	ok, _ := path.Match(pt.glob, s)
	return ok
}

// expandAccount replaces ${account} in a name pattern with the account,
// escaped for the pattern's syntax so the account is matched literally.
func expandAccount(name, account string) string {
	if !strings.Contains(name, "${account}") {
		return name
	}
	var quoted string
	if len(name) >= 2 && strings.HasPrefix(name, "/") && strings.HasSuffix(name, "/") {
		quoted = regexp.QuoteMeta(account)
	} else {
		var b strings.Builder
		for _, r := range account {
			if strings.ContainsRune(`*?[]\`, r) {
				b.WriteByte('\\')
			}
			b.WriteRune(r)
		}
		quoted = b.String()
	}
	return strings.ReplaceAll(name, "${account}", quoted)
}

func (c *compiledRule) matches(p *Policy, account string, s Scope) bool {
	switch {
	case c.account == nil:
		if account == "" {
			return false
		}
	case c.account.glob == "" && c.account.re == nil:
		if account != "" {
			return false
		}
	default:
		if account == "" || !c.account.match(account) {
			return false
		}
	}
	if c.group != "" && (account == "" || !p.groups[c.group][account]) {
		return false
	}
	if !c.typ.match(s.Type) {
		return false
	}
	switch {
	case c.namePat != nil:
		return c.namePat.match(s.Name)
	case c.name != "":
		if account == "" {
			return false // ${account} names nobody for anonymous clients
		}
		pt, err := compilePattern(expandAccount(c.name, account))
		return err == nil && pt.match(s.Name)
	}
	return true
}

// Allowed returns the actions of req that account may perform: the
// intersection of the requested actions with those of the first matching
// rule. It may be empty; it is never nil. Account "" is anonymous.
func (p *Policy) Allowed(account string, req Scope) []string {
	granted := []string{}
	for i := range p.rules {
		c := &p.rules[i]
		if !c.matches(p, account, req) {
			continue
		}
		for _, a := range req.Actions {
			if c.all || slices.Contains(c.actions, a) {
				granted = append(granted, a)
			}
		}
		return granted
	}
	return granted
}

// Grant returns one scope per requested scope with the allowed actions
// (possibly none).
func (p *Policy) Grant(account string, reqs []Scope) []Scope {
	out := make([]Scope, len(reqs))
	for i, r := range reqs {
		r.Actions = p.Allowed(account, r)
		out[i] = r
	}
	return out
}
