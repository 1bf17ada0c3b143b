package registry

import (
	"time"

	"github.com/gin-gonic/gin"
	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/notify"
)

// ctxRequestID is the key of the id the events of one request share.
const ctxRequestID = "berth.requestid"

// blobMediaType is the media type of blob events: the registry does not
// know a blob's, and Distribution says this.
const blobMediaType = "application/octet-stream"

// event is an event of this request on repository name.
func (h *Handler) event(c *gin.Context, action, name string) notify.Event {
	r := c.Request
	id := c.GetString(ctxRequestID)
	if id == "" {
		id = notify.NewID()
		c.Set(ctxRequestID, id)
	}
	return notify.Event{
		Timestamp: time.Now(),
		Action:    action,
		Target:    notify.Target{Repository: name},
		Request: notify.RequestRecord{
			ID: id, Addr: r.RemoteAddr, Host: r.Host, Method: r.Method, UserAgent: r.UserAgent(),
		},
		Actor: notify.ActorRecord{Name: c.GetString(ctxSubject)},
	}
}

// blobEvent is a push, pull or mount of a blob of size bytes.
func (h *Handler) blobEvent(c *gin.Context, action, name string, dg digest.Digest, size int64) notify.Event {
	ev := h.event(c, action, name)
	ev.Target.MediaType = blobMediaType
	ev.Target.Digest = dg
	ev.Target.Size = size
	ev.Target.Length = size
	ev.Target.URL = absoluteURL(c, blobLocation(name, dg.String()))
	return ev
}

// manifestEvent is a push or pull of a manifest, by tag when tag is set.
func (h *Handler) manifestEvent(c *gin.Context, action, name string, dg digest.Digest, mediaType string, payload []byte, tag string) notify.Event {
	ev := h.event(c, action, name)
	ev.Target.MediaType = mediaType
	ev.Target.Digest = dg
	ev.Target.Size = int64(len(payload))
	ev.Target.Length = ev.Target.Size
	ev.Target.URL = absoluteURL(c, manifestLocation(name, dg))
	ev.Target.Tag = tag
	ev.Target.Manifest = payload
	return ev
}

// deleteEvent is the deletion of a manifest or blob (dg set), a tag (tag
// set) or a repository (neither): the target names only those, as
// Distribution's do.
func (h *Handler) deleteEvent(c *gin.Context, name string, dg digest.Digest, tag string) notify.Event {
	ev := h.event(c, notify.ActionDelete, name)
	ev.Target.Digest = dg
	ev.Target.Tag = tag
	return ev
}

// absoluteURL is where a client of this request reaches p: the request's
// host, over https unless the connection is plain and no proxy says it
// terminated TLS (X-Forwarded-Proto, which Distribution's URLs honour
// too).
func absoluteURL(c *gin.Context, p string) string {
	scheme := "https"
	if c.Request.TLS == nil {
		scheme = "http"
		if c.GetHeader("X-Forwarded-Proto") == "https" {
			scheme = "https"
		}
	}
	return scheme + "://" + c.Request.Host + p
}

// notify hands a request's events to the sink. It returns the sink's
// error when events the request must not be answered without (every
// action but pull) could not be queued: the change happened, but the
// client hears it failed and retries, which sends the events again.
func (h *Handler) notify(c *gin.Context, events ...notify.Event) error {
	if h.sink == nil {
		return nil
	}
	return h.sink.Notify(c.Request.Context(), events...)
}

// actionFilter is implemented by sinks that can say whether they take an
// action's events at all (notify.Notifier).
type actionFilter interface {
	Wants(action string) bool
}

// sinkWants reports whether sink takes events of action: false for no
// sink, true for one that cannot say.
func sinkWants(sink notify.Sink, action string) bool {
	if sink == nil {
		return false
	}
	if f, ok := sink.(actionFilter); ok {
		return f.Wants(action)
	}
	return true
}

// notifyPull hands pull events to the sink; the answer is already sent,
// so a failure is only logged.
func (h *Handler) notifyPull(c *gin.Context, ev notify.Event) {
	if err := h.notify(c, ev); err != nil {
		h.log.Warn("notification of a pull lost", "repository", ev.Target.Repository, "err", err)
	}
}
