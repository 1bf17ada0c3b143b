package auth

import (
	"testing"

	"github.com/berth-registry/berth/internal/testutil"
)

// Package auth may use JWT and bcrypt, and internal/osfile (the standard
// library's file functions with Windows given Unix's sharing rules). gin in
// particular must never appear: the registry imports auth for verification.
func TestImportAllowList(t *testing.T) {
	testutil.CheckImports(t, 5,
		"github.com/golang-jwt/jwt/v5",
		"golang.org/x/crypto/bcrypt",
		"github.com/berth-registry/berth/internal/osfile",
	)
}
