// Package ui is the registry's web pages: what the registry holds, for a
// person in a browser. Server-rendered html/template pages, one CSS file
// and one optional script (Copy buttons), embedded; nothing needs the
// script.
//
// Pages, under /ui/ (a repository name may hold "/", so "-", which never
// is a name's component, separates it from what follows):
//
//	/ui/                               repositories (?q= search, ?last= next page)
//	/ui/r/<name>/                      a repository's tags (?last= next page)
//	/ui/r/<name>/-/manifests/<digest>  one manifest
//	/ui/r/<name>/-/delete              confirm (GET ?tag= or ?digest=), delete (POST)
//	/ui/login, /ui/logout              sign in and out
//	/ui/static/<file>                  the CSS and the script
//
// What a person sees is what the registry's own authorization lets them
// pull (see access.go): with token auth, the pages ask the token server
// for the person's tokens, as every client does; with htpasswd, signed-in
// users see everything; without auth, everyone does.
package ui

import (
	"embed"
	"errors"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/berth-registry/berth/auth"
	"github.com/berth-registry/berth/notify"
	"github.com/berth-registry/berth/storage"
	"github.com/berth-registry/berth/storage/driver"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Config is what New needs.
type Config struct {
	// Store holds the content. Required.
	Store *storage.Store
	// Driver is the store's driver: the key that seals session cookies is
	// kept there (_berth/ui/), so that every replica shares it. Required.
	Driver driver.Driver
	// Logger receives sign-ins, deletions and errors. Nil discards them.
	Logger *slog.Logger
	// DeleteEnabled allows deleting tags and manifests from the pages
	// (storage.delete.enabled). False: no delete control is shown.
	DeleteEnabled bool
	// ReadOnly hides delete controls and refuses deletions, as the API
	// does in read-only mode.
	ReadOnly bool
	// Mirrors reports whether a repository is a pull-through cache, where
	// deletions are refused as in the API. Nil: none is.
	Mirrors func(name string) bool
	// Notify receives the delete events of deletions made on the pages,
	// the same events the API's DELETE sends. Nil: none are made.
	Notify notify.Sink
	// Token is token authentication. With Token and Users nil, every
	// visitor sees everything.
	Token *TokenAuth
	// Users is htpasswd authentication: a signed-in user sees and may
	// delete everything, an anonymous visitor only the sign-in page.
	// Ignored when Token is set.
	Users *auth.UserStore
}

// TokenAuth is how the pages get a person's tokens: from the registry's
// token server, checked with the registry's own verifier.
type TokenAuth struct {
	// Realm is the token endpoint (auth.token.realm).
	Realm string
	// Service is the registry's service name (auth.token.service).
	Service string
	// Verifier checks the tokens, as the API checks every client's.
	Verifier interface {
		Verify(token string) (*auth.Claims, error)
	}
	// Client makes the requests to the realm. Nil: a client with a 10 s
	// timeout that trusts the system roots.
	Client *http.Client
}

// Handler serves the pages. Create it with New.
type Handler struct {
	cfg      Config
	log      *slog.Logger
	mux      *http.ServeMux
	pages    map[string]*template.Template
	sessions *sessions
	access   access
	describe *describer
}

// New returns the pages' handler.
func New(cfg Config) (*Handler, error) {
	if cfg.Store == nil || cfg.Driver == nil {
		return nil, errors.New("ui: Store and Driver are required")
	}
	h := &Handler{cfg: cfg, log: cfg.Logger, mux: http.NewServeMux()}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	if h.cfg.Mirrors == nil {
		h.cfg.Mirrors = func(string) bool { return false }
	}
	var err error
	if h.pages, err = parseTemplates(); err != nil {
		return nil, err
	}
	h.sessions = newSessions(cfg.Driver, h.log)
	switch {
	case cfg.Token != nil:
		if cfg.Token.Realm == "" || cfg.Token.Service == "" || cfg.Token.Verifier == nil {
			return nil, errors.New("ui: token auth needs realm, service and verifier")
		}
		h.access = newTokenAccess(*cfg.Token)
	case cfg.Users != nil:
		h.access = userAccess{users: cfg.Users}
	default:
		h.access = openAccess{}
	}
	h.describe = newDescriber(cfg.Store)
	static, _ := fs.Sub(staticFS, "static")
	files := http.FileServerFS(static)
	h.mux.Handle("GET /ui/static/{file}", http.StripPrefix("/ui/static/", staticHeaders(files)))
	h.mux.HandleFunc("GET /ui/{$}", h.page(h.repositories))
	h.mux.HandleFunc("GET /ui/r/{rest...}", h.page(h.repositoryGet))
	h.mux.HandleFunc("POST /ui/r/{rest...}", h.page(h.repositoryPost))
	h.mux.HandleFunc("GET /ui/login", h.page(h.loginPage))
	h.mux.HandleFunc("POST /ui/login", h.page(h.login))
	h.mux.HandleFunc("POST /ui/logout", h.page(h.logout))
	h.mux.HandleFunc("/ui/", h.page(func(w http.ResponseWriter, r *http.Request, s *session) error { return errNotFound }))
	return h, nil
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hdr := w.Header()
	hdr.Set("Content-Security-Policy", csp)
	hdr.Set("X-Content-Type-Options", "nosniff")
	hdr.Set("Referrer-Policy", "no-referrer")
	hdr.Set("X-Frame-Options", "DENY")
	hdr.Set("Cross-Origin-Opener-Policy", "same-origin")
	h.mux.ServeHTTP(w, r)
}

// csp lets the pages load their own CSS and script and nothing else.
const csp = "default-src 'none'; style-src 'self'; img-src 'self'; script-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// staticHeaders lets browsers keep the embedded files for a while.
func staticHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=300")
		next.ServeHTTP(w, r)
	})
}

// pageFunc serves one page for the visitor's session (nil: none).
type pageFunc func(w http.ResponseWriter, r *http.Request, s *session) error

// page wraps a page: no caching, the session read, and errors turned into
// an error page (internal detail goes to the log only).
func (h *Handler) page(f pageFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		if r.Method == http.MethodPost {
			r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
		}
		s := h.sessions.read(r)
		err := f(w, r, s)
		if err == nil {
			return
		}
		var redirect *redirectError
		switch {
		case errors.As(err, &redirect):
			if redirect.clear {
				h.sessions.clear(w)
			}
			http.Redirect(w, r, redirect.to, http.StatusSeeOther)
			return
		case errors.Is(err, errNotFound), errors.Is(err, storage.ErrNameUnknown), errors.Is(err, storage.ErrManifestUnknown),
			errors.Is(err, storage.ErrNameInvalid), errors.Is(err, storage.ErrTagInvalid), errors.Is(err, storage.ErrDigestInvalid):
			h.renderError(w, r, s, http.StatusNotFound, "Not found", "There is nothing here, or you may not see it.")
		case errors.Is(err, errForbidden):
			h.renderError(w, r, s, http.StatusForbidden, "Refused", "The request was refused: reload the page it came from and try again.")
		case errors.Is(err, errTokenServer):
			h.log.Error("ui: token server", "path", r.URL.Path, "err", err)
			h.renderError(w, r, s, http.StatusBadGateway, "Token server unavailable", "The token server could not be asked what you may see. Try again later.")
		default:
			h.log.Error("ui: page failed", "path", r.URL.Path, "err", err)
			h.renderError(w, r, s, http.StatusInternalServerError, "Error", "Something went wrong. Try again later.")
		}
	}
}

// maxFormBytes bounds a form post.
const maxFormBytes = 64 << 10

var (
	errNotFound  = errors.New("ui: not found")
	errForbidden = errors.New("ui: forbidden")
	// errTokenServer: the token server could not be asked.
	errTokenServer = errors.New("ui: token server")
)

// redirectError answers with a 303 to a page (and clears the session when
// clear is set).
type redirectError struct {
	to    string
	clear bool
}

func (e *redirectError) Error() string { return "redirect to " + e.to }

// layout is what every page's frame shows.
type layout struct {
	Title string
	User  string
	CSRF  string
	// Login shows the sign-in link to anonymous visitors (the registry
	// has auth).
	Login bool
	Flash string
	Host  string
	Body  any
}

// render writes page name with status.
func (h *Handler) render(w http.ResponseWriter, r *http.Request, s *session, status int, name, title string, body any) {
	l := layout{Title: title, Host: r.Host, Body: body, Login: h.cfg.Token != nil || h.cfg.Users != nil}
	if s != nil {
		l.User, l.CSRF = s.User, s.CSRF
	}
	var b strings.Builder
	if err := h.pages[name].ExecuteTemplate(&b, "layout", l); err != nil {
		h.log.Error("ui: template", "page", name, "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(b.String()))
}

type errorBody struct{ Message string }

func (h *Handler) renderError(w http.ResponseWriter, r *http.Request, s *session, status int, title, message string) {
	h.render(w, r, s, status, "error", title, errorBody{message})
}

// pageNames are the templates; each is parsed with layout.html.
var pageNames = []string{"repositories", "tags", "manifest", "delete", "login", "error"}

func parseTemplates() (map[string]*template.Template, error) {
	funcs := template.FuncMap{
		"size":        humanSize,
		"time":        func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04 UTC") },
		"short":       shortDigest,
		"repoURL":     repoURL,
		"manifestURL": manifestURL,
		"deleteURL":   deleteURL,
	}
	pages := make(map[string]*template.Template, len(pageNames))
	for _, name := range pageNames {
		t, err := template.New(name).Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/"+name+".html")
		if err != nil {
			return nil, err
		}
		pages[name] = t
	}
	return pages, nil
}
