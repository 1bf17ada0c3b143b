package main

import (
	"bytes"
	"context"
	"encoding/json"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/berth-registry/berth/internal/miniotest"
	"github.com/berth-registry/berth/registry"
	"github.com/berth-registry/berth/storage"
	"github.com/berth-registry/berth/storage/driver/filesystem"
	"github.com/berth-registry/berth/storage/driver/s3"
)

func TestListTagNames(t *testing.T) {
	tags := listTagNames(12)
	want := []string{"0.0", "0.0-alpine", "0.0.0", "0.0.0-alpine", "0.0.0-rc.1", "0.1", "0.1-alpine", "0.1.0", "0.1.0-alpine", "0.1.0-rc.1", "0.2", "0.2-alpine"}
	if !slices.Equal(tags, want) {
		t.Fatalf("listTagNames(12) = %v", tags)
	}
	all := listTagNames(10000)
	seen := map[string]bool{}
	for _, tag := range all {
		if seen[tag] || storage.ValidateTag(tag) != nil {
			t.Fatalf("tag %q repeated or invalid", tag)
		}
		seen[tag] = true
	}
	if len(all) != 10000 {
		t.Fatalf("%d tags", len(all))
	}
}

func TestNextLink(t *testing.T) {
	for h, want := range map[string]string{
		`</v2/_catalog?last=a%2Fb&n=2>; rel="next"`: "/v2/_catalog?last=a%2Fb&n=2",
		`</v2/x/tags/list?n=1>; rel="prev"`:         "",
		``:                                          "",
		`garbage>`:                                  "",
	} {
		if got := nextLink(h); got != want {
			t.Errorf("nextLink(%q) = %q, want %q", h, got, want)
		}
	}
}

// TestListingsAgainstBerth writes a small listing data directory, serves
// it with Berth, and checks that every figure lists and pulls everything.
func TestListingsAgainstBerth(t *testing.T) {
	dir := writeListData(t)
	drv, err := filesystem.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { drv.Close() })
	checkListings(t, storage.New(drv))
}

// TestS3LoadServesListings copies the same data into a MinIO bucket with
// s3load and checks the figures against Berth on that bucket: everything
// listings read came across, and other repositories' blobs did not.
func TestS3LoadServesListings(t *testing.T) {
	srv := miniotest.Shared(t)
	bucket := srv.NewBucket(t)
	dir := writeListData(t)
	var out bytes.Buffer
	if err := run(context.Background(), []string{"s3load", "--dir", dir, "--s3", srv.Endpoint, "--bucket", bucket,
		"--s3-accesskey", miniotest.AccessKey, "--s3-secretkey", miniotest.SecretKey}, &out, &out); err != nil {
		t.Fatalf("s3load: %v\n%s", err, out.String())
	}
	// bench/tags links 3 images of 3 blobs each; gcdata's 30 repositories
	// link 90 blobs, which stay behind.
	if !strings.Contains(out.String(), "(90 blobs left out)") {
		t.Errorf("s3load said %q", out.String())
	}
	secure := false
	drv, err := s3.New(context.Background(), s3.Options{RegionEndpoint: srv.Endpoint, Bucket: bucket, ForcePathStyle: true,
		AccessKey: miniotest.AccessKey, SecretKey: miniotest.SecretKey, Secure: &secure})
	if err != nil {
		t.Fatal(err)
	}
	checkListings(t, storage.New(drv))
}

// writeListData writes a listing data directory of 30 repositories and
// bench/tags with 1,200 tags on 3 images.
func writeListData(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	var out bytes.Buffer
	if err := run(context.Background(), []string{"listdata", "--dir", dir, "--repos", "30", "--tags", "1200", "--images", "3"}, &out, &out); err != nil {
		t.Fatalf("listdata: %v\n%s", err, out.String())
	}
	return dir
}

// checkListings runs `listings` against Berth on s, serving writeListData's
// data, and checks that every figure lists and pulls everything.
func checkListings(t *testing.T, s *storage.Store) {
	t.Helper()
	srv := httptest.NewServer(registry.New(registry.Config{Store: s}))
	t.Cleanup(srv.Close)
	var out bytes.Buffer
	if err := run(context.Background(), []string{"listings", "--url", srv.URL, "--gets", "50", "--target", "berth"}, &out, &out); err != nil {
		t.Fatalf("listings: %v\n%s", err, out.String())
	}
	items := map[string]int{}
	for _, r := range results(t, out.String()) {
		if r.Target != "berth" || r.Cache != "warm" || r.Seconds <= 0 {
			t.Errorf("result %+v", r)
		}
		items[r.Test] = r.Ops
	}
	// The catalog holds gcdata's repositories and bench/tags.
	want := map[string]int{"catalog-first-100": 31, "catalog-all-1000": 31, "tags-first-100": 100, "tags-all-1000": 1200, "manifest-get-by-tag": 50}
	for test, n := range want {
		if items[test] != n {
			t.Errorf("%s: %d items, want %d\n%s", test, items[test], n, out.String())
		}
	}
}

// A registry that lists a tag twice fails that figure, and the others are
// still timed: the manifest GETs pull the tags listed before the repeat.
func TestListingsGoOnAfterAWrongFigure(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/v2/":
			w.Write([]byte("{}"))
		case r.URL.Path == "/v2/_catalog":
			w.Write([]byte(`{"repositories":["bench/tags"]}`))
		case r.URL.Path == "/v2/bench/tags/tags/list" && r.URL.Query().Get("last") == "":
			if r.URL.Query().Get("n") == "1000" {
				w.Header().Set("Link", `</v2/bench/tags/tags/list?last=b&n=1000>; rel="next"`)
			}
			w.Write([]byte(`{"tags":["a","b"]}`))
		case r.URL.Path == "/v2/bench/tags/tags/list":
			w.Write([]byte(`{"tags":["b","c"]}`)) // b again
		case strings.HasPrefix(r.URL.Path, "/v2/bench/tags/manifests/"):
			w.Header().Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
			w.Write([]byte(`{"schemaVersion":2}`))
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	var out, errOut bytes.Buffer
	err := run(context.Background(), []string{"listings", "--url", srv.URL, "--gets", "5"}, &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "tags-all-1000: b listed twice") {
		t.Fatalf("listings = %v, want the repeated tag reported", err)
	}
	items := map[string]int{}
	for _, r := range results(t, out.String()) {
		items[r.Test] = r.Ops
	}
	want := map[string]int{"catalog-first-100": 1, "catalog-all-1000": 1, "tags-first-100": 2, "manifest-get-by-tag": 2}
	if !maps.Equal(items, want) {
		t.Errorf("figures %v, want %v\n%s", items, want, out.String())
	}
}

// results parses the JSON lines of registry-bench's output.
func results(t *testing.T, out string) []Result {
	t.Helper()
	var rs []Result
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "{") {
			var r Result
			if err := json.Unmarshal([]byte(line), &r); err != nil {
				t.Fatal(err)
			}
			rs = append(rs, r)
		}
	}
	return rs
}
