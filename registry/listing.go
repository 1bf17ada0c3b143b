package registry

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"

	"github.com/gin-gonic/gin"
	"github.com/opencontainers/image-spec/specs-go"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-registry/berth/storage"
)

// page reads the n and last query parameters.
func page(c *gin.Context) (storage.Page, error) {
	p := storage.Page{N: -1, Last: c.Query("last")}
	if s := c.Query("n"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return p, errPaginationInvalid
		}
		p.N = n
	}
	return p, nil
}

// linkNext sets the Link header that points at the page after items.
func linkNext(c *gin.Context, p storage.Page, items []string) {
	if len(items) == 0 {
		return
	}
	q := url.Values{"last": {items[len(items)-1]}}
	if p.N >= 0 {
		q.Set("n", strconv.Itoa(p.N))
	}
	c.Header("Link", "<"+c.Request.URL.Path+"?"+q.Encode()+`>; rel="next"`)
}

func writeJSON(c *gin.Context, contentType string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	c.Header("Content-Type", contentType)
	c.Header("Content-Length", strconv.Itoa(len(b)))
	c.Status(http.StatusOK)
	_, err = c.Writer.Write(b)
	return err
}

func (h *Handler) getTags(c *gin.Context, r Route) error {
	p, err := page(c)
	if err != nil {
		return err
	}
	tags, more, err := h.store.Tags(c.Request.Context(), r.Name, p)
	if err != nil {
		return err
	}
	if more {
		linkNext(c, p, tags)
	}
	return writeJSON(c, "application/json", struct {
		Name string   `json:"name"`
		Tags []string `json:"tags"`
	}{r.Name, nonNil(tags)})
}

func (h *Handler) getCatalog(c *gin.Context) error {
	p, err := page(c)
	if err != nil {
		return err
	}
	repos, more, err := h.store.Catalog(c.Request.Context(), p)
	if err != nil {
		return err
	}
	if more {
		linkNext(c, p, repos)
	}
	return writeJSON(c, "application/json", struct {
		Repositories []string `json:"repositories"`
	}{repos})
}

func (h *Handler) getReferrers(c *gin.Context, r Route) error {
	artifactType := c.Query("artifactType")
	descs, err := h.store.Referrers(c.Request.Context(), r.Name, r.Digest, artifactType)
	if err != nil {
		return err
	}
	if artifactType != "" {
		c.Header("OCI-Filters-Applied", "artifactType")
	}
	return writeJSON(c, v1.MediaTypeImageIndex, v1.Index{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: v1.MediaTypeImageIndex,
		Manifests: descs,
	})
}

// nonNil makes an empty list encode as [] rather than null.
func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
