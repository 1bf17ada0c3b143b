package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// s3Store is the S3-compatible store (MinIO) both registries of a
// comparison keep their data in, each in its own bucket.
type s3Store struct {
	endpoint             string // http(s)://host:port
	accessKey, secretKey string
	c                    *minio.Client
	// limitObject is what limit-s3put last wrote, which limit-s3get reads.
	limitObject *Blob
}

// The buckets of a comparison: one per registry, and one for the store's
// own limits.
const (
	berthBucket        = "bench-berth"
	distributionBucket = "bench-distribution"
	limitBucket        = "bench-limit"
)

func newS3Store(endpoint, accessKey, secretKey string) (*s3Store, error) {
	u, err := url.Parse(endpoint)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return nil, fmt.Errorf("--s3 %q: want http://host:port", endpoint)
	}
	c, err := minio.New(u.Host, &minio.Options{
		Creds:  credentials.NewStaticV4(accessKey, secretKey, ""),
		Secure: u.Scheme == "https", Region: "us-east-1", BucketLookup: minio.BucketLookupPath,
	})
	if err != nil {
		return nil, err
	}
	return &s3Store{endpoint: endpoint, accessKey: accessKey, secretKey: secretKey, c: c}, nil
}

// emptyBucket creates bucket, or removes every object and unfinished
// multipart upload in it: each registry starts from nothing.
func (s *s3Store) emptyBucket(ctx context.Context, bucket string) error {
	ok, err := s.c.BucketExists(ctx, bucket)
	if err != nil {
		return fmt.Errorf("s3: %w", err)
	}
	if !ok {
		return s.c.MakeBucket(ctx, bucket, minio.MakeBucketOptions{Region: "us-east-1"})
	}
	for u := range s.c.ListIncompleteUploads(ctx, bucket, "", true) {
		if u.Err != nil {
			return u.Err
		}
		if err := s.c.RemoveIncompleteUpload(ctx, bucket, u.Key); err != nil {
			return err
		}
	}
	objs := s.c.ListObjects(ctx, bucket, minio.ListObjectsOptions{Recursive: true})
	var errs []error
	for e := range s.c.RemoveObjects(ctx, bucket, objs, minio.RemoveObjectsOptions{}) {
		errs = append(errs, e.Err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("s3: emptying %s: %w", bucket, err)
	}
	return nil
}

// removeBlob deletes blob dg's data object from a registry's bucket (at
// Distribution's key, with no root directory).
func (s *s3Store) removeBlob(ctx context.Context, bucket, dg string) error {
	hexd := strings.TrimPrefix(dg, "sha256:")
	return s.c.RemoveObject(ctx, bucket, "docker/registry/v2/blobs/sha256/"+hexd[:2]+"/"+hexd+"/data", minio.RemoveObjectOptions{})
}

// limitPut streams data into one object of the limit bucket with
// minio-go's default multipart upload: what a registry's push through the
// store can reach at most.
func (s *s3Store) limitPut(ctx context.Context, data *Blob) (Result, error) {
	start := time.Now()
	_, err := s.c.PutObject(ctx, limitBucket, "limit", data.Reader(), data.Size, minio.PutObjectOptions{})
	d := time.Since(start)
	if err != nil {
		return Result{}, err
	}
	s.limitObject = data
	return Result{Unit: "MB/s", Value: throughput(data.Size, d), Bytes: data.Size, Seconds: d.Seconds()}, nil
}

// limitGet reads the object of limitPut (writing it first, untimed, when
// there is none of size bytes) and hashes it, as a pulling client does:
// what a pull through a registry can reach at most.
func (s *s3Store) limitGet(ctx context.Context, data *Blob) (Result, error) {
	if s.limitObject == nil || s.limitObject.Size != data.Size {
		if _, err := s.limitPut(ctx, data); err != nil {
			return Result{}, err
		}
	}
	start := time.Now()
	obj, err := s.c.GetObject(ctx, limitBucket, "limit", minio.GetObjectOptions{})
	if err != nil {
		return Result{}, err
	}
	defer obj.Close()
	h := sha256.New()
	n, err := io.CopyBuffer(h, obj, make([]byte, 256<<10))
	d := time.Since(start)
	if err != nil {
		return Result{}, err
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); n != s.limitObject.Size || got != s.limitObject.Digest() {
		return Result{}, errors.New("limit-s3get read other bytes than limit-s3put wrote")
	}
	return Result{Unit: "MB/s", Value: throughput(n, d), Bytes: n, Seconds: d.Seconds()}, nil
}
