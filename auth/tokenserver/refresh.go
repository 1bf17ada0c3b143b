package tokenserver

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"time"

	"github.com/berth-registry/berth/auth"
)

// A refresh token is base64url(payload) "." base64url(HMAC-SHA256), keyed
// with a secret derived from the signing key. Two parts, so no JWT parser
// (the registry's) mistakes it for an access token. The payload binds it
// to one subject, one service and the subject's current htpasswd entry: it
// stops working when the user is removed or their password changes.
type refreshPayload struct {
	Subject string `json:"sub"`
	Service string `json:"aud"`
	Issued  int64  `json:"iat"`
	Expires int64  `json:"exp"`
	Bind    string `json:"bnd"`
	ID      string `json:"jti"`
}

type refresher struct {
	secrets [][]byte // signing key's first
	ttl     time.Duration
	now     func() time.Time
}

var errRefresh = errors.New("invalid refresh token")

func (r *refresher) issue(subject, service string, users *auth.UserStore) (string, error) {
	hash, ok := users.Lookup(subject)
	if !ok {
		return "", errors.New("refresh token for an unknown user")
	}
	secret := r.secrets[0]
	now := r.now()
	p := refreshPayload{
		Subject: subject,
		Service: service,
		Issued:  now.Unix(),
		Expires: now.Add(r.ttl).Unix(),
		Bind:    binding(secret, subject, hash),
		ID:      auth.NewID(),
	}
	data, err := json.Marshal(p)
	if err != nil {
		return "", err
	}
	body := base64.RawURLEncoding.EncodeToString(data)
	return body + "." + base64.RawURLEncoding.EncodeToString(mac(secret, body)), nil
}

// verify returns the subject of a valid refresh token for service.
func (r *refresher) verify(token, service string, users *auth.UserStore) (string, error) {
	body, sig, ok := strings.Cut(token, ".")
	if !ok || len(token) > 4096 {
		return "", errRefresh
	}
	got, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil {
		return "", errRefresh
	}
	var secret []byte
	for _, s := range r.secrets {
		if hmac.Equal(got, mac(s, body)) {
			secret = s
			break
		}
	}
	if secret == nil {
		return "", errRefresh
	}
	data, err := base64.RawURLEncoding.DecodeString(body)
	if err != nil {
		return "", errRefresh
	}
	var p refreshPayload
	if err := json.Unmarshal(data, &p); err != nil {
		return "", errRefresh
	}
	if p.Service != service || !r.now().Before(time.Unix(p.Expires, 0)) {
		return "", errRefresh
	}
	hash, ok := users.Lookup(p.Subject)
	if !ok || !hmac.Equal([]byte(p.Bind), []byte(binding(secret, p.Subject, hash))) {
		return "", errRefresh
	}
	return p.Subject, nil
}

func mac(secret []byte, body string) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte("refresh\x00"))
	m.Write([]byte(body))
	return m.Sum(nil)
}

// binding ties a refresh token to the user's current password hash without
// revealing anything about it.
func binding(secret []byte, subject, hash string) string {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte("bind\x00" + subject + "\x00" + hash))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil)[:16])
}
