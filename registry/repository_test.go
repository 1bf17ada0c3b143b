package registry

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/storage"
)

// pushImage stores a one-layer image in repository name under tag, through
// the store.
func pushImage(t *testing.T, s *storage.Store, name, tag string) {
	t.Helper()
	ctx := context.Background()
	config, layer := []byte(`{"n":"`+name+`"}`), []byte("layer of "+name)
	for _, b := range [][]byte{config, layer} {
		if _, err := s.PutBlob(ctx, name, digest.FromBytes(b), bytes.NewReader(b)); err != nil {
			t.Fatal(err)
		}
	}
	m := fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",`+
		`"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":%q,"size":%d},`+
		`"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":%q,"size":%d}]}`,
		digest.FromBytes(config), len(config), digest.FromBytes(layer), len(layer))
	if _, err := s.PutManifest(ctx, name, tag, storage.MediaTypeOCIManifest, []byte(m)); err != nil {
		t.Fatal(err)
	}
}

func TestDeleteRepository(t *testing.T) {
	store := newTestStore(t, storage.Options{})
	for _, name := range []string{"team/app", "team/app/sub", "team/other"} {
		pushImage(t, store, name, "v1")
	}
	blob := []byte("pushed, never referenced")
	if _, err := store.PutBlob(context.Background(), "team/blobs", digest.FromBytes(blob), bytes.NewReader(blob)); err != nil {
		t.Fatal(err)
	}
	h := newTestHandler(t, Config{Store: store, DeleteEnabled: true})
	run(t, h, []step{
		{method: "GET", path: "/v2/team/app/", status: http.StatusMethodNotAllowed, code: "UNSUPPORTED"},
		{method: "DELETE", path: "/v2/team/app/", status: http.StatusAccepted},
		{method: "GET", path: "/v2/team/app/manifests/v1", status: http.StatusNotFound, code: "MANIFEST_UNKNOWN"},
		{method: "GET", path: "/v2/team/app/tags/list", status: http.StatusNotFound, code: "NAME_UNKNOWN"},
		{method: "GET", path: "/v2/_catalog", status: http.StatusOK, wantBody: `{"repositories":["team/app/sub","team/other"]}`},
		// A repository with content but no tag lists none, as [] (not null).
		{method: "GET", path: "/v2/team/blobs/tags/list", status: http.StatusOK, wantBody: `{"name":"team/blobs","tags":[]}`},
		{method: "GET", path: "/v2/team/app/sub/manifests/v1", status: http.StatusOK},
		{method: "DELETE", path: "/v2/team/app/", status: http.StatusNotFound, code: "NAME_UNKNOWN"},
		{method: "DELETE", path: "/v2/Team/", status: http.StatusBadRequest, code: "NAME_INVALID"},
	})
	off := newTestHandler(t, Config{Store: store})
	run(t, off, []step{
		{method: "DELETE", path: "/v2/team/other/", status: http.StatusMethodNotAllowed, code: "UNSUPPORTED"},
		{method: "GET", path: "/v2/team/other/manifests/v1", status: http.StatusOK},
	})
}
