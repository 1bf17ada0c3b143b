package main

import (
	"cmp"
	"fmt"
	"time"

	"github.com/berth-registry/berth/proxy"
	"github.com/berth-registry/berth/storage"
)

// ProxyConfig is Distribution's proxy section, plus Berth's upstreams.
// With remoteurl set, every repository is a mirror of that one registry
// (Docker's registry-mirrors: library/alpine for Docker Hub's alpine) and
// nothing can be pushed; upstreams instead mirror one registry per
// repository prefix, beside ordinary repositories. Not both. Passwords
// are never logged.
type ProxyConfig struct {
	// RemoteURL is the registry mirrored (https://registry-1.docker.io).
	// Empty: Distribution's mode is off.
	RemoteURL string `yaml:"remoteurl"`
	// Username and Password authenticate to it. Empty: anonymous.
	Username string `yaml:"username"`
	Password string `yaml:"password"`
	// TTL is how long cached content is kept, as in Distribution
	// (default 168h): garbage collection removes tags not fetched or
	// changed for longer, then what only they kept. 0 or negative: kept
	// forever. A registry with a TTL collects on its own (see
	// startMaintenance).
	TTL time.Duration `yaml:"ttl"`
	// TagCheck (Berth's) is how long a tag the upstream confirmed is
	// served without asking it again. 0 (the default): a HEAD on every
	// pull of a tag, as Distribution does.
	TagCheck time.Duration `yaml:"tagcheck"`
	// CA (Berth's) is a PEM file of CAs trusted for the upstream besides
	// the system's. Empty: the system's only.
	CA string `yaml:"ca"`
	// Upstreams is Berth's: several mirrored registries, each under its
	// prefix. From the environment the whole list is one YAML value
	// (REGISTRY_PROXY_UPSTREAMS='[{prefix: hub, remoteurl:
	// "https://registry-1.docker.io"}]'). Empty: none.
	Upstreams []UpstreamConfig `yaml:"upstreams"`
}

// UpstreamConfig is one entry of proxy.upstreams.
type UpstreamConfig struct {
	// Prefix is the first component(s) of the local repositories that
	// mirror this registry ("hub": hub/library/alpine is library/alpine
	// there). Required; prefixes must not overlap.
	Prefix    string `yaml:"prefix"`
	RemoteURL string `yaml:"remoteurl"`
	Username  string `yaml:"username"`
	Password  string `yaml:"password"`
	// TTL and TagCheck: as proxy.ttl and proxy.tagcheck. Nil (not set):
	// those.
	TTL      *time.Duration `yaml:"ttl"`
	TagCheck *time.Duration `yaml:"tagcheck"`
	// CA: as proxy.ca, for this upstream alone. Empty: the system's CAs.
	CA string `yaml:"ca"`
}

// proxyUpstreams maps the proxy section onto the proxy's upstreams
// (none when it is off).
func (c *Config) proxyUpstreams() []proxy.Upstream {
	p := c.Proxy
	if p.RemoteURL != "" {
		return []proxy.Upstream{{RemoteURL: p.RemoteURL, Username: p.Username, Password: p.Password,
			TTL: p.TTL, TagCheck: p.TagCheck, CAFile: p.CA}}
	}
	var ups []proxy.Upstream
	for _, u := range p.Upstreams {
		ups = append(ups, proxy.Upstream{Prefix: u.Prefix, RemoteURL: u.RemoteURL, Username: u.Username, Password: u.Password,
			TTL: *cmp.Or(u.TTL, &p.TTL), TagCheck: *cmp.Or(u.TagCheck, &p.TagCheck), CAFile: u.CA})
	}
	return ups
}

// proxyRetention returns the retention rules that expire the pull-through
// cache's content after its ttl (none when it is off or every ttl is 0 or
// less), and how often a registry must collect for them: the shortest ttl,
// at most storage.gc.interval.
func (c *Config) proxyRetention() ([]storage.RetentionRule, time.Duration) {
	ups := c.proxyUpstreams()
	rules := proxy.Retention(ups)
	interval := c.Storage.GC.Interval
	for _, u := range ups {
		if u.TTL > 0 {
			interval = min(interval, u.TTL)
		}
	}
	return rules, interval
}

// proxyGCOptions returns the options of the collections a registry runs
// for the pull-through cache's ttl while storage.gc is off, and their
// interval; ok is false when there is no ttl. storage.gc.retention's rules
// still win for the repositories they match, but, as storage.gc is off,
// they remove nothing there: those repositories keep everything.
func (c *Config) proxyGCOptions() (opts storage.GCOptions, interval time.Duration, ok bool) {
	ttlRules, interval := c.proxyRetention()
	if len(ttlRules) == 0 {
		return opts, 0, false
	}
	for _, rc := range c.Storage.GC.Retention {
		r := storage.RetentionRule{Repositories: rc.Repositories} // removes nothing
		if r.Compile() == nil {
			opts.Retention = append(opts.Retention, r)
		}
	}
	opts.Retention = append(opts.Retention, ttlRules...)
	return opts, interval, true
}

// validateProxy checks the proxy section; errors name the key, never a
// password.
func (c *Config) validateProxy() error {
	p := c.Proxy
	if p.RemoteURL != "" && len(p.Upstreams) > 0 {
		return fmt.Errorf("config: proxy: set remoteurl (one upstream for every repository) or upstreams, not both")
	}
	if p.RemoteURL == "" && (p.Username != "" || p.Password != "") {
		return fmt.Errorf("config: proxy.username and proxy.password need proxy.remoteurl")
	}
	if p.RemoteURL == "" && p.CA != "" {
		return fmt.Errorf("config: proxy.ca needs proxy.remoteurl (an upstream's own is proxy.upstreams[].ca)")
	}
	if p.TagCheck < 0 {
		return fmt.Errorf("config: proxy.tagcheck is %v: want a duration, 0 or more", p.TagCheck)
	}
	if p.CA != "" {
		if _, err := proxy.LoadCA(p.CA); err != nil {
			return fmt.Errorf("config: proxy.ca: %w", err)
		}
	}
	for i, u := range p.Upstreams {
		if u.Prefix == "" {
			return fmt.Errorf("config: proxy.upstreams[%d].prefix is empty (use proxy.remoteurl to mirror every repository)", i)
		}
		if u.TagCheck != nil && *u.TagCheck < 0 {
			return fmt.Errorf("config: proxy.upstreams[%d].tagcheck is %v: want a duration, 0 or more, or none for proxy.tagcheck", i, *u.TagCheck)
		}
		if u.CA != "" {
			if _, err := proxy.LoadCA(u.CA); err != nil {
				return fmt.Errorf("config: proxy.upstreams[%d].ca: %w", i, err)
			}
		}
	}
	if err := proxy.Validate(c.proxyUpstreams()); err != nil {
		return fmt.Errorf("config: proxy: %w", err)
	}
	return nil
}
