package main

import (
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"time"

	"github.com/berth-registry/berth/notify"
	"github.com/berth-registry/berth/storage/driver"
)

// NotificationsConfig is the notifications section: Distribution's keys
// (events, endpoints) and Berth's queue.
type NotificationsConfig struct {
	Events struct {
		// IncludeReferences adds a manifest's references to its push and
		// pull events.
		IncludeReferences bool `yaml:"includereferences"`
	} `yaml:"events"`
	// Endpoints receive the events; none: no notifications. From the
	// environment the whole list is one YAML value
	// (REGISTRY_NOTIFICATIONS_ENDPOINTS='[{name: hook, url: …}]').
	Endpoints []EndpointConfig `yaml:"endpoints"`
	// Queue is Berth's: Distribution's queue is in memory.
	Queue struct {
		// FlushInterval: pull events are written to the queue at most
		// this long after their answer (default 1s); other events before
		// their answer.
		FlushInterval time.Duration `yaml:"flushinterval"`
		// AdoptAfter: the queue of a registry that has not shown it is
		// alive for this long (killed) is delivered by a live one
		// (default 1m). The same on every registry on one storage.
		AdoptAfter time.Duration `yaml:"adoptafter"`
		// MaxAge: events not delivered this long after they were queued
		// are dropped, logged (default 168h; negative: never).
		MaxAge time.Duration `yaml:"maxage"`
	} `yaml:"queue"`
}

// EndpointConfig is one notifications.endpoints entry, with
// Distribution's keys, meanings and defaults.
type EndpointConfig struct {
	// Name identifies the endpoint (required, unique).
	Name string `yaml:"name"`
	// Disabled skips the endpoint.
	Disabled bool `yaml:"disabled"`
	// URL receives the events (required, http or https).
	URL string `yaml:"url"`
	// Headers are added to every request; each value is a list.
	Headers http.Header `yaml:"headers"`
	// Timeout bounds a request (default 1s).
	Timeout time.Duration `yaml:"timeout"`
	// Threshold failures in a row are retried at once; then each retry
	// waits Backoff (default 10).
	Threshold int `yaml:"threshold"`
	// Backoff is the wait between retries past the threshold (default 1s).
	Backoff time.Duration `yaml:"backoff"`
	// IgnoredMediaTypes: events with these target media types are not
	// sent (as ignore.mediatypes).
	IgnoredMediaTypes []string `yaml:"ignoredmediatypes"`
	Ignore            struct {
		// MediaTypes: events with these target media types are not sent.
		MediaTypes []string `yaml:"mediatypes"`
		// Actions: events with these actions (push, pull, mount, delete)
		// are not sent.
		Actions []string `yaml:"actions"`
	} `yaml:"ignore"`
}

// validate checks the section; disabled endpoints are checked too, so a
// mistake shows before someone enables one.
func (c *NotificationsConfig) validate() error {
	names := make(map[string]bool)
	for i, e := range c.Endpoints {
		key := fmt.Sprintf("notifications.endpoints[%d]", i)
		if e.Name == "" {
			return fmt.Errorf("config: %s.name is empty", key)
		}
		if names[e.Name] {
			return fmt.Errorf("config: %s.name %q is used twice", key, e.Name)
		}
		names[e.Name] = true
		if u, err := url.Parse(e.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("config: %s.url %q: want an http or https URL", key, e.URL)
		}
		if e.Timeout < 0 || e.Backoff < 0 || e.Threshold < 0 {
			return fmt.Errorf("config: %s: timeout, threshold and backoff must not be negative", key)
		}
		for _, a := range e.Ignore.Actions {
			switch a {
			case notify.ActionPush, notify.ActionPull, notify.ActionMount, notify.ActionDelete:
			default:
				return fmt.Errorf("config: %s.ignore.actions: %q is not push, pull, mount or delete", key, a)
			}
		}
	}
	if c.Queue.FlushInterval < 0 || c.Queue.AdoptAfter < 0 {
		return fmt.Errorf("config: notifications.queue: flushinterval and adoptafter must not be negative")
	}
	return nil
}

// newNotifier builds the notifier the configuration asks for, nil when
// no endpoint is enabled.
func newNotifier(cfg Config, drv driver.Driver, log *slog.Logger) (*notify.Notifier, error) {
	nc := cfg.Notifications
	var eps []notify.Endpoint
	for _, e := range nc.Endpoints {
		if e.Disabled {
			log.Info("notifications: endpoint disabled", "endpoint", e.Name)
			continue
		}
		log.Info("notifications: endpoint", "endpoint", e.Name, "url", e.URL, "timeout", e.Timeout,
			"threshold", e.Threshold, "backoff", e.Backoff)
		eps = append(eps, notify.Endpoint{
			Name: e.Name, URL: e.URL, Headers: e.Headers, Timeout: e.Timeout, Threshold: e.Threshold, Backoff: e.Backoff,
			IgnoredMediaTypes: e.IgnoredMediaTypes, IgnoreMediaTypes: e.Ignore.MediaTypes, IgnoreActions: e.Ignore.Actions,
		})
	}
	if len(eps) == 0 {
		return nil, nil
	}
	return notify.New(drv, notify.Options{
		Endpoints:         eps,
		IncludeReferences: nc.Events.IncludeReferences,
		SourceAddr:        sourceAddr(cfg.HTTP.Addr),
		FlushInterval:     nc.Queue.FlushInterval,
		AdoptAfter:        nc.Queue.AdoptAfter,
		MaxAge:            nc.Queue.MaxAge,
		Logger:            log,
	})
}

// sourceAddr is source.addr of events, as Distribution makes it: this
// machine's name and the port of http.addr.
func sourceAddr(addr string) string {
	host, err := os.Hostname()
	if err != nil {
		return addr
	}
	if _, port, err := net.SplitHostPort(addr); err == nil {
		return net.JoinHostPort(host, port)
	}
	return host
}
