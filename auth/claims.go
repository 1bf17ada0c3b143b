package auth

import (
	"encoding/json"
	"errors"
	"fmt"
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

// UnmarshalJSON decodes the claims by their exact names. encoding/json
// would also take "ISS" or "Aud" for a field, but claim names are
// case-sensitive (RFC 7519, section 4): a token without "aud" has no
// audience, whatever else it holds, as any other verifier reads it.
func (c *Claims) UnmarshalJSON(data []byte) error {
	return decodeExact(data, []member{
		{"iss", &c.Issuer}, {"sub", &c.Subject}, {"aud", &c.Audience},
		{"exp", &c.ExpiresAt}, {"nbf", &c.NotBefore}, {"iat", &c.IssuedAt},
		{"jti", &c.ID}, {"access", &c.Access},
	})
}

// member is where decodeExact puts the value of the member called name.
type member struct {
	name string
	dst  any
}

// decodeExact decodes the JSON object data into the destinations of its
// members, found by exact name. Other members are ignored; of repeated
// ones, the last counts, which RFC 7519 allows. A JSON null leaves the
// destinations as they are.
func decodeExact(data []byte, members []member) error {
	var object map[string]json.RawMessage
	if err := json.Unmarshal(data, &object); err != nil {
		return err
	}
	for _, m := range members {
		if raw, ok := object[m.name]; ok {
			if err := json.Unmarshal(raw, m.dst); err != nil {
				return fmt.Errorf("%s: %w", m.name, err)
			}
		}
	}
	return nil
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
