// Package auth holds what the token server and the registry share about
// Docker-style token authentication: scopes (parse and format), token claims,
// signing and verification of JWTs, key ids and JWKS documents, htpasswd user
// files, and the access policy that turns a user and the scopes they ask for
// into the scopes they are granted.
//
// It imports only the standard library, golang-jwt/jwt/v5 and
// golang.org/x/crypto/bcrypt; an import allow-list test keeps it that way (in
// particular it never imports gin).
package auth
