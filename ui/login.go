package ui

import (
	"errors"
	"net/http"
)

type loginBody struct {
	Username string
	Error    string
	// Available is false when the registry has no users (no auth).
	Available bool
}

func (h *Handler) loginPage(w http.ResponseWriter, r *http.Request, s *session) error {
	available := h.cfg.Token != nil || h.cfg.Users != nil
	if available {
		var err error
		if s, err = h.ensure(w, r, s); err != nil {
			return err
		}
	}
	h.render(w, r, s, http.StatusOK, "login", "Sign in", loginBody{Available: available})
	return nil
}

// maxCredential bounds the user name and password a form may send.
const maxCredential = 1024

// login checks the form's credentials through the registry's auth (the
// token server, or the htpasswd file) and starts a signed-in session.
// The password goes nowhere else: not into the session, not into logs.
func (h *Handler) login(w http.ResponseWriter, r *http.Request, s *session) error {
	if err := checkPost(r, s); err != nil {
		return err
	}
	user, password := r.PostFormValue("username"), r.PostFormValue("password")
	body := loginBody{Username: user, Available: true}
	var err error
	var ns *session
	if len(user) > maxCredential || len(password) > maxCredential {
		err = errBadLogin
	} else {
		ns, err = h.access.signIn(r.Context(), r, user, password)
	}
	status := http.StatusOK
	switch {
	case err == nil:
		if err := h.sessions.write(w, r, ns); err != nil {
			return err
		}
		h.log.Info("ui: signed in", "user", ns.User)
		http.Redirect(w, r, "/ui/", http.StatusSeeOther)
		return nil
	case errors.Is(err, errBadLogin):
		h.log.Info("ui: sign-in refused", "user", user)
		body.Error, status = "Wrong user name or password.", http.StatusUnauthorized
	case errors.Is(err, errThrottled):
		body.Error, status = "Too many failed sign-ins. Try again later.", http.StatusTooManyRequests
	case errors.Is(err, errNoLogin):
		body.Error, body.Available, status = "This registry has no users: everything is visible without signing in.", false, http.StatusNotFound
	default:
		return err
	}
	h.render(w, r, s, status, "login", "Sign in", body)
	return nil
}

// logout ends the session. The token server's refresh token stays valid
// until it expires (the token server has no revocation), but the
// browser no longer holds it.
func (h *Handler) logout(w http.ResponseWriter, r *http.Request, s *session) error {
	if err := checkPost(r, s); err != nil {
		return err
	}
	if s.User != "" {
		h.log.Info("ui: signed out", "user", s.User)
	}
	h.sessions.clear(w)
	http.Redirect(w, r, "/ui/", http.StatusSeeOther)
	return nil
}
