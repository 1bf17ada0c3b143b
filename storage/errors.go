package storage

import (
	"errors"
	"fmt"

	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/storage/driver"
)

// Sentinel errors of the content model. The registry maps each to one OCI
// error code and HTTP status; wrap them with %w to add detail.
var (
	ErrBlobUnknown       = errors.New("blob unknown to registry")
	ErrManifestUnknown   = errors.New("manifest unknown")
	ErrNameUnknown       = errors.New("repository name not known to registry")
	ErrUploadUnknown     = errors.New("blob upload unknown to registry")
	ErrNameInvalid       = errors.New("invalid repository name")
	ErrTagInvalid        = errors.New("invalid tag")
	ErrDigestInvalid     = errors.New("invalid digest")
	ErrManifestTooLarge  = errors.New("manifest too large")
	ErrUploadInvalid     = errors.New("blob upload invalid")
	ErrManifestNotAccept = errors.New("manifest media type not accepted by the client")
	// ErrUploadBusy: another request holds the upload session for longer
	// than this one may wait; the client may retry.
	ErrUploadBusy = errors.New("blob upload busy with another request")
	// ErrStorageFull: a write failed because the store has no space left;
	// nothing was changed, and the client may retry once space is freed.
	// It is the driver's sentinel, so driver errors match it as they are.
	ErrStorageFull = driver.ErrStorageFull
)

// DigestMismatchError says that content did not hash to the digest given for it.
type DigestMismatchError struct {
	Want, Got digest.Digest
}

func (e *DigestMismatchError) Error() string {
	return fmt.Sprintf("digest mismatch: provided %s, content is %s", e.Want, e.Got)
}

// RangeError says that a chunk did not start where the upload ends. Size is
// how many bytes the upload holds, so the client can resume.
type RangeError struct {
	Start, Size int64
}

func (e *RangeError) Error() string {
	return fmt.Sprintf("chunk starts at %d but the upload holds %d bytes", e.Start, e.Size)
}

// ManifestInvalidError says why a manifest was refused.
type ManifestInvalidError struct {
	Reason string
}

func (e *ManifestInvalidError) Error() string { return "manifest invalid: " + e.Reason }

// ManifestBlobUnknownError names a blob or child manifest that a manifest
// references but the repository does not have.
type ManifestBlobUnknownError struct {
	Digest digest.Digest
}

func (e *ManifestBlobUnknownError) Error() string {
	return "manifest references unknown blob " + e.Digest.String()
}

// SizeMismatchError says that a manifest's descriptor declares a size other
// than that of the content the registry holds under its digest.
type SizeMismatchError struct {
	Digest           digest.Digest
	Declared, Stored int64
}

func (e *SizeMismatchError) Error() string {
	return fmt.Sprintf("manifest invalid: descriptor of %s declares %d bytes, the registry holds %d", e.Digest, e.Declared, e.Stored)
}
