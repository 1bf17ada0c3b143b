package registry

import (
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/gin-gonic/gin"
	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/notify"
	"github.com/berth-registry/berth/storage"
)

// downloadBuffers hold what a blob download copies at a time: large
// writes mean fewer TLS records flushed one by one and fewer HTTP/2
// frames handed between goroutines.
var downloadBuffers = sync.Pool{New: func() any { b := make([]byte, 256<<10); return &b }}

func blobLocation(name, dg string) string {
	return "/v2" + Route{Kind: KindBlob, Name: name, Digest: digest.Digest(dg)}.Path()
}

func (h *Handler) getBlob(c *gin.Context, r Route) error {
	ctx := c.Request.Context()
	stat := h.store.StatBlob
	if c.Request.Method == http.MethodHead {
		// A client that asks whether a blob exists is about to rely on
		// it (a push skips the layer); a download needs no promise.
		stat = h.store.CheckBlob
	}
	if h.proxy.Mirrors(r.Name) {
		stat = h.proxy.StatBlob
		if c.Request.Method == http.MethodGet {
			if _, err := h.store.StatBlob(ctx, r.Name, r.Digest); errors.Is(err, storage.ErrBlobUnknown) {
				if c.GetHeader("Range") == "" {
					return h.pullThrough(c, r)
				}
				// A range of a blob not yet here: the whole blob first.
				if err := h.proxy.FetchBlob(ctx, r.Name, r.Digest); err != nil {
					return err
				}
			}
		}
	}
	size, err := stat(ctx, r.Name, r.Digest)
	if err != nil {
		return err
	}
	etag := `"` + r.Digest.String() + `"`
	hdr := c.Writer.Header()
	hdr.Set("Docker-Content-Digest", r.Digest.String())
	hdr.Set("ETag", etag)
	hdr.Set("Accept-Ranges", "bytes")
	hdr.Set("Cache-Control", "max-age=31536000")
	if inm := c.GetHeader("If-None-Match"); inm != "" && etagMatches(inm, etag) {
		c.Status(http.StatusNotModified)
		return nil
	}
	start, length, partial, err := parseRange(c.GetHeader("Range"), size)
	if err != nil {
		hdr.Set("Content-Range", "bytes */"+strconv.FormatInt(size, 10))
		return err
	}
	hdr.Set("Content-Type", "application/octet-stream")
	hdr.Set("Content-Length", strconv.FormatInt(length, 10))
	status := http.StatusOK
	if partial {
		status = http.StatusPartialContent
		hdr.Set("Content-Range", "bytes "+strconv.FormatInt(start, 10)+"-"+strconv.FormatInt(start+length-1, 10)+"/"+strconv.FormatInt(size, 10))
	}
	if c.Request.Method == http.MethodHead {
		c.Status(status)
		return nil
	}
	if h.redirect {
		u, err := h.store.BlobURL(ctx, r.Digest)
		if err != nil {
			return err
		}
		if u != "" {
			for _, k := range []string{"Content-Type", "Content-Length", "Content-Range", "Accept-Ranges", "ETag", "Cache-Control"} {
				hdr.Del(k)
			}
			c.Redirect(http.StatusTemporaryRedirect, u)
			if h.pulls {
				h.notifyPull(c, h.blobEvent(c, notify.ActionPull, r.Name, r.Digest, size))
			}
			return nil
		}
	}
	rd, _, err := h.store.OpenBlob(ctx, r.Name, r.Digest, start)
	if err != nil {
		return err
	}
	defer rd.Close()
	c.Status(status)
	bufp := downloadBuffers.Get().(*[]byte)
	defer downloadBuffers.Put(bufp)
	_, err = io.CopyBuffer(c.Writer, io.LimitReader(rd, length), *bufp)
	if err != nil {
		h.log.Warn("blob download cut short", "repository", r.Name, "digest", r.Digest, "err", err)
	} else if h.pulls {
		h.notifyPull(c, h.blobEvent(c, notify.ActionPull, r.Name, r.Digest, size))
	}
	return nil
}

// pullThrough answers a GET of a blob of a mirrored repository that is not
// stored: the proxy's reader, streamed from the upstream while it is
// stored, or from storage once a concurrent fetch of it has ended.
func (h *Handler) pullThrough(c *gin.Context, r Route) error {
	rd, size, err := h.proxy.OpenBlob(c.Request.Context(), r.Name, r.Digest)
	if err != nil {
		return err
	}
	defer rd.Close()
	hdr := c.Writer.Header()
	hdr.Set("Docker-Content-Digest", r.Digest.String())
	hdr.Set("ETag", `"`+r.Digest.String()+`"`)
	hdr.Set("Cache-Control", "max-age=31536000")
	hdr.Set("Content-Type", "application/octet-stream")
	if size >= 0 {
		hdr.Set("Content-Length", strconv.FormatInt(size, 10))
	}
	c.Status(http.StatusOK)
	bufp := downloadBuffers.Get().(*[]byte)
	defer downloadBuffers.Put(bufp)
	n, err := io.CopyBuffer(c.Writer, rd, *bufp)
	if err != nil {
		// The upstream failed, or its content did not match the digest
		// (nothing was stored), or the client went away: the response is
		// cut short, so the client does not take it for the blob.
		h.log.Warn("pull-through blob download cut short", "repository", r.Name, "digest", r.Digest, "err", err)
		panic(http.ErrAbortHandler)
	}
	if h.pulls {
		h.notifyPull(c, h.blobEvent(c, notify.ActionPull, r.Name, r.Digest, n))
	}
	return nil
}

// etagMatches reports whether an If-None-Match header names etag.
func etagMatches(header, etag string) bool {
	for _, v := range strings.Split(header, ",") {
		v = strings.TrimPrefix(strings.TrimSpace(v), "W/")
		if v == "*" || v == etag {
			return true
		}
	}
	return false
}

// parseRange interprets a Range header for content of size bytes. Only one
// range is served; a header with several is ignored (served whole), as RFC
// 9110 allows.
func parseRange(header string, size int64) (start, length int64, partial bool, err error) {
	spec, ok := strings.CutPrefix(header, "bytes=")
	if header == "" || !ok || strings.Contains(spec, ",") {
		return 0, size, false, nil
	}
	first, last, ok := strings.Cut(strings.TrimSpace(spec), "-")
	if !ok {
		return 0, 0, false, errRangeInvalid
	}
	if first == "" { // suffix: the last N bytes
		n, err := strconv.ParseInt(last, 10, 64)
		if err != nil || n <= 0 || size == 0 {
			return 0, 0, false, errRangeInvalid
		}
		n = min(n, size)
		return size - n, n, true, nil
	}
	s, err := strconv.ParseInt(first, 10, 64)
	if err != nil || s < 0 || s >= size {
		return 0, 0, false, errRangeInvalid
	}
	e := size - 1
	if last != "" {
		if e, err = strconv.ParseInt(last, 10, 64); err != nil || e < s {
			return 0, 0, false, errRangeInvalid
		}
		e = min(e, size-1)
	}
	return s, e - s + 1, true, nil
}

func (h *Handler) deleteBlob(c *gin.Context, r Route) error {
	if !h.delete {
		return errUnsupported
	}
	if err := h.store.DeleteBlob(c.Request.Context(), r.Name, r.Digest); err != nil {
		return err
	}
	if err := h.notify(c, h.deleteEvent(c, r.Name, r.Digest, "")); err != nil {
		return err
	}
	c.Header("Content-Length", "0")
	c.Status(http.StatusAccepted)
	return nil
}
