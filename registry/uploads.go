package registry

import (
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/gin-gonic/gin"

	"github.com/berth-registry/berth/notify"
	"github.com/berth-registry/berth/storage"
)

func uploadLocation(name, id string) string {
	return "/v2" + Route{Kind: KindUpload, Name: name, UploadID: id}.Path()
}

// setUploadHeaders describes an upload session that holds size bytes.
func setUploadHeaders(c *gin.Context, name, id string, size int64) {
	c.Header("Location", uploadLocation(name, id))
	c.Header("Docker-Upload-UUID", id)
	c.Header("Range", "0-"+strconv.FormatInt(max(size-1, 0), 10))
	c.Header("Content-Length", "0")
}

func blobCreated(c *gin.Context, name, dg string) {
	c.Header("Location", blobLocation(name, dg))
	c.Header("Docker-Content-Digest", dg)
	c.Header("Content-Length", "0")
	c.Status(http.StatusCreated)
}

// startUpload handles POST …/blobs/uploads/: a cross-repository mount
// (?mount=&from=, or, when no authorizer is configured, ?mount= alone for
// any blob the registry has), a
// single-request upload (?digest=), or a new session.
func (h *Handler) startUpload(c *gin.Context, r Route) error {
	ctx := c.Request.Context()
	q := c.Request.URL.Query()
	if m := q.Get("mount"); m != "" {
		dg, err := storage.ParseDigest(m)
		from := q.Get("from")
		if from != "" {
			if err := storage.ValidateName(from); err != nil {
				return err
			}
		}
		// Without from, any stored copy would do; with an authorizer that
		// would hand out other tenants' blobs to anyone who knows a digest,
		// so then only an explicit, access-checked source is mounted.
		if err == nil && (from != "" || h.authz == nil) {
			var size int64
			size, err = h.store.MountBlob(ctx, r.Name, from, dg)
			if err == nil {
				ev := h.blobEvent(c, notify.ActionMount, r.Name, dg, size)
				ev.Target.FromRepository = from
				if err := h.notify(c, ev); err != nil {
					return err
				}
				blobCreated(c, r.Name, dg.String())
				return nil
			}
			if !errors.Is(err, storage.ErrBlobUnknown) {
				return err
			}
		}
		// Not mountable: fall back to an ordinary upload session, as the
		// specification asks.
	} else if d := q.Get("digest"); d != "" {
		dg, err := storage.ParseDigest(d)
		if err != nil {
			return err
		}
		size, err := h.store.PutBlob(ctx, r.Name, dg, c.Request.Body)
		if err != nil {
			return err
		}
		if err := h.notify(c, h.blobEvent(c, notify.ActionPush, r.Name, dg, size)); err != nil {
			return err
		}
		blobCreated(c, r.Name, dg.String())
		return nil
	}
	id, err := h.store.StartUpload(ctx, r.Name)
	if err != nil {
		return err
	}
	setUploadHeaders(c, r.Name, id, 0)
	c.Status(http.StatusAccepted)
	return nil
}

func (h *Handler) uploadStatus(c *gin.Context, r Route) error {
	size, err := h.store.UploadSize(c.Request.Context(), r.Name, r.UploadID)
	if err != nil {
		return err
	}
	setUploadHeaders(c, r.Name, r.UploadID, size)
	c.Status(http.StatusNoContent)
	return nil
}

// chunkStart reads Content-Range ("<start>-<end>", also with a "bytes"
// prefix) and checks it against Content-Length. It returns -1 when the
// header is absent: a streamed chunk goes wherever the upload ends.
func chunkStart(c *gin.Context) (int64, error) {
	cr := c.GetHeader("Content-Range")
	if cr == "" {
		return -1, nil
	}
	cr = strings.TrimSpace(strings.TrimPrefix(strings.TrimPrefix(cr, "bytes"), "="))
	if i := strings.IndexByte(cr, '/'); i >= 0 {
		cr = cr[:i]
	}
	first, last, ok := strings.Cut(cr, "-")
	start, err1 := strconv.ParseInt(first, 10, 64)
	end, err2 := strconv.ParseInt(last, 10, 64)
	if !ok || err1 != nil || err2 != nil || start < 0 || end < start {
		return 0, &storage.RangeError{Start: -1}
	}
	if cl := c.Request.ContentLength; cl >= 0 && cl != end-start+1 {
		return 0, errSizeInvalid
	}
	return start, nil
}

func (h *Handler) patchUpload(c *gin.Context, r Route) error {
	start, err := chunkStart(c)
	if err != nil {
		return h.rangeFailure(c, r, err)
	}
	size, err := h.store.AppendUpload(c.Request.Context(), r.Name, r.UploadID, start, c.Request.Body)
	if err != nil {
		return h.rangeFailure(c, r, err)
	}
	setUploadHeaders(c, r.Name, r.UploadID, size)
	c.Status(http.StatusAccepted)
	return nil
}

// rangeFailure adds, to a 416, where the upload stands, so the client can
// resume.
func (h *Handler) rangeFailure(c *gin.Context, r Route, err error) error {
	var re *storage.RangeError
	if !errors.As(err, &re) {
		return err
	}
	if re.Start >= 0 { // storage's: it says where the upload stands
		setUploadHeaders(c, r.Name, r.UploadID, re.Size)
		return err
	}
	size, serr := h.store.UploadSize(c.Request.Context(), r.Name, r.UploadID)
	if serr != nil {
		return serr
	}
	setUploadHeaders(c, r.Name, r.UploadID, size)
	return err
}

func (h *Handler) putUpload(c *gin.Context, r Route) error {
	d := c.Query("digest")
	if d == "" {
		return storage.ErrDigestInvalid
	}
	dg, err := storage.ParseDigest(d)
	if err != nil {
		return err
	}
	start, err := chunkStart(c)
	if err != nil {
		return h.rangeFailure(c, r, err)
	}
	size, err := h.store.CompleteUpload(c.Request.Context(), r.Name, r.UploadID, start, c.Request.Body, dg)
	if err != nil {
		return h.rangeFailure(c, r, err)
	}
	if err := h.notify(c, h.blobEvent(c, notify.ActionPush, r.Name, dg, size)); err != nil {
		return err
	}
	blobCreated(c, r.Name, dg.String())
	return nil
}

func (h *Handler) cancelUpload(c *gin.Context, r Route) error {
	if err := h.store.CancelUpload(c.Request.Context(), r.Name, r.UploadID); err != nil {
		return err
	}
	c.Header("Content-Length", "0")
	c.Status(http.StatusNoContent)
	return nil
}
