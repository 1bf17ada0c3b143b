package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/minio/minio-go/v7"
)

// s3LoadCmd copies a registry data directory (listdata's or gcdata's) into
// a bucket at Distribution's keys with no root directory, so that both
// registries can serve it from S3. Of the blobs, only those that the
// repositories named by --blobs-of link are copied: listings read no blob,
// and the manifest GETs of `listings` read only bench/tags's.
func s3LoadCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fset := flag.NewFlagSet("s3load", flag.ContinueOnError)
	fset.SetOutput(stderr)
	dir := fset.String("dir", "", "data directory (the filesystem registry's rootdirectory)")
	endpoint := fset.String("s3", "", "S3 endpoint, http://host:port")
	bucket := fset.String("bucket", "", "bucket to fill (created if missing)")
	blobsOf := fset.String("blobs-of", listTagsRepo, "comma-separated repositories whose linked blobs are copied; * for all blobs")
	workers := fset.Int("workers", 32, "objects written at once")
	key := fset.String("s3-accesskey", os.Getenv("REGISTRY_BENCH_S3_ACCESSKEY"), "S3 access key (env REGISTRY_BENCH_S3_ACCESSKEY)")
	secret := fset.String("s3-secretkey", os.Getenv("REGISTRY_BENCH_S3_SECRETKEY"), "S3 secret key (env REGISTRY_BENCH_S3_SECRETKEY)")
	if err := fset.Parse(args); err != nil {
		return err
	}
	if *dir == "" || *endpoint == "" || *bucket == "" || *workers < 1 || fset.NArg() > 0 {
		return errors.New("s3load needs --dir, --s3 and --bucket, and no arguments")
	}
	st, err := newS3Store(*endpoint, *key, *secret)
	if err != nil {
		return err
	}
	if ok, err := st.c.BucketExists(ctx, *bucket); err != nil {
		return fmt.Errorf("s3: %w", err)
	} else if !ok {
		if err := st.c.MakeBucket(ctx, *bucket, minio.MakeBucketOptions{Region: "us-east-1"}); err != nil {
			return fmt.Errorf("s3: %w", err)
		}
	}
	root := filepath.Join(*dir, "docker", "registry", "v2")
	keep, err := linkedBlobs(root, *blobsOf)
	if err != nil {
		return err
	}

	t0 := time.Now()
	files := make(chan string, *workers)
	var copied, skipped atomic.Int64
	var wg sync.WaitGroup
	errs := make([]error, *workers)
	for w := range *workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for p := range files {
				if errs[w] != nil {
					continue
				}
				errs[w] = putFile(ctx, st.c, *bucket, *dir, p)
				copied.Add(1)
			}
		}()
	}
	walkErr := filepath.WalkDir(root, func(p string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		if rel, _ := filepath.Rel(root, p); strings.HasPrefix(filepath.ToSlash(rel), "blobs/") && keep != nil {
			// blobs/<alg>/<hh>/<hex>/data
			if parts := strings.Split(filepath.ToSlash(rel), "/"); len(parts) != 5 || !keep[parts[3]] {
				skipped.Add(1)
				return nil
			}
		}
		select {
		case files <- p:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})
	close(files)
	wg.Wait()
	if err := errors.Join(append(errs, walkErr)...); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "copied %d objects into %s (%d blobs left out) in %.1f s\n",
		copied.Load(), *bucket, skipped.Load(), time.Since(t0).Seconds())
	return nil
}

// linkedBlobs returns the hex digests of the blobs the repositories in
// list (comma-separated) link as layers or manifests, or nil for "*"
// (every blob).
func linkedBlobs(root, list string) (map[string]bool, error) {
	if list == "*" {
		return nil, nil
	}
	keep := map[string]bool{}
	for _, repo := range strings.Split(list, ",") {
		if repo == "" {
			continue
		}
		for _, sub := range []string{"_layers", "_manifests/revisions"} {
			entries, err := os.ReadDir(filepath.Join(root, "repositories", filepath.FromSlash(repo), filepath.FromSlash(sub), "sha256"))
			if err != nil {
				return nil, fmt.Errorf("--blobs-of %s: %w", repo, err)
			}
			for _, e := range entries {
				keep[e.Name()] = true
			}
		}
	}
	return keep, nil
}

// putFile writes file p (under dir) into bucket at its path relative to
// dir.
func putFile(ctx context.Context, c *minio.Client, bucket, dir, p string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	rel, err := filepath.Rel(dir, p)
	if err != nil {
		return err
	}
	_, err = c.PutObject(ctx, bucket, filepath.ToSlash(rel), f, fi.Size(), minio.PutObjectOptions{DisableContentSha256: true})
	if err != nil {
		return fmt.Errorf("s3: writing %s: %w", rel, err)
	}
	return nil
}
