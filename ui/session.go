package ui

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/berth-registry/berth/storage/driver"
)

// cookieName is the session cookie. The __Host- prefix makes browsers
// accept it only with Secure, Path=/ and no Domain: no other site, and no
// plain-HTTP page of this host, can set it.
const cookieName = "__Host-berth-ui"

// sessionTTL is how long a session lasts, signed in or not.
const sessionTTL = 12 * time.Hour

// keyPath is where the key that seals session cookies is kept: in the
// store, so that every replica of the registry opens the others' cookies.
const keyPath = "/docker/registry/v2/_berth/ui/session-key"

// session is what the cookie holds, sealed (encrypted and authenticated)
// with AES-256-GCM: the browser can neither read nor change it.
type session struct {
	// User is the signed-in user; "" for an anonymous visitor.
	User string `json:"u,omitempty"`
	// Refresh is the user's refresh token from the token server (token
	// auth only).
	Refresh string `json:"r,omitempty"`
	// CSRF is the value every form of this session must send back.
	CSRF    string `json:"c"`
	Expires int64  `json:"e"`
}

// sessions seals and opens session cookies.
type sessions struct {
	d   driver.Driver
	log *slog.Logger

	mu       sync.Mutex
	aead     cipher.AEAD
	loadedAt time.Time
}

func newSessions(d driver.Driver, log *slog.Logger) *sessions {
	return &sessions{d: d, log: log}
}

// keyRetry is how often a cookie that does not open makes the key be read
// again from the store (another replica may have created it first).
const keyRetry = 10 * time.Second

// cipher returns the sealing key, reading it from the store, or creating
// it there, when it is not loaded or reload is set (and it was last read
// more than keyRetry ago).
func (s *sessions) cipher(ctx context.Context, reload bool) (cipher.AEAD, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.aead != nil && (!reload || time.Since(s.loadedAt) < keyRetry) {
		return s.aead, nil
	}
	key, err := s.d.GetContent(ctx, keyPath)
	if errors.Is(err, driver.ErrNotFound) {
		key = make([]byte, 32)
		_, _ = rand.Read(key)
		if err = s.d.PutContent(ctx, keyPath, key); err == nil {
			// Two replicas creating it at once: the last write wins, and
			// both use what the store holds after theirs.
			key, err = s.d.GetContent(ctx, keyPath)
		}
	}
	if err != nil {
		return nil, err
	}
	if len(key) != 32 {
		return nil, errors.New("ui: the session key in storage is not 32 bytes")
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	s.aead, s.loadedAt = aead, time.Now()
	return aead, nil
}

// read returns the request's session, or nil when it has none that opens
// and is current.
func (s *sessions) read(r *http.Request) *session {
	c, err := r.Cookie(cookieName)
	if err != nil || len(c.Value) > 4096 {
		return nil
	}
	sealed, err := base64.RawURLEncoding.DecodeString(c.Value)
	if err != nil {
		return nil
	}
	var plain []byte
	for _, reload := range []bool{false, true} {
		aead, err := s.cipher(r.Context(), reload)
		if err != nil {
			s.log.Error("ui: session key", "err", err)
			return nil
		}
		if n := aead.NonceSize(); len(sealed) > n {
			if plain, err = aead.Open(nil, sealed[:n], sealed[n:], []byte(cookieName)); err == nil {
				break
			}
		}
	}
	if plain == nil {
		return nil
	}
	var sess session
	if json.Unmarshal(plain, &sess) != nil || sess.CSRF == "" || time.Now().Unix() >= sess.Expires {
		return nil
	}
	return &sess
}

// newSession returns a fresh session for user (anonymous: "").
func newSession(user, refresh string) *session {
	return &session{User: user, Refresh: refresh, CSRF: randomString(), Expires: time.Now().Add(sessionTTL).Unix()}
}

// write sets the cookie that holds sess.
func (s *sessions) write(w http.ResponseWriter, r *http.Request, sess *session) error {
	aead, err := s.cipher(r.Context(), false)
	if err != nil {
		return err
	}
	plain, err := json.Marshal(sess)
	if err != nil {
		return err
	}
	nonce := make([]byte, aead.NonceSize())
	_, _ = rand.Read(nonce)
	sealed := aead.Seal(nonce, nonce, plain, []byte(cookieName))
	http.SetCookie(w, &http.Cookie{
		Name: cookieName, Value: base64.RawURLEncoding.EncodeToString(sealed), Path: "/",
		Expires: time.Unix(sess.Expires, 0), Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode,
	})
	return nil
}

// clear removes the session cookie.
func (s *sessions) clear(w http.ResponseWriter) {
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: "", Path: "/", MaxAge: -1, Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode})
}

// ensure returns s, or a new anonymous session whose cookie it sets: a
// page with a form needs a CSRF value to put in it.
func (h *Handler) ensure(w http.ResponseWriter, r *http.Request, s *session) (*session, error) {
	if s != nil {
		return s, nil
	}
	s = newSession("", "")
	return s, h.sessions.write(w, r, s)
}

func randomString() string {
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// checkPost refuses a form post that may come from another site: its
// Origin (when the browser sends one) must be this host, and its csrf
// field must be the session's. SameSite=Strict keeps the cookie off
// cross-site requests too; each check alone would stop a forged post.
func checkPost(r *http.Request, s *session) error {
	if s == nil {
		return errForbidden
	}
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" {
		return errForbidden
	}
	// Under Referrer-Policy: no-referrer, browsers send "Origin: null" on
	// a same-origin form post (Chromium does); Sec-Fetch-Site, checked
	// above when sent, then tells where the post came from.
	if origin := r.Header.Get("Origin"); origin != "" && origin != "null" {
		scheme := "https"
		if r.TLS == nil && r.Header.Get("X-Forwarded-Proto") != "https" {
			scheme = "http"
		}
		if origin != scheme+"://"+r.Host {
			return errForbidden
		}
	}
	got := r.PostFormValue("csrf")
	if subtle.ConstantTimeCompare([]byte(got), []byte(s.CSRF)) != 1 {
		return errForbidden
	}
	return nil
}
