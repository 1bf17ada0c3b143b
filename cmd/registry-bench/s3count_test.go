package main

import (
	"bytes"
	"context"
	"io"
	"maps"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/minio/minio-go/v7"

	"github.com/berth-registry/berth/internal/miniotest"
)

func TestS3Operation(t *testing.T) {
	for _, c := range []struct {
		method, target string
		copySrc        bool
		want           string
	}{
		{"GET", "/b/k/data", false, "GetObject"},
		{"GET", "/b/?list-type=2&prefix=k%2F&delimiter=%2F", false, "ListObjectsV2"},
		{"GET", "/b/?uploads&prefix=k", false, "ListMultipartUploads"},
		{"GET", "/b/k?uploadId=u&part-number-marker=0", false, "ListParts"},
		{"GET", "/b/?location=", false, "GetBucketLocation"},
		{"HEAD", "/b/k", false, "HeadObject"},
		{"HEAD", "/b/", false, "HeadBucket"},
		{"PUT", "/b/k", false, "PutObject"},
		{"PUT", "/b/k", true, "CopyObject"},
		{"PUT", "/b/k?partNumber=2&uploadId=u", false, "UploadPart"},
		{"PUT", "/b/k?partNumber=2&uploadId=u", true, "UploadPartCopy"},
		{"PUT", "/b", false, "CreateBucket"},
		{"POST", "/b/k?uploads", false, "CreateMultipartUpload"},
		{"POST", "/b/k?uploadId=u", false, "CompleteMultipartUpload"},
		{"POST", "/b/?delete", false, "DeleteObjects"},
		{"DELETE", "/b/k?uploadId=u", false, "AbortMultipartUpload"},
		{"DELETE", "/b/k", false, "DeleteObject"},
	} {
		r := httptest.NewRequest(c.method, c.target, nil)
		if c.copySrc {
			r.Header.Set("X-Amz-Copy-Source", "/b/src")
		}
		if got := s3Operation(r); got != c.want {
			t.Errorf("%s %s (copy %v) = %s, want %s", c.method, c.target, c.copySrc, got, c.want)
		}
	}
}

// Requests signed for the proxy's address reach the store intact, and
// each is counted once under its operation.
func TestS3CounterProxiesSignedRequests(t *testing.T) {
	srv := miniotest.Shared(t)
	bucket := srv.NewBucket(t)
	c, err := startS3Counter(srv.Endpoint)
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	st, err := newS3Store(c.url, miniotest.AccessKey, miniotest.SecretKey)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	body := bytes.Repeat([]byte("berth"), 1000)
	if _, err := st.c.PutObject(ctx, bucket, "a/data", bytes.NewReader(body), int64(len(body)), minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	obj, err := st.c.GetObject(ctx, bucket, "a/data", minio.GetObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(obj)
	obj.Close()
	if err != nil || !bytes.Equal(got, body) {
		t.Fatalf("read back %d bytes (%v), want the %d written", len(got), err, len(body))
	}
	if _, err := st.c.StatObject(ctx, bucket, "a/data", minio.StatObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := st.c.RemoveObject(ctx, bucket, "a/data", minio.RemoveObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	counts, sent, recv := c.take()
	// What crosses the wire: the body, and the chunk signatures minio-go
	// adds to a PUT over plain HTTP.
	if n := int64(len(body)); sent < n || sent > n+1000 || recv != n {
		t.Errorf("%d bytes sent and %d received, want %d each (and signatures)", sent, recv, n)
	}
	// minio-go asks for the bucket's region before its first request.
	delete(counts, "GetBucketLocation")
	want := map[string]int{"PutObject": 1, "GetObject": 1, "HeadObject": 1, "DeleteObject": 1}
	if !maps.Equal(counts, want) {
		t.Errorf("counts %v, want %v", counts, want)
	}
	if m, s, r := c.take(); len(m) != 0 || s != 0 || r != 0 {
		t.Error("take did not start the counts again")
	}
	var out strings.Builder
	writeCounts(&out, []countRow{{Target: "berth", Test: "push-mono", Ops: 2, Counts: want, Sent: 3e6, Recv: 1e6}})
	if !strings.Contains(out.String(), "push-mono  berth     2           2.00                       1.50 | 0.50") {
		t.Errorf("table:\n%s", out.String())
	}
}
