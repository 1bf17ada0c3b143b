package proxy

import (
	"testing"

	"github.com/berth-registry/berth/internal/testutil"
)

// Package proxy may use the store it fills, the upstream client and
// digests. No gin: the registry serves HTTP, the proxy only fetches.
func TestImportAllowList(t *testing.T) {
	testutil.CheckImports(t, 2,
		"github.com/berth-registry/berth/storage",
		"github.com/google/go-containerregistry/pkg/authn",
		"github.com/google/go-containerregistry/pkg/name",
		"github.com/google/go-containerregistry/pkg/v1/remote",
		"github.com/google/go-containerregistry/pkg/v1/remote/transport",
		"github.com/opencontainers/go-digest",
	)
}
