package registry

import (
	"errors"
	"io"
	"mime"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/gin-gonic/gin"
	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/notify"
	"github.com/berth-registry/berth/storage"
)

func manifestLocation(name string, dg digest.Digest) string {
	return "/v2" + Route{Kind: KindManifest, Name: name, Reference: dg.String()}.Path()
}

func (h *Handler) getManifest(c *gin.Context, r Route) error {
	get := h.store.GetManifest
	if h.proxy.Mirrors(r.Name) {
		get = h.proxy.GetManifest
	} else if c.Request.Method == http.MethodHead && r.Digest != "" {
		// A client asking whether a manifest exists by digest is about to
		// rely on it (a push skips an index's child that exists); a pull
		// needs no promise.
		get = h.store.CheckManifest
	}
	m, err := get(c.Request.Context(), r.Name, r.Reference)
	if err != nil {
		return err
	}
	if !accepts(c.Request.Header.Values("Accept"), m.MediaType) {
		return storage.ErrManifestNotAccept
	}
	etag := `"` + m.Digest.String() + `"`
	hdr := c.Writer.Header()
	hdr.Set("Content-Type", m.MediaType)
	hdr.Set("Docker-Content-Digest", m.Digest.String())
	hdr.Set("ETag", etag)
	if inm := c.GetHeader("If-None-Match"); inm != "" && etagMatches(inm, etag) {
		c.Status(http.StatusNotModified)
		return nil
	}
	hdr.Set("Content-Length", strconv.Itoa(len(m.Payload)))
	c.Status(http.StatusOK)
	if c.Request.Method == http.MethodGet {
		_, _ = c.Writer.Write(m.Payload)
		if h.pulls {
			tag := ""
			if r.Digest == "" {
				tag = r.Reference
			}
			h.notifyPull(c, h.manifestEvent(c, notify.ActionPull, r.Name, m.Digest, m.MediaType, m.Payload, tag))
		}
	}
	return nil
}

// accepts reports whether Accept headers admit a manifest of mediaType. No
// Accept, a wildcard, or no manifest type at all among them admits any: only
// a client that lists manifest types and not this one is refused (it could
// not parse the answer), as Distribution does.
func accepts(values []string, mediaType string) bool {
	listsManifestTypes := false
	for _, v := range values {
		for _, part := range strings.Split(v, ",") {
			mt, _, err := mime.ParseMediaType(strings.TrimSpace(part))
			if err != nil {
				continue
			}
			switch {
			case mt == mediaType || mt == "*/*" || mt == "application/*":
				return true
			case strings.Contains(mt, "manifest") || strings.HasSuffix(mt, "index.v1+json"):
				listsManifestTypes = true
			}
		}
	}
	return !listsManifestTypes
}

// maxTagParams is how many tag parameters one manifest PUT may carry; the
// spec asks for at least 10 and allows 414 past a registry's limit.
const maxTagParams = 100

// putManifest handles PUT …/manifests/<reference>, with the tag parameters
// of the distribution-spec (?tag=a&tag=b): the manifest is tagged with each
// of them as well, and every tag is named back in an OCI-Tag header. All
// tags are validated before anything is written, so a bad one stores
// nothing; each tag then moves atomically, but a storage failure partway
// can leave some tags moved and not others (the request then fails). They are meant for a push by digest, the only way to tag a
// manifest by a digest other than sha256; a push by tag honours them too.
// The access needed is that of any push, pull and push on the repository.
func (h *Handler) putManifest(c *gin.Context, r Route) error {
	tags := c.QueryArray("tag")
	if len(tags) > maxTagParams {
		return errTooManyTags
	}
	body := http.MaxBytesReader(c.Writer, c.Request.Body, storage.MaxManifestSize)
	payload, err := io.ReadAll(body)
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return storage.ErrManifestTooLarge
		}
		return storage.ErrUploadInvalid
	}
	res, err := h.store.PutManifest(c.Request.Context(), r.Name, r.Reference, c.GetHeader("Content-Type"), payload, tags...)
	if err != nil {
		return err
	}
	if err := h.notifyManifestPush(c, r, res, payload, tags); err != nil {
		return err
	}
	for i, tag := range tags {
		if !slices.Contains(tags[:i], tag) {
			c.Writer.Header().Add("OCI-Tag", tag)
		}
	}
	c.Header("Location", manifestLocation(r.Name, res.Digest))
	c.Header("Docker-Content-Digest", res.Digest.String())
	if res.Subject != "" {
		c.Header("OCI-Subject", res.Subject.String())
	}
	c.Header("Content-Length", "0")
	c.Status(http.StatusCreated)
	return nil
}

// notifyManifestPush sends a push event per tag the manifest got (the
// reference when it is a tag, and the tag parameters), or one without a
// tag for a push by digest alone.
func (h *Handler) notifyManifestPush(c *gin.Context, r Route, res storage.PutManifestResult, payload []byte, tags []string) error {
	if h.sink == nil {
		return nil
	}
	if r.Digest == "" {
		tags = append([]string{r.Reference}, tags...)
	}
	var events []notify.Event
	for i, tag := range tags {
		if !slices.Contains(tags[:i], tag) {
			events = append(events, h.manifestEvent(c, notify.ActionPush, r.Name, res.Digest, res.MediaType, payload, tag))
		}
	}
	if len(events) == 0 {
		events = append(events, h.manifestEvent(c, notify.ActionPush, r.Name, res.Digest, res.MediaType, payload, ""))
	}
	return h.notify(c, events...)
}

// deleteManifest deletes a manifest by digest, with its tags (a delete
// event for the manifest, then one for each tag, as Distribution sends),
// or a tag (a tag delete event).
func (h *Handler) deleteManifest(c *gin.Context, r Route) error {
	if !h.delete {
		return errUnsupported
	}
	ctx := c.Request.Context()
	var err error
	var events []notify.Event
	if r.Digest != "" {
		var tags []string
		tags, err = h.store.DeleteManifestAndTags(ctx, r.Name, r.Digest)
		if err == nil {
			events = append(events, h.deleteEvent(c, r.Name, r.Digest, ""))
		}
		for _, tag := range tags {
			events = append(events, h.deleteEvent(c, r.Name, "", tag))
		}
	} else {
		err = h.store.Untag(ctx, r.Name, r.Reference)
		if err == nil {
			events = append(events, h.deleteEvent(c, r.Name, "", r.Reference))
		}
	}
	if len(events) > 0 {
		// Tags removed before a failure are gone: say so even then.
		if nerr := h.notify(c, events...); nerr != nil && err == nil {
			err = nerr
		}
	}
	if err != nil {
		return err
	}
	c.Header("Content-Length", "0")
	c.Status(http.StatusAccepted)
	return nil
}
