package ui

import (
	"errors"
	"net/http"
	"net/url"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/notify"
	"github.com/berth-registry/berth/storage"
)

// deleteTarget is what a delete form names: a tag or a manifest.
type deleteTarget struct {
	tag    string
	digest digest.Digest
}

// readTarget reads the tag or digest field of a delete request.
func readTarget(v url.Values) (deleteTarget, error) {
	tag, dg := v.Get("tag"), v.Get("digest")
	switch {
	case tag != "" && dg == "":
		if err := storage.ValidateTag(tag); err != nil {
			return deleteTarget{}, err
		}
		return deleteTarget{tag: tag}, nil
	case dg != "" && tag == "":
		d, err := storage.ParseDigest(dg)
		if err != nil {
			return deleteTarget{}, err
		}
		return deleteTarget{digest: d}, nil
	}
	return deleteTarget{}, errNotFound
}

type deleteBody struct {
	Name   string
	Tag    string
	Digest digest.Digest
	// Tags are the other tags a manifest's deletion removes.
	Cancel string
}

// confirmDelete asks whether to delete a tag or a manifest.
func (h *Handler) confirmDelete(w http.ResponseWriter, r *http.Request, s *session, name string, rt rights) error {
	if !rt.delete {
		return errNotFound
	}
	t, err := readTarget(r.URL.Query())
	if err != nil {
		return err
	}
	body := deleteBody{Name: name, Tag: t.tag, Digest: t.digest, Cancel: repoURL(name)}
	if t.tag != "" {
		if _, err := h.cfg.Store.ResolveManifest(r.Context(), name, t.tag); err != nil {
			return err
		}
	} else {
		if _, err := h.cfg.Store.ResolveManifest(r.Context(), name, t.digest.String()); err != nil {
			return err
		}
		body.Cancel = manifestURL(name, t.digest)
	}
	if s, err = h.ensure(w, r, s); err != nil {
		return err
	}
	h.render(w, r, s, http.StatusOK, "delete", "Delete", body)
	return nil
}

// delete deletes a tag, or a manifest with every tag on it, as the API's
// DELETE does (the same storage calls, the same events), then goes back
// to the repository's page.
func (h *Handler) delete(w http.ResponseWriter, r *http.Request, s *session, name string, rt rights) error {
	if !rt.delete {
		return errForbidden
	}
	t, err := readTarget(r.PostForm)
	if err != nil {
		return err
	}
	ctx := r.Context()
	reqID := notify.NewID()
	event := func(dg digest.Digest, tag string) notify.Event {
		ev := notify.Event{
			Timestamp: time.Now(),
			Action:    notify.ActionDelete,
			Target:    notify.Target{Repository: name, Tag: tag},
			Request: notify.RequestRecord{
				ID: reqID, Addr: r.RemoteAddr, Host: r.Host, Method: http.MethodDelete, UserAgent: r.UserAgent(),
			},
			Actor: notify.ActorRecord{Name: s.User},
		}
		ev.Target.Digest = dg
		return ev
	}
	var events []notify.Event
	done := t.tag
	if t.tag != "" {
		if err = h.cfg.Store.Untag(ctx, name, t.tag); err == nil {
			events = append(events, event("", t.tag))
		}
	} else {
		done = t.digest.String()
		var tags []string
		tags, err = h.cfg.Store.DeleteManifestAndTags(ctx, name, t.digest)
		if err == nil {
			events = append(events, event(t.digest, ""))
		}
		for _, tag := range tags {
			events = append(events, event("", tag))
		}
	}
	if len(events) > 0 && h.cfg.Notify != nil {
		// Tags removed before a failure are gone: say so even then.
		if nerr := h.cfg.Notify.Notify(ctx, events...); nerr != nil {
			h.log.Error("ui: delete events not queued", "repository", name, "err", nerr)
		}
	}
	if err != nil {
		if errors.Is(err, storage.ErrManifestUnknown) {
			return errNotFound
		}
		return err
	}
	h.log.Info("ui: deleted", "repository", name, "reference", done, "user", s.User)
	http.Redirect(w, r, repoURL(name)+"?"+url.Values{"deleted": {done}}.Encode(), http.StatusSeeOther)
	return nil
}
