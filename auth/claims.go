package auth

import (
	"encoding/json"
	"errors"
	"slices"

	"github.com/golang-jwt/jwt/v5"
)

// Audience is the "aud" claim. One value is encoded as a JSON string (what
// older registries require), several as an array; both forms decode.
type Audience []string

// MarshalJSON encodes a single audience as a string and more as an array.
func (a Audience) MarshalJSON() ([]byte, error) {
	if len(a) == 1 {
		return json.Marshal(a[0])
	}
	return json.Marshal([]string(a))
}

// UnmarshalJSON accepts a string or an array of strings.
func (a *Audience) UnmarshalJSON(data []byte) error {
	var one string
	if err := json.Unmarshal(data, &one); err == nil {
		*a = Audience{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(data, &many); err != nil {
		return errors.New("aud: want a string or an array of strings")
	}
	*a = many
	return nil
}

// Claims is the payload of a registry token. The zero value is an empty claim
// set; the Signer requires Issuer, Audience and ExpiresAt to be set.
type Claims struct {
	// Issuer ("iss") names the token server.
	Issuer string `json:"iss"`
	// Subject ("sub") is the account the token was issued to; empty for
	// anonymous clients.
	Subject string `json:"sub"`
	// Audience ("aud") holds the service (registry) the token is for.
	Audience Audience `json:"aud"`
	// ExpiresAt ("exp"), NotBefore ("nbf") and IssuedAt ("iat") are
	// seconds since the epoch.
	ExpiresAt *jwt.NumericDate `json:"exp,omitempty"`
	NotBefore *jwt.NumericDate `json:"nbf,omitempty"`
	IssuedAt  *jwt.NumericDate `json:"iat,omitempty"`
	// ID ("jti") is unique per token.
	ID string `json:"jti,omitempty"`
	// Access lists the granted scopes. Encoded as [] when empty.
	Access []Scope `json:"access"`
}

// Allows reports whether the claims grant action on the resource of type typ
// called name.
func (c *Claims) Allows(typ, name, action string) bool {
	return slices.ContainsFunc(c.Access, func(s Scope) bool { return s.Allows(typ, name, action) })
}

// GetExpirationTime implements jwt.Claims.
func (c *Claims) GetExpirationTime() (*jwt.NumericDate, error) { return c.ExpiresAt, nil }

// GetNotBefore implements jwt.Claims.
func (c *Claims) GetNotBefore() (*jwt.NumericDate, error) { return c.NotBefore, nil }

// GetIssuedAt implements jwt.Claims.
func (c *Claims) GetIssuedAt() (*jwt.NumericDate, error) { return c.IssuedAt, nil }

// GetIssuer implements jwt.Claims.
func (c *Claims) GetIssuer() (string, error) { return c.Issuer, nil }

// GetSubject implements jwt.Claims.
func (c *Claims) GetSubject() (string, error) { return c.Subject, nil }

// GetAudience implements jwt.Claims.
func (c *Claims) GetAudience() (jwt.ClaimStrings, error) { return jwt.ClaimStrings(c.Audience), nil }
