package registry

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/berth-registry/berth/proxy"
	"github.com/berth-registry/berth/storage"
)

// Errors of the HTTP layer itself; storage's errors are mapped beside them.
var (
	// ErrUnauthorized: the client must authenticate (401 UNAUTHORIZED).
	ErrUnauthorized = errors.New("authentication required")
	// ErrDenied: the client is known but may not do this (403 DENIED).
	ErrDenied = errors.New("requested access to the resource is denied")
	// errUnsupported: the operation is switched off or not an endpoint's method.
	errUnsupported = errors.New("the operation is unsupported")
	// errReadOnly: a write while the registry is in read-only mode.
	errReadOnly = fmt.Errorf("%w: the registry is in read-only mode", errUnsupported)
	// errMirrored: a write to a repository that is a pull-through cache.
	errMirrored = fmt.Errorf("%w: %w", errUnsupported, proxy.ErrMirrored)
	// errSizeInvalid: Content-Length and Content-Range disagree.
	errSizeInvalid = errors.New("provided length did not match content length")
	// errRangeInvalid: a Range header that cannot be served.
	errRangeInvalid = errors.New("requested range not satisfiable")
	// errTooManyTags: a manifest PUT with more than maxTagParams tags.
	errTooManyTags = errors.New("too many tag parameters: at most " + strconv.Itoa(maxTagParams) + " per request")
	// errPaginationInvalid: an n that is not a non-negative number.
	errPaginationInvalid = errors.New("invalid number of results requested")
)

// retryAfterStorage is the Retry-After, in seconds, of an answer that
// storage cannot take writes (a full disk): space is rarely freed faster.
const retryAfterStorage = 30

// apiError is one entry of the OCI error body.
type apiError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Detail  any    `json:"detail,omitempty"`
}

// HeaderSetter is implemented by errors that add response headers, such as
// an authentication challenge.
type HeaderSetter interface {
	SetHeaders(h http.Header)
}

// classify is the one table from errors to (HTTP status, OCI error). Order
// matters only where one error wraps another.
func classify(err error) (int, apiError) {
	var (
		mismatch   *storage.DigestMismatchError
		rangeErr   *storage.RangeError
		invalid    *storage.ManifestInvalidError
		blobMissed *storage.ManifestBlobUnknownError
		sizeWrong  *storage.SizeMismatchError
	)
	switch {
	case errors.Is(err, ErrUnauthorized):
		return 401, apiError{Code: "UNAUTHORIZED", Message: "authentication required"}
	case errors.Is(err, ErrInsufficientScope):
		return 401, apiError{Code: "DENIED", Message: ErrInsufficientScope.Error()}
	case errors.Is(err, ErrDenied):
		return 403, apiError{Code: "DENIED", Message: ErrDenied.Error()}
	case errors.Is(err, proxy.ErrUpstreamAuth):
		return 502, apiError{Code: "UNAVAILABLE", Message: "the upstream registry of this pull-through cache refused its credentials"}
	case errors.Is(err, proxy.ErrUpstream):
		return 502, apiError{Code: "UNAVAILABLE", Message: "the upstream registry of this pull-through cache failed: retry later"}
	case errors.Is(err, storage.ErrNameInvalid):
		return 400, apiError{Code: "NAME_INVALID", Message: err.Error()}
	case errors.Is(err, storage.ErrTagInvalid):
		return 400, apiError{Code: "TAG_INVALID", Message: err.Error()}
	case errors.Is(err, storage.ErrDigestInvalid):
		return 400, apiError{Code: "DIGEST_INVALID", Message: err.Error()}
	case errors.As(err, &mismatch):
		return 400, apiError{Code: "DIGEST_INVALID", Message: "provided digest did not match uploaded content",
			Detail: map[string]string{"provided": mismatch.Want.String(), "computed": mismatch.Got.String()}}
	case errors.As(err, &rangeErr):
		return 416, apiError{Code: "BLOB_UPLOAD_INVALID", Message: rangeErr.Error()}
	case errors.As(err, &blobMissed):
		return 400, apiError{Code: "MANIFEST_BLOB_UNKNOWN", Message: "manifest references a blob unknown to the registry",
			Detail: map[string]string{"digest": blobMissed.Digest.String()}}
	case errors.As(err, &sizeWrong):
		return 400, apiError{Code: "MANIFEST_INVALID", Message: "manifest invalid: a descriptor's size differs from the stored content's",
			Detail: map[string]any{"digest": sizeWrong.Digest.String(), "size": sizeWrong.Declared, "stored": sizeWrong.Stored}}
	case errors.As(err, &invalid):
		return 400, apiError{Code: "MANIFEST_INVALID", Message: invalid.Error()}
	case errors.Is(err, storage.ErrManifestTooLarge):
		return 413, apiError{Code: "SIZE_INVALID", Message: "manifest is larger than " + strconv.Itoa(storage.MaxManifestSize) + " bytes"}
	case errors.Is(err, storage.ErrUploadInvalid):
		return 400, apiError{Code: "BLOB_UPLOAD_INVALID", Message: "blob upload invalid: the request body ended early or failed"}
	case errors.Is(err, storage.ErrBlobUnknown):
		return 404, apiError{Code: "BLOB_UNKNOWN", Message: storage.ErrBlobUnknown.Error()}
	case errors.Is(err, storage.ErrUploadBusy):
		return 429, apiError{Code: "TOOMANYREQUESTS", Message: "another request on this upload is still in progress: retry"}
	case errors.Is(err, storage.ErrStorageFull):
		return 503, apiError{Code: "UNAVAILABLE", Message: "storage is full: nothing was written, retry later"}
	case errors.Is(err, storage.ErrPromiseExpired):
		return 503, apiError{Code: "UNAVAILABLE", Message: "the manifest's references were checked too long ago: nothing was stored, retry"}
	case errors.Is(err, storage.ErrUploadUnknown):
		return 404, apiError{Code: "BLOB_UPLOAD_UNKNOWN", Message: storage.ErrUploadUnknown.Error()}
	case errors.Is(err, storage.ErrManifestUnknown):
		return 404, apiError{Code: "MANIFEST_UNKNOWN", Message: storage.ErrManifestUnknown.Error()}
	case errors.Is(err, storage.ErrManifestNotAccept):
		return 404, apiError{Code: "MANIFEST_UNKNOWN", Message: storage.ErrManifestNotAccept.Error()}
	case errors.Is(err, storage.ErrNameUnknown):
		return 404, apiError{Code: "NAME_UNKNOWN", Message: storage.ErrNameUnknown.Error()}
	case errors.Is(err, errRouteUnknown):
		return 404, apiError{Code: "NOT_FOUND", Message: errRouteUnknown.Error()}
	case errors.Is(err, errMirrored):
		return 405, apiError{Code: "UNSUPPORTED", Message: "the repository is a pull-through cache of an upstream registry: pushes and deletes are refused"}
	case errors.Is(err, errReadOnly):
		return 405, apiError{Code: "UNSUPPORTED", Message: "the registry is in read-only mode: pushes and deletes are refused"}
	case errors.Is(err, errUnsupported):
		return 405, apiError{Code: "UNSUPPORTED", Message: errUnsupported.Error()}
	case errors.Is(err, errSizeInvalid):
		return 400, apiError{Code: "SIZE_INVALID", Message: errSizeInvalid.Error()}
	case errors.Is(err, errRangeInvalid):
		return 416, apiError{Code: "RANGE_INVALID", Message: errRangeInvalid.Error()}
	case errors.Is(err, errTooManyTags):
		return 414, apiError{Code: "UNSUPPORTED", Message: errTooManyTags.Error()}
	case errors.Is(err, errPaginationInvalid):
		return 400, apiError{Code: "PAGINATION_NUMBER_INVALID", Message: errPaginationInvalid.Error()}
	}
	return 500, apiError{Code: "UNKNOWN", Message: "internal server error"}
}

// writeError answers with the OCI error body for err. Internal detail of
// unclassified errors never reaches the client; it is logged by the caller.
func writeError(w http.ResponseWriter, err error) int {
	status, body := classify(err)
	var hs HeaderSetter
	if errors.As(err, &hs) {
		hs.SetHeaders(w.Header())
	}
	b, _ := json.Marshal(struct {
		Errors []apiError `json:"errors"`
	}{[]apiError{body}})
	h := w.Header()
	if status == http.StatusTooManyRequests && h.Get("Retry-After") == "" {
		h.Set("Retry-After", "1") // as the spec asks of a 429
	}
	if status == http.StatusServiceUnavailable && h.Get("Retry-After") == "" {
		h.Set("Retry-After", strconv.Itoa(retryAfterStorage))
	}
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	_, _ = w.Write(b)
	return status
}
