package notify

import (
	"crypto/rand"
	"encoding/hex"
	"time"

	v1 "github.com/opencontainers/image-spec/specs-go/v1"
)

// EventsMediaType is the Content-Type of every notification request, and
// of the envelope it carries, as CNCF Distribution sends it.
const EventsMediaType = "application/vnd.docker.distribution.events.v2+json"

// The actions an event can have, Distribution's.
const (
	ActionPush   = "push"
	ActionPull   = "pull"
	ActionMount  = "mount"
	ActionDelete = "delete"
)

// Envelope is the body of a notification request: one or more events with
// no implied relationship.
type Envelope struct {
	Events []Event `json:"events"`
}

// Event is one thing that happened in the registry, with Distribution
// v3's fields and JSON names, so receivers written for Distribution read
// it unchanged. The zero values of ID, Timestamp and Source are filled in
// by the Notifier.
type Event struct {
	// ID identifies the event; a redelivered event keeps it.
	ID string `json:"id,omitempty"`
	// Timestamp is when the event happened.
	Timestamp time.Time `json:"timestamp"`
	// Action is push, pull, mount or delete.
	Action string `json:"action,omitempty"`
	// Target is what the action was done to.
	Target Target `json:"target"`
	// Request is the HTTP request that caused the event.
	Request RequestRecord `json:"request"`
	// Actor is who made the request.
	Actor ActorRecord `json:"actor"`
	// Source is the registry process that saw the event.
	Source SourceRecord `json:"source"`
}

// Target describes the manifest, blob, tag or repository of an event. As in
// Distribution, a delete event names only the digest (manifests, blobs) or
// the tag (tags) and the repository; the descriptor's other fields are then
// zero, and mediaType and size are still sent (as "" and 0).
type Target struct {
	v1.Descriptor
	// Length is Size again, for receivers older than Distribution 2.1.
	Length int64 `json:"length,omitempty"`
	// Repository is the repository's name.
	Repository string `json:"repository,omitempty"`
	// FromRepository is where a mounted blob came from ("" when the mount
	// named no source).
	FromRepository string `json:"fromRepository,omitempty"`
	// URL fetches the content from the registry.
	URL string `json:"url,omitempty"`
	// Tag is the tag a manifest was pushed or pulled by, or the deleted tag.
	Tag string `json:"tag,omitempty"`
	// References are a manifest's config and layers, or an index's
	// manifests, when notifications.events.includereferences is on.
	References []v1.Descriptor `json:"references,omitempty"`

	// Manifest is the pushed or pulled manifest's payload, from which the
	// Notifier takes References (off the request path) when asked to.
	// It is never sent.
	Manifest []byte `json:"-"`
}

// RequestRecord is the request that caused an event.
type RequestRecord struct {
	// ID identifies the request; the events of one request share it.
	ID string `json:"id"`
	// Addr is the client's address (the connection's remote address).
	Addr string `json:"addr,omitempty"`
	// Host is the request's Host header.
	Host string `json:"host,omitempty"`
	// Method is the HTTP method.
	Method string `json:"method"`
	// UserAgent is the User-Agent header.
	UserAgent string `json:"useragent"`
}

// ActorRecord is who made the request: the authenticated user, empty for
// anonymous requests.
type ActorRecord struct {
	Name string `json:"name,omitempty"`
}

// SourceRecord is the registry process that saw the event.
type SourceRecord struct {
	// Addr is the host name and port of the registry.
	Addr string `json:"addr,omitempty"`
	// InstanceID identifies the process; it changes with every start.
	InstanceID string `json:"instanceID,omitempty"`
}

// NewID returns a random (version 4) UUID, the form of Distribution's
// event and request ids.
func NewID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	var s [36]byte
	hex.Encode(s[0:8], b[0:4])
	s[8] = '-'
	hex.Encode(s[9:13], b[4:6])
	s[13] = '-'
	hex.Encode(s[14:18], b[6:8])
	s[18] = '-'
	hex.Encode(s[19:23], b[8:10])
	s[23] = '-'
	hex.Encode(s[24:], b[10:])
	return string(s[:])
}

// durable reports whether the request that caused ev waits until ev is
// in the queue: everything but a pull.
func (ev *Event) durable() bool { return ev.Action != ActionPull }
