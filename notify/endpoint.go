package notify

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"time"
)

// Endpoint is one receiver of notifications: Distribution's
// notifications.endpoints entry, with its defaults.
type Endpoint struct {
	// Name identifies the endpoint in logs and names its queue in
	// storage. Required; unique among the endpoints.
	Name string
	// URL receives a POST per event. Required.
	URL string
	// Headers are added to every request (an Authorization header, say).
	Headers http.Header
	// Timeout bounds one request (zero: 1s, Distribution's default).
	Timeout time.Duration
	// Threshold is how many consecutive failed attempts are retried at
	// once; after that many, each further attempt waits Backoff after the
	// last failure, until one succeeds (zero: 10).
	Threshold int
	// Backoff is the wait between attempts once Threshold is reached
	// (zero: 1s).
	Backoff time.Duration
	// IgnoredMediaTypes and IgnoreMediaTypes (Distribution's
	// ignoredmediatypes and ignore.mediatypes, which mean the same) are
	// target media types whose events this endpoint does not get.
	IgnoredMediaTypes []string
	IgnoreMediaTypes  []string
	// IgnoreActions are actions (push, pull, mount, delete) whose events
	// this endpoint does not get.
	IgnoreActions []string
	// Transport sends the requests. Nil: a transport of its own, with
	// http.DefaultTransport's settings.
	Transport http.RoundTripper
}

// endpoint is an Endpoint ready to deliver.
type endpoint struct {
	Endpoint
	dir           string // the queue's directory name in storage
	client        *http.Client
	ignoreTypes   map[string]bool
	ignoreActions map[string]bool
	kick          chan struct{} // there may be something new to deliver
}

func newEndpoint(e Endpoint) (*endpoint, error) {
	if e.Name == "" {
		return nil, fmt.Errorf("notify: an endpoint has no name")
	}
	if e.URL == "" {
		return nil, fmt.Errorf("notify: endpoint %s has no url", e.Name)
	}
	if e.Timeout <= 0 {
		e.Timeout = time.Second
	}
	if e.Threshold <= 0 {
		e.Threshold = 10
	}
	if e.Backoff <= 0 {
		e.Backoff = time.Second
	}
	tr := e.Transport
	if tr == nil {
		tr = http.DefaultTransport.(*http.Transport).Clone()
	}
	ep := &endpoint{
		Endpoint:      e,
		dir:           queueName(e.Name),
		client:        &http.Client{Transport: tr, Timeout: e.Timeout},
		ignoreTypes:   make(map[string]bool),
		ignoreActions: make(map[string]bool),
		kick:          make(chan struct{}, 1),
	}
	for _, mt := range append(append([]string(nil), e.IgnoredMediaTypes...), e.IgnoreMediaTypes...) {
		ep.ignoreTypes[mt] = true
	}
	for _, a := range e.IgnoreActions {
		ep.ignoreActions[a] = true
	}
	return ep, nil
}

// wants reports whether ev goes to this endpoint: its action and its
// target's media type are both not ignored (Distribution's rule).
func (e *endpoint) wants(ev *Event) bool {
	return !e.ignoreActions[ev.Action] && !e.ignoreTypes[ev.Target.MediaType]
}

// post sends one event (its JSON) in an envelope of its own, as
// Distribution does. Any 2xx or 3xx answer (after redirects) is delivery.
func (e *endpoint) post(ctx context.Context, event []byte) error {
	body := make([]byte, 0, len(event)+16)
	body = append(body, `{"events":[`...)
	body = append(body, event...)
	body = append(body, "]}"...)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.URL, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", EventsMediaType)
	for k, vs := range e.Headers {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	resp, err := e.client.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode >= 400 {
		return fmt.Errorf("answered %s", resp.Status)
	}
	return nil
}

func (e *endpoint) signal() {
	select {
	case e.kick <- struct{}{}:
	default:
	}
}

// breaker is Distribution's retry rule: attempts go on at once until
// threshold consecutive ones failed; from then on each waits backoff
// after the last failure. A success resets it.
type breaker struct {
	threshold int
	backoff   time.Duration
	failures  int
	last      time.Time
}

// delay is how long to wait, at now, before the next attempt.
func (b *breaker) delay(now time.Time) time.Duration {
	if b.failures < b.threshold {
		return 0
	}
	return max(b.last.Add(b.backoff).Sub(now), 0)
}

func (b *breaker) failure(now time.Time) {
	b.failures++
	b.last = now
}

func (b *breaker) success() { b.failures = 0 }
