package registry

import (
	"net/http"

	"github.com/gin-gonic/gin"
)

// deleteRepository answers DELETE /v2/<name>/, Berth's own endpoint (the
// distribution spec has none): it removes the repository's tags,
// manifests, links and upload sessions, and garbage collection frees the
// blobs no other repository uses. It needs what deleting any one of the
// repository's manifests needs, repository:<name>:delete, since that
// right can empty the repository already; with deletes disabled it is
// UNSUPPORTED like the others.
func (h *Handler) deleteRepository(c *gin.Context, r Route) error {
	if !h.delete {
		return errUnsupported
	}
	if err := h.store.DeleteRepository(c.Request.Context(), r.Name); err != nil {
		return err
	}
	// Distribution's event for a removed repository: a delete whose
	// target names only the repository.
	if err := h.notify(c, h.deleteEvent(c, r.Name, "", "")); err != nil {
		return err
	}
	c.Header("Content-Length", "0")
	c.Status(http.StatusAccepted)
	return nil
}
