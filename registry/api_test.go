package registry

import (
	"bytes"
	"crypto/sha512"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/storage"
	"github.com/berth-registry/berth/storage/driver/filesystem"
)

// newTestHandler returns the API on cfg, with a store on a fresh directory
// unless cfg has one.
func newTestHandler(t *testing.T, cfg Config) *Handler {
	t.Helper()
	if cfg.Store == nil {
		cfg.Store = newTestStore(t, storage.Options{})
	}
	return New(cfg)
}

// newTestStore returns a store on a fresh directory.
func newTestStore(t *testing.T, opts storage.Options) *storage.Store {
	t.Helper()
	d, err := filesystem.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return storage.NewWithOptions(d, opts)
}

// step is one request and what its answer must be.
type step struct {
	method, path string
	header       map[string]string
	body         string
	status       int
	code         string            // OCI error code, when an error is expected
	want         map[string]string // response headers ("" = must be absent)
	wantBody     string
}

func run(t *testing.T, h http.Handler, steps []step) {
	t.Helper()
	for i, s := range steps {
		req := httptest.NewRequest(s.method, s.path, strings.NewReader(s.body))
		for k, v := range s.header {
			req.Header.Set(k, v)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		res := rec.Result()
		body, _ := io.ReadAll(res.Body)
		where := fmt.Sprintf("step %d: %s %s", i, s.method, s.path)
		if res.StatusCode != s.status {
			t.Errorf("%s: status %d, want %d (body %s)", where, res.StatusCode, s.status, body)
			continue
		}
		if s.code != "" {
			var e struct {
				Errors []struct{ Code, Message string }
			}
			if err := json.Unmarshal(body, &e); err != nil || len(e.Errors) != 1 || e.Errors[0].Code != s.code {
				t.Errorf("%s: error body %s, want code %s", where, body, s.code)
			}
			if ct := res.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("%s: error Content-Type %q", where, ct)
			}
		}
		for k, v := range s.want {
			if got := res.Header.Get(k); got != v {
				t.Errorf("%s: header %s = %q, want %q", where, k, got, v)
			}
		}
		if s.wantBody != "" && string(body) != s.wantBody {
			t.Errorf("%s: body %q, want %q", where, body, s.wantBody)
		}
	}
}

func TestBlobAPI(t *testing.T) {
	h := newTestHandler(t, Config{DeleteEnabled: true})
	blob := "0123456789abcdef"
	dg := digest.FromString(blob).String()
	bad := digest.FromString("other").String()
	run(t, h, []step{
		{method: "GET", path: "/v2/", status: 200, want: map[string]string{"Docker-Distribution-API-Version": "registry/2.0"}, wantBody: "{}"},
		{method: "GET", path: "/v2", status: 301},
		{method: "GET", path: "/v2/a/blobs/" + dg, status: 404, code: "BLOB_UNKNOWN"},
		{method: "HEAD", path: "/v2/a/blobs/" + dg, status: 404},
		{method: "GET", path: "/v2/a/blobs/sha256:xyz", status: 400, code: "DIGEST_INVALID"},
		{method: "GET", path: "/v2/A/blobs/" + dg, status: 400, code: "NAME_INVALID"},
		{method: "GET", path: "/v2/a/../b/blobs/" + dg, status: 400, code: "NAME_INVALID"},
		{method: "GET", path: "/v2/a/nothing", status: 404, code: "NOT_FOUND"},
		{method: "GET", path: "/other", status: 404, code: "NOT_FOUND"},
		{method: "PATCH", path: "/v2/a/blobs/" + dg, status: 405, code: "UNSUPPORTED"},
		// Monolithic upload, then a wrong one.
		{method: "POST", path: "/v2/a/blobs/uploads/?digest=" + dg, body: blob, status: 201,
			want: map[string]string{"Location": "/v2/a/blobs/" + dg, "Docker-Content-Digest": dg}},
		{method: "POST", path: "/v2/a/blobs/uploads/?digest=" + bad, body: blob, status: 400, code: "DIGEST_INVALID"},
		{method: "POST", path: "/v2/a/blobs/uploads/?digest=nope", body: blob, status: 400, code: "DIGEST_INVALID"},
		{method: "GET", path: "/v2/a/blobs/" + bad, status: 404, code: "BLOB_UNKNOWN"},
		// Reads: whole, HEAD, ranges, conditional.
		{method: "GET", path: "/v2/a/blobs/" + dg, status: 200, wantBody: blob,
			want: map[string]string{"Content-Length": "16", "Docker-Content-Digest": dg, "ETag": `"` + dg + `"`, "Content-Type": "application/octet-stream"}},
		{method: "HEAD", path: "/v2/a/blobs/" + dg, status: 200, want: map[string]string{"Content-Length": "16", "Docker-Content-Digest": dg}},
		{method: "GET", path: "/v2/a/blobs/" + dg, header: map[string]string{"Range": "bytes=2-5"}, status: 206, wantBody: "2345",
			want: map[string]string{"Content-Range": "bytes 2-5/16", "Content-Length": "4"}},
		{method: "GET", path: "/v2/a/blobs/" + dg, header: map[string]string{"Range": "bytes=10-"}, status: 206, wantBody: "abcdef"},
		{method: "GET", path: "/v2/a/blobs/" + dg, header: map[string]string{"Range": "bytes=-3"}, status: 206, wantBody: "def"},
		{method: "GET", path: "/v2/a/blobs/" + dg, header: map[string]string{"Range": "bytes=16-20"}, status: 416, code: "RANGE_INVALID",
			want: map[string]string{"Content-Range": "bytes */16"}},
		{method: "GET", path: "/v2/a/blobs/" + dg, header: map[string]string{"Range": "bytes=5-2"}, status: 416},
		{method: "GET", path: "/v2/a/blobs/" + dg, header: map[string]string{"If-None-Match": `"` + dg + `"`}, status: 304},
		// Mounts.
		{method: "POST", path: "/v2/b/blobs/uploads/?mount=" + dg + "&from=a", status: 201,
			want: map[string]string{"Location": "/v2/b/blobs/" + dg, "Docker-Content-Digest": dg}},
		{method: "POST", path: "/v2/c/blobs/uploads/?mount=" + dg, status: 201},
		{method: "POST", path: "/v2/d/blobs/uploads/?mount=" + bad + "&from=a", status: 202},
		{method: "POST", path: "/v2/d/blobs/uploads/?mount=" + dg + "&from=Bad/Name", status: 400, code: "NAME_INVALID"},
		{method: "GET", path: "/v2/b/blobs/" + dg, status: 200, wantBody: blob},
		// Deletes unlink from one repository.
		{method: "DELETE", path: "/v2/b/blobs/" + dg, status: 202},
		{method: "DELETE", path: "/v2/b/blobs/" + dg, status: 404, code: "BLOB_UNKNOWN"},
		{method: "GET", path: "/v2/b/blobs/" + dg, status: 404},
		{method: "GET", path: "/v2/a/blobs/" + dg, status: 200},
	})
}

func TestChunkedUploadAPI(t *testing.T) {
	h := newTestHandler(t, Config{})
	req := httptest.NewRequest("POST", "/v2/team/app/blobs/uploads/", nil)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != 202 || rec.Header().Get("Range") != "0-0" || rec.Header().Get("Docker-Upload-UUID") == "" {
		t.Fatalf("POST: %d %v", rec.Code, rec.Header())
	}
	loc := rec.Header().Get("Location")
	id := rec.Header().Get("Docker-Upload-UUID")
	if loc != "/v2/team/app/blobs/uploads/"+id {
		t.Fatalf("Location %q", loc)
	}
	full := "chunk-one|chunk-two|"
	dg := digest.FromString(full).String()
	upload := map[string]string{"Location": loc, "Docker-Upload-UUID": id}
	with := func(m map[string]string, k, v string) map[string]string {
		out := map[string]string{k: v}
		for kk, vv := range m {
			out[kk] = vv
		}
		return out
	}
	run(t, h, []step{
		{method: "PATCH", path: loc, header: map[string]string{"Content-Range": "10-19"}, body: "chunk-two|", status: 416,
			want: with(upload, "Range", "0-0")},
		{method: "PATCH", path: loc, header: map[string]string{"Content-Range": "0-9"}, body: "chunk-one|", status: 202,
			want: with(upload, "Range", "0-9")},
		{method: "PATCH", path: loc, header: map[string]string{"Content-Range": "0-9"}, body: "chunk-one|", status: 416,
			want: with(upload, "Range", "0-9")},
		{method: "PATCH", path: loc, header: map[string]string{"Content-Range": "10-30"}, body: "chunk-two|", status: 400, code: "SIZE_INVALID"},
		{method: "PATCH", path: loc, header: map[string]string{"Content-Range": "garbage"}, body: "x", status: 416},
		{method: "GET", path: loc, status: 204, want: with(upload, "Range", "0-9")},
		{method: "PATCH", path: loc, header: map[string]string{"Content-Range": "10-19"}, body: "chunk-two|", status: 202,
			want: with(upload, "Range", "0-19")},
		{method: "PUT", path: loc, status: 400, code: "DIGEST_INVALID"},
		{method: "PUT", path: loc + "?digest=" + digest.FromString("x").String(), status: 400, code: "DIGEST_INVALID"},
		{method: "PUT", path: loc + "?digest=" + dg, status: 201,
			want: map[string]string{"Location": "/v2/team/app/blobs/" + dg, "Docker-Content-Digest": dg}},
		{method: "GET", path: loc, status: 404, code: "BLOB_UPLOAD_UNKNOWN"},
		{method: "GET", path: "/v2/team/app/blobs/" + dg, status: 200, wantBody: full},
		{method: "GET", path: "/v2/team/app/blobs/uploads/not-a-session", status: 404, code: "BLOB_UPLOAD_UNKNOWN"},
		{method: "PATCH", path: "/v2/team/app/blobs/uploads/..%2F..%2Fx", body: "x", status: 404, code: "NOT_FOUND"},
		{method: "PATCH", path: "/v2/team/app/blobs/uploads/..", body: "x", status: 404, code: "BLOB_UPLOAD_UNKNOWN"},
	})
	// Final chunk in the PUT, and cancel.
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("POST", "/v2/team/app/blobs/uploads", nil))
	loc2 := rec.Header().Get("Location")
	run(t, h, []step{
		{method: "PATCH", path: loc2, body: "streamed ", status: 202, want: map[string]string{"Range": "0-8"}},
		{method: "PUT", path: loc2 + "?digest=" + digest.FromString("streamed tail").String(), body: "tail", status: 201},
		{method: "GET", path: "/v2/team/app/blobs/" + digest.FromString("streamed tail").String(), status: 200, wantBody: "streamed tail"},
	})
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("POST", "/v2/team/app/blobs/uploads/", nil))
	loc3 := rec.Header().Get("Location")
	run(t, h, []step{
		{method: "DELETE", path: loc3, status: 204},
		{method: "DELETE", path: loc3, status: 404, code: "BLOB_UPLOAD_UNKNOWN"},
	})
}

func putBlobHTTP(t *testing.T, h http.Handler, name, content string) string {
	t.Helper()
	dg := digest.FromString(content).String()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("POST", "/v2/"+name+"/blobs/uploads/?digest="+dg, strings.NewReader(content)))
	if rec.Code != 201 {
		t.Fatalf("blob upload: %d %s", rec.Code, rec.Body)
	}
	return dg
}

func TestManifestAPI(t *testing.T) {
	h := newTestHandler(t, Config{DeleteEnabled: true})
	cfg := putBlobHTTP(t, h, "a", `{"architecture":"amd64"}`)
	layer := putBlobHTTP(t, h, "a", "layer")
	manifest := fmt.Sprintf(`{"schemaVersion":2,"mediaType":"%s","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":24},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"%s","size":5}]}`,
		storage.MediaTypeOCIManifest, cfg, layer)
	mdg := digest.FromString(manifest).String()
	artifact := fmt.Sprintf(`{"schemaVersion":2,"mediaType":"%s","artifactType":"application/vnd.example.sig","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":24},"layers":[],"subject":{"mediaType":"%s","digest":"%s","size":%d}}`,
		storage.MediaTypeOCIManifest, cfg, storage.MediaTypeOCIManifest, mdg, len(manifest))
	adg := digest.FromString(artifact).String()
	oci := map[string]string{"Content-Type": storage.MediaTypeOCIManifest}
	huge := `{"schemaVersion":2,` + strings.Repeat(" ", storage.MaxManifestSize) + `}`
	run(t, h, []step{
		{method: "GET", path: "/v2/a/manifests/latest", status: 404, code: "MANIFEST_UNKNOWN"},
		{method: "GET", path: "/v2/a/manifests/.INVALID_MANIFEST_NAME", status: 404, code: "MANIFEST_UNKNOWN"},
		{method: "PUT", path: "/v2/a/manifests/.bad", header: oci, body: manifest, status: 400, code: "TAG_INVALID"},
		{method: "PUT", path: "/v2/a/manifests/latest", header: oci, body: "blablabla", status: 400, code: "MANIFEST_INVALID"},
		{method: "PUT", path: "/v2/a/manifests/latest", header: oci, body: huge, status: 413, code: "SIZE_INVALID"},
		{method: "PUT", path: "/v2/b/manifests/latest", header: oci, body: manifest, status: 400, code: "MANIFEST_BLOB_UNKNOWN"},
		{method: "PUT", path: "/v2/a/manifests/" + digest.FromString("x").String(), header: oci, body: manifest, status: 400, code: "DIGEST_INVALID"},
		// The Content-Type must be the manifest's type, as Distribution requires.
		{method: "PUT", path: "/v2/a/manifests/latest", header: map[string]string{"Content-Type": "text/plain"}, body: manifest, status: 400, code: "MANIFEST_INVALID"},
		{method: "PUT", path: "/v2/a/manifests/latest", header: map[string]string{"Content-Type": storage.MediaTypeOCIIndex}, body: manifest, status: 400, code: "MANIFEST_INVALID"},
		{method: "GET", path: "/v2/a/manifests/latest", status: 404, code: "MANIFEST_UNKNOWN"},
		{method: "PUT", path: "/v2/a/manifests/latest", header: oci, body: manifest, status: 201,
			want: map[string]string{"Location": "/v2/a/manifests/" + mdg, "Docker-Content-Digest": mdg, "OCI-Subject": ""}},
		{method: "GET", path: "/v2/a/manifests/latest", header: map[string]string{"Accept": storage.MediaTypeOCIManifest}, status: 200, wantBody: manifest,
			want: map[string]string{"Content-Type": storage.MediaTypeOCIManifest, "Docker-Content-Digest": mdg, "Content-Length": fmt.Sprint(len(manifest))}},
		{method: "HEAD", path: "/v2/a/manifests/" + mdg, status: 200, want: map[string]string{"Content-Type": storage.MediaTypeOCIManifest, "Content-Length": fmt.Sprint(len(manifest))}},
		{method: "GET", path: "/v2/a/manifests/latest", header: map[string]string{"Accept": storage.MediaTypeDockerManifest + ", " + storage.MediaTypeDockerManifestList}, status: 404, code: "MANIFEST_UNKNOWN"},
		{method: "GET", path: "/v2/a/manifests/latest", header: map[string]string{"Accept": "*/*"}, status: 200},
		{method: "PUT", path: "/v2/a/manifests/" + adg, header: oci, body: artifact, status: 201, want: map[string]string{"OCI-Subject": mdg}},
		{method: "GET", path: "/v2/a/referrers/" + mdg + "?artifactType=application/vnd.example.sig", status: 200,
			want: map[string]string{"Content-Type": storage.MediaTypeOCIIndex, "OCI-Filters-Applied": "artifactType"}},
		{method: "GET", path: "/v2/a/referrers/" + mdg, status: 200, want: map[string]string{"OCI-Filters-Applied": ""}},
		{method: "PUT", path: "/v2/a/manifests/v2", header: oci, body: manifest, status: 201},
		{method: "GET", path: "/v2/a/tags/list", status: 200, wantBody: `{"name":"a","tags":["latest","v2"]}`},
		{method: "GET", path: "/v2/a/tags/list?n=1", status: 200, wantBody: `{"name":"a","tags":["latest"]}`,
			want: map[string]string{"Link": `</v2/a/tags/list?last=latest&n=1>; rel="next"`}},
		{method: "GET", path: "/v2/a/tags/list?n=1&last=latest", status: 200, wantBody: `{"name":"a","tags":["v2"]}`, want: map[string]string{"Link": ""}},
		{method: "GET", path: "/v2/a/tags/list?n=-1", status: 400, code: "PAGINATION_NUMBER_INVALID"},
		{method: "GET", path: "/v2/nothing/tags/list", status: 404, code: "NAME_UNKNOWN"},
		{method: "GET", path: "/v2/_catalog", status: 200, wantBody: `{"repositories":["a"]}`},
		{method: "DELETE", path: "/v2/a/manifests/v2", status: 202},
		{method: "GET", path: "/v2/a/manifests/v2", status: 404, code: "MANIFEST_UNKNOWN"},
		{method: "GET", path: "/v2/a/manifests/latest", status: 200},
		{method: "DELETE", path: "/v2/a/manifests/" + mdg, status: 202},
		{method: "GET", path: "/v2/a/manifests/latest", status: 404, code: "MANIFEST_UNKNOWN"},
		{method: "DELETE", path: "/v2/a/manifests/" + mdg, status: 404, code: "MANIFEST_UNKNOWN"},
	})
	// The referrers list names the artifact with its type.
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/v2/a/referrers/"+mdg, nil))
	var idx struct {
		Manifests []struct{ Digest, ArtifactType string }
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &idx); err != nil || len(idx.Manifests) != 1 ||
		idx.Manifests[0].Digest != adg || idx.Manifests[0].ArtifactType != "application/vnd.example.sig" {
		t.Fatalf("referrers: %s", rec.Body)
	}
}

func TestDeleteDisabled(t *testing.T) {
	h := newTestHandler(t, Config{DeleteEnabled: false})
	dg := putBlobHTTP(t, h, "a", "x")
	run(t, h, []step{
		{method: "DELETE", path: "/v2/a/blobs/" + dg, status: 405, code: "UNSUPPORTED"},
		{method: "DELETE", path: "/v2/a/manifests/" + dg, status: 405, code: "UNSUPPORTED"},
		{method: "GET", path: "/v2/a/blobs/" + dg, status: 200},
	})
}

// recordingAuthorizer records what it was asked and refuses or allows.
type recordingAuthorizer struct {
	asked [][]Access
	allow bool
}

type challenge struct{ err error }

func (c challenge) Error() string { return c.err.Error() }
func (c challenge) Unwrap() error { return c.err }

func (challenge) SetHeaders(h http.Header) {
	h.Set("WWW-Authenticate", `Bearer realm="https://auth.example/token"`)
}

func (a *recordingAuthorizer) Authorize(r *http.Request, need []Access) (string, error) {
	a.asked = append(a.asked, need)
	if !a.allow {
		return "", challenge{fmt.Errorf("no token: %w", ErrUnauthorized)}
	}
	return "alice", nil
}

func TestAuthorizerSeam(t *testing.T) {
	authz := &recordingAuthorizer{}
	h := newTestHandler(t, Config{Authorizer: authz})
	run(t, h, []step{
		{method: "GET", path: "/v2/team/app/manifests/latest", status: 401, code: "UNAUTHORIZED",
			want: map[string]string{"WWW-Authenticate": `Bearer realm="https://auth.example/token"`}},
		{method: "GET", path: "/v2/BAD/manifests/latest", status: 400, code: "NAME_INVALID"},
	})
	if len(authz.asked) != 1 || len(authz.asked[0]) != 1 || authz.asked[0][0].Name != "team/app" || authz.asked[0][0].Actions[0] != "pull" {
		t.Fatalf("authorizer asked %+v", authz.asked)
	}
	authz.allow = true
	run(t, h, []step{{method: "GET", path: "/v2/team/app/manifests/latest", status: 404, code: "MANIFEST_UNKNOWN"}})
	// With an authorizer, a mount names its source (whose pull access is
	// checked) or is an ordinary upload: no blob crosses tenants by digest.
	dg := putBlobHTTP(t, h, "team-a/private", "private content of team a")
	run(t, h, []step{
		{method: "POST", path: "/v2/team-b/mine/blobs/uploads/?mount=" + dg, status: 202},
		{method: "GET", path: "/v2/team-b/mine/blobs/" + dg, status: 404, code: "BLOB_UNKNOWN"},
		{method: "POST", path: "/v2/team-b/mine/blobs/uploads/?mount=" + dg + "&from=team-a/private", status: 201},
	})
	last := authz.asked[len(authz.asked)-1]
	if len(last) != 2 || last[1].Name != "team-a/private" || last[1].Actions[0] != "pull" {
		t.Fatalf("mount did not ask for pull on its source: %+v", last)
	}
	denied := &deniedAuthorizer{}
	run(t, newTestHandler(t, Config{Authorizer: denied}), []step{
		{method: "PUT", path: "/v2/x/manifests/latest", status: 403, code: "DENIED"},
	})
}

type deniedAuthorizer struct{}

func (deniedAuthorizer) Authorize(*http.Request, []Access) (string, error) {
	return "bob", fmt.Errorf("push to x: %w", ErrDenied)
}

func TestInternalErrorsHidden(t *testing.T) {
	status, body := classify(errors.New("open /secret/path: permission denied"))
	if status != 500 || body.Code != "UNKNOWN" || strings.Contains(body.Message, "secret") {
		t.Fatalf("internal error leaked: %d %+v", status, body)
	}
	var buf bytes.Buffer
	rec := httptest.NewRecorder()
	writeError(rec, fmt.Errorf("wrapped: %w", storage.ErrBlobUnknown))
	buf.Write(rec.Body.Bytes())
	if rec.Code != 404 || !strings.Contains(buf.String(), `"BLOB_UNKNOWN"`) {
		t.Fatalf("wrapped sentinel: %d %s", rec.Code, buf.String())
	}
}

// TestManifestReferencesAPI: every descriptor a manifest PUT checks must name
// stored content of the size it declares; those the spec lets a client push
// without their content (non-distributable layers with urls, a subject) are
// not checked.
func TestManifestReferencesAPI(t *testing.T) {
	h := newTestHandler(t, Config{})
	big := strings.Repeat("x", 65536)
	cfg := putBlobHTTP(t, h, "a", `{"architecture":"amd64"}`)
	layer := putBlobHTTP(t, h, "a", big)
	desc := func(mediaType, dg string, size int, extra string) string {
		return fmt.Sprintf(`{"mediaType":%q,"digest":%q,"size":%d%s}`, mediaType, dg, size, extra)
	}
	image := func(config string, layers ...string) string {
		return fmt.Sprintf(`{"schemaVersion":2,"mediaType":%q,"config":%s,"layers":[%s]}`, storage.MediaTypeOCIManifest, config, strings.Join(layers, ","))
	}
	goodCfg := desc("application/vnd.oci.image.config.v1+json", cfg, 24, "")
	good := image(goodCfg, desc("application/vnd.oci.image.layer.v1.tar", layer, 65536, ""))
	goodDg := digest.FromString(good).String()
	index := func(size int) string {
		return fmt.Sprintf(`{"schemaVersion":2,"mediaType":%q,"manifests":[%s]}`, storage.MediaTypeOCIIndex, desc(storage.MediaTypeOCIManifest, goodDg, size, ""))
	}
	missing := digest.FromString("never pushed").String()
	withSubject := fmt.Sprintf(`{"schemaVersion":2,"mediaType":%q,"config":%s,"layers":[],"subject":%s}`,
		storage.MediaTypeOCIManifest, goodCfg, desc(storage.MediaTypeOCIManifest, missing, 7, ""))
	oci := map[string]string{"Content-Type": storage.MediaTypeOCIManifest}
	idx := map[string]string{"Content-Type": storage.MediaTypeOCIIndex}
	run(t, h, []step{
		// A layer descriptor that says 5 bytes for a 65,536-byte blob.
		{method: "PUT", path: "/v2/a/manifests/short", header: oci, body: image(goodCfg, desc("application/vnd.oci.image.layer.v1.tar", layer, 5, "")), status: 400, code: "MANIFEST_INVALID"},
		{method: "PUT", path: "/v2/a/manifests/long", header: oci, body: image(goodCfg, desc("application/vnd.oci.image.layer.v1.tar", layer, 65537, "")), status: 400, code: "MANIFEST_INVALID"},
		{method: "PUT", path: "/v2/a/manifests/cfg", header: oci, body: image(desc("application/vnd.oci.image.config.v1+json", cfg, 2, "")), status: 400, code: "MANIFEST_INVALID"},
		{method: "PUT", path: "/v2/a/manifests/missing", header: oci, body: image(goodCfg, desc("application/vnd.oci.image.layer.v1.tar", missing, 5, "")), status: 400, code: "MANIFEST_BLOB_UNKNOWN"},
		{method: "PUT", path: "/v2/a/manifests/good", header: oci, body: good, status: 201},
		// Not checked: a non-distributable layer with urls, a subject.
		{method: "PUT", path: "/v2/a/manifests/foreign", header: oci, body: image(goodCfg, desc("application/vnd.oci.image.layer.nondistributable.v1.tar+gzip", missing, 5, `,"urls":["https://example.com/l"]`)), status: 201},
		{method: "PUT", path: "/v2/a/manifests/referrer", header: oci, body: withSubject, status: 201, want: map[string]string{"OCI-Subject": missing}},
		// Index children: known, and of their size.
		{method: "PUT", path: "/v2/a/manifests/index-short", header: idx, body: index(len(good) - 1), status: 400, code: "MANIFEST_INVALID"},
		{method: "PUT", path: "/v2/b/manifests/index", header: idx, body: index(len(good)), status: 400, code: "MANIFEST_BLOB_UNKNOWN"},
		{method: "PUT", path: "/v2/a/manifests/index", header: idx, body: index(len(good)), status: 201},
		{method: "GET", path: "/v2/a/tags/list", status: 200, wantBody: `{"name":"a","tags":["foreign","good","index","referrer"]}`},
	})
	// The refusal names the descriptor and both sizes.
	rec := httptest.NewRecorder()
	req := httptest.NewRequest("PUT", "/v2/a/manifests/short", strings.NewReader(image(goodCfg, desc("application/vnd.oci.image.layer.v1.tar", layer, 5, ""))))
	req.Header.Set("Content-Type", storage.MediaTypeOCIManifest)
	h.ServeHTTP(rec, req)
	var e struct {
		Errors []struct {
			Code   string
			Detail struct {
				Digest       string
				Size, Stored int64
			}
		}
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || len(e.Errors) != 1 || e.Errors[0].Detail.Digest != layer ||
		e.Errors[0].Detail.Size != 5 || e.Errors[0].Detail.Stored != 65536 {
		t.Fatalf("size refusal: %s", rec.Body)
	}
}

// TestManifestTagParamsAPI: a PUT by digest with tag parameters tags the
// manifest with each, answers one OCI-Tag header per tag, and a sha512
// manifest so tagged is served by tag with its own digest.
func TestManifestTagParamsAPI(t *testing.T) {
	authz := &recordingAuthorizer{allow: true}
	h := newTestHandler(t, Config{Authorizer: authz})
	cfg := putBlobHTTP(t, h, "a", `{"architecture":"amd64"}`)
	manifest := fmt.Sprintf(`{"schemaVersion":2,"mediaType":%q,"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":%q,"size":24},"layers":[]}`,
		storage.MediaTypeOCIManifest, cfg)
	sum := sha512.Sum512([]byte(manifest))
	dg := digest.NewDigestFromBytes(digest.SHA512, sum[:]).String()
	oci := map[string]string{"Content-Type": storage.MediaTypeOCIManifest}
	many := strings.Repeat("&tag=t", maxTagParams+1)[1:]
	run(t, h, []step{
		{method: "PUT", path: "/v2/a/manifests/" + dg + "?tag=ok&tag=-bad", header: oci, body: manifest, status: 400, code: "TAG_INVALID"},
		{method: "PUT", path: "/v2/a/manifests/" + dg + "?tag=", header: oci, body: manifest, status: 400, code: "TAG_INVALID"},
		{method: "PUT", path: "/v2/a/manifests/" + dg + "?" + many, header: oci, body: manifest, status: 414, code: "UNSUPPORTED"},
		{method: "GET", path: "/v2/a/manifests/ok", status: 404, code: "MANIFEST_UNKNOWN"},
		{method: "GET", path: "/v2/a/manifests/" + dg, status: 404, code: "MANIFEST_UNKNOWN"},
	})
	req := httptest.NewRequest("PUT", "/v2/a/manifests/"+dg+"?tag=v1&tag=latest&tag=v1", strings.NewReader(manifest))
	req.Header.Set("Content-Type", storage.MediaTypeOCIManifest)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != 201 || rec.Header().Get("Docker-Content-Digest") != dg || rec.Header().Get("Location") != "/v2/a/manifests/"+dg {
		t.Fatalf("PUT with tags: %d %v %s", rec.Code, rec.Header(), rec.Body)
	}
	if got := rec.Header().Values("OCI-Tag"); !reflect.DeepEqual(got, []string{"v1", "latest"}) {
		t.Fatalf("OCI-Tag headers %q, want one per tag", got)
	}
	// Authorized as any push: pull and push on the repository, nothing else.
	if last := authz.asked[len(authz.asked)-1]; !reflect.DeepEqual(last, []Access{{Type: "repository", Name: "a", Actions: []string{"pull", "push"}}}) {
		t.Fatalf("PUT with tags asked for %+v", last)
	}
	sha512Served := map[string]string{"Docker-Content-Digest": dg, "Content-Type": storage.MediaTypeOCIManifest}
	run(t, h, []step{
		{method: "GET", path: "/v2/a/manifests/v1", status: 200, want: sha512Served, wantBody: manifest},
		{method: "HEAD", path: "/v2/a/manifests/latest", status: 200, want: sha512Served},
		{method: "GET", path: "/v2/a/manifests/" + dg, status: 200, want: sha512Served},
		{method: "GET", path: "/v2/a/tags/list", status: 200, wantBody: `{"name":"a","tags":["latest","v1"]}`},
		// Without tag parameters, no OCI-Tag.
		{method: "PUT", path: "/v2/a/manifests/" + dg, header: oci, body: manifest, status: 201, want: map[string]string{"OCI-Tag": ""}},
	})
}

// TestUploadBusyAPI: a request on an upload that another request holds for
// longer than the store lets it wait is answered 429 TOOMANYREQUESTS with
// Retry-After, so the client retries instead of waiting with no answer.
func TestUploadBusyAPI(t *testing.T) {
	h := newTestHandler(t, Config{Store: newTestStore(t, storage.Options{UploadWait: 20 * time.Millisecond})})
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("POST", "/v2/a/blobs/uploads/", nil))
	loc := rec.Header().Get("Location")
	// The holder: a PATCH whose body is fed by hand, through a recorder,
	// which has no read deadline, so nothing cuts it.
	body, feed := io.Pipe()
	done := make(chan int, 1)
	go func() {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("PATCH", loc, body))
		done <- rec.Code
	}()
	if _, err := feed.Write([]byte("arriving")); err != nil {
		t.Fatal(err)
	}
	run(t, h, []step{
		{method: "GET", path: loc, status: 429, code: "TOOMANYREQUESTS", want: map[string]string{"Retry-After": "1"}},
		{method: "PATCH", path: loc, body: "more", status: 429, code: "TOOMANYREQUESTS"},
		{method: "DELETE", path: loc, status: 429, code: "TOOMANYREQUESTS"},
	})
	feed.Close()
	if code := <-done; code != http.StatusAccepted {
		t.Fatalf("holder: %d", code)
	}
	run(t, h, []step{{method: "GET", path: loc, status: 204, want: map[string]string{"Range": "0-7"}}})
}
