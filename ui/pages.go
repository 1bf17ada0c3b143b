package ui

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"sync"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/errgroup"

	"github.com/berth-registry/berth/storage"
)

// pageSize is how many repositories or tags a page shows.
const pageSize = 50

// maxCatalogBatch bounds one catalog read of a filtered listing.
const maxCatalogBatch = 1000

// maxQueryLength bounds the search string.
const maxQueryLength = 256

type repositoriesBody struct {
	Query        string
	Repositories []string
	Next         string
}

// repositories is the list of repositories the visitor may pull, in name
// order, pageSize at a time, filtered by the substring q. It reads the
// catalog in order from the page's start and stops once the page is full:
// the first batch is one page, and batches grow (to maxCatalogBatch) while
// the search or the visitor's rights leave names out.
func (h *Handler) repositories(w http.ResponseWriter, r *http.Request, s *session) error {
	if h.access.needsUser() && (s == nil || s.User == "") {
		return &redirectError{to: "/ui/login"}
	}
	q := strings.TrimSpace(r.URL.Query().Get("q"))
	if len(q) > maxQueryLength {
		q = q[:maxQueryLength]
	}
	last := r.URL.Query().Get("last")
	if last != "" && storage.ValidateName(last) != nil {
		return errNotFound
	}
	ctx := r.Context()
	var shown []string
	batch := pageSize + 1
	if q != "" {
		// A search reads the whole catalog (from the page's start) in one
		// walk: a walk in batches would list the same directories again
		// for every batch, each time reading them whole on a filesystem.
		batch = -1
	}
	for len(shown) <= pageSize {
		names, more, err := h.cfg.Store.Catalog(ctx, storage.Page{N: batch, Last: last})
		if err != nil {
			return err
		}
		var found []string
		for _, n := range names {
			if strings.Contains(n, q) {
				found = append(found, n)
			}
		}
		// The visitor's rights, one token request's worth of names at a
		// time: a search that matches thousands asks about what it shows.
		for len(found) > 0 && len(shown) <= pageSize {
			part := found[:min(len(found), maxScopes)]
			found = found[len(part):]
			allowed, err := h.access.rights(ctx, r, s, part)
			if err != nil {
				return h.accessError(err)
			}
			for _, n := range part {
				if _, ok := allowed[n]; ok {
					shown = append(shown, n)
				}
			}
		}
		if !more || len(names) == 0 {
			break
		}
		last = names[len(names)-1]
		batch = min(batch*4, maxCatalogBatch)
	}
	body := repositoriesBody{Query: q, Repositories: shown}
	if len(shown) > pageSize {
		body.Repositories = shown[:pageSize]
		v := url.Values{"last": {shown[pageSize-1]}}
		if q != "" {
			v.Set("q", q)
		}
		body.Next = "/ui/?" + v.Encode()
	}
	h.render(w, r, s, http.StatusOK, "repositories", "Repositories", body)
	return nil
}

// accessError turns a session the token server no longer accepts into a
// new sign-in.
func (h *Handler) accessError(err error) error {
	if err == errSessionGone {
		return &redirectError{to: "/ui/login", clear: true}
	}
	return err
}

// allowed returns the visitor's rights on repository name; a name they
// may not pull is not found, whether or not it exists.
func (h *Handler) allowed(r *http.Request, s *session, name string) (rights, error) {
	if h.access.needsUser() && (s == nil || s.User == "") {
		return rights{}, &redirectError{to: "/ui/login"}
	}
	m, err := h.access.rights(r.Context(), r, s, []string{name})
	if err != nil {
		return rights{}, h.accessError(err)
	}
	rt, ok := m[name]
	if !ok {
		return rights{}, errNotFound
	}
	rt.delete = rt.delete && h.deletable(name)
	return rt, nil
}

// deletable reports whether the registry lets anything of repository name
// be deleted at all.
func (h *Handler) deletable(name string) bool {
	return h.cfg.DeleteEnabled && !h.cfg.ReadOnly && !h.cfg.Mirrors(name)
}

func (h *Handler) repositoryGet(w http.ResponseWriter, r *http.Request, s *session) error {
	rest := r.PathValue("rest")
	p, ok := parseRepoPath(rest)
	if !ok {
		if storage.ValidateName(rest) == nil {
			// /ui/r/<name>, typed without the slash.
			return &redirectError{to: repoURL(rest)}
		}
		return errNotFound
	}
	rt, err := h.allowed(r, s, p.name)
	if err != nil {
		return err
	}
	switch p.kind {
	case pageTags:
		return h.tags(w, r, s, p.name, rt)
	case pageManifest:
		return h.manifest(w, r, s, p.name, p.digest, rt)
	default:
		return h.confirmDelete(w, r, s, p.name, rt)
	}
}

func (h *Handler) repositoryPost(w http.ResponseWriter, r *http.Request, s *session) error {
	p, ok := parseRepoPath(r.PathValue("rest"))
	if !ok || p.kind != pageDelete {
		return errNotFound
	}
	if err := checkPost(r, s); err != nil {
		return err
	}
	rt, err := h.allowed(r, s, p.name)
	if err != nil {
		return err
	}
	return h.delete(w, r, s, p.name, rt)
}

type tagRow struct {
	Tag    string
	Digest digest.Digest
	summary
	Err bool
}

type tagsBody struct {
	Name   string
	Tags   []tagRow
	Next   string
	Delete bool
	Flash  string
}

// tagWorkers is how many tags' manifests are read at once.
const tagWorkers = 8

func (h *Handler) tags(w http.ResponseWriter, r *http.Request, s *session, name string, rt rights) error {
	ctx := r.Context()
	last := r.URL.Query().Get("last")
	if last != "" && storage.ValidateTag(last) != nil {
		return errNotFound
	}
	tags, more, err := h.cfg.Store.Tags(ctx, name, storage.Page{N: pageSize, Last: last})
	if err != nil {
		return err
	}
	rows := make([]tagRow, len(tags))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(tagWorkers)
	var mu sync.Mutex
	for i, tag := range tags {
		g.Go(func() error {
			row := tagRow{Tag: tag}
			dg, err := h.cfg.Store.ResolveManifest(gctx, name, tag)
			if err == nil {
				row.Digest = dg
				row.summary, err = h.describe.summarize(gctx, name, dg)
			}
			if err != nil {
				if gctx.Err() != nil {
					return gctx.Err()
				}
				// Untagged meanwhile, or unreadable: the row says so.
				row.Err = true
			}
			mu.Lock()
			rows[i] = row
			mu.Unlock()
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	body := tagsBody{Name: name, Tags: rows, Delete: rt.delete}
	// The flash names what was deleted; a link could set any text, so it
	// shows only a tag or a digest.
	if f := r.URL.Query().Get("deleted"); storage.ValidateTag(f) == nil || digest.Digest(f).Validate() == nil {
		body.Flash = f
	}
	if more && len(tags) > 0 {
		body.Next = repoURL(name) + "?" + url.Values{"last": {tags[len(tags)-1]}}.Encode()
	}
	h.render(w, r, s, http.StatusOK, "tags", name, body)
	return nil
}

// platformLink is one of an index's manifests.
type platformLink struct {
	Platform  string
	Digest    digest.Digest
	MediaType string
	Size      int64
}

type referrerGroup struct {
	ArtifactType string
	Referrers    []referrerRow
}

type referrerRow struct {
	Digest    digest.Digest
	MediaType string
	Size      int64
	Created   string // the org.opencontainers.image.created annotation
}

type manifestBody struct {
	Name      string
	Digest    digest.Digest
	MediaType string
	// ArtifactType is the manifest's, when it is an artifact.
	ArtifactType string
	Size         int64
	Index        bool
	Platforms    []platformLink
	Config       *configRow
	Layers       []layerRow
	Total        int64
	Subject      digest.Digest
	Referrers    []referrerGroup
	Delete       bool
}

type configRow struct {
	Digest    digest.Digest
	MediaType string
	Size      int64
	Created   string
	Platform  string
}

type layerRow struct {
	Digest    digest.Digest
	MediaType string
	Size      int64
}

func (h *Handler) manifest(w http.ResponseWriter, r *http.Request, s *session, name string, dg digest.Digest, rt rights) error {
	ctx := r.Context()
	m, doc, err := h.describe.manifest(ctx, name, dg)
	if err != nil {
		return err
	}
	body := manifestBody{
		Name: name, Digest: m.Digest, MediaType: m.MediaType, ArtifactType: doc.ArtifactType,
		Size: int64(len(m.Payload)), Index: isIndex(m.MediaType), Delete: rt.delete,
	}
	if doc.Subject != nil {
		body.Subject = doc.Subject.Digest
	}
	if body.Index {
		for _, c := range doc.Manifests {
			p := platformLink{Digest: c.Digest, MediaType: c.MediaType, Size: c.Size, Platform: "unknown"}
			if c.Platform != nil {
				p.Platform = platformString(c.Platform.OS, c.Platform.Architecture, c.Platform.Variant)
			}
			body.Platforms = append(body.Platforms, p)
		}
	} else {
		body.Total = body.Size
		if doc.Config != nil {
			body.Config = &configRow{Digest: doc.Config.Digest, MediaType: doc.Config.MediaType, Size: doc.Config.Size}
			body.Total += doc.Config.Size
			if c := h.describe.config(ctx, name, doc.Config); c != nil {
				if c.Created != nil && !c.Created.IsZero() {
					body.Config.Created = c.Created.UTC().Format("2006-01-02 15:04 UTC")
				}
				if c.OS != "" {
					body.Config.Platform = platformString(c.OS, c.Architecture, c.Variant)
				}
			}
		}
		for _, l := range doc.Layers {
			body.Layers = append(body.Layers, layerRow{Digest: l.Digest, MediaType: l.MediaType, Size: l.Size})
			body.Total += l.Size
		}
	}
	if body.Referrers, err = h.referrers(ctx, name, m.Digest); err != nil {
		return err
	}
	h.render(w, r, s, http.StatusOK, "manifest", name+"@"+shortDigest(m.Digest), body)
	return nil
}

// referrers lists the manifests whose subject is dg, grouped by artifact
// type in the order types first appear (the store sorts by digest).
func (h *Handler) referrers(ctx context.Context, name string, dg digest.Digest) ([]referrerGroup, error) {
	descs, err := h.cfg.Store.Referrers(ctx, name, dg, "")
	if err != nil {
		return nil, err
	}
	var groups []referrerGroup
	index := map[string]int{}
	for _, d := range descs {
		at := d.ArtifactType
		if at == "" {
			at = "(none)"
		}
		i, ok := index[at]
		if !ok {
			i = len(groups)
			index[at] = i
			groups = append(groups, referrerGroup{ArtifactType: at})
		}
		groups[i].Referrers = append(groups[i].Referrers, referrerRow{
			Digest: d.Digest, MediaType: d.MediaType, Size: d.Size, Created: d.Annotations["org.opencontainers.image.created"],
		})
	}
	return groups, nil
}
