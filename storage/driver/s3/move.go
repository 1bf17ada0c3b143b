package s3

import (
	"context"
	"slices"
	"strings"

	"github.com/berth-registry/berth/storage/driver"
	"github.com/minio/minio-go/v7"
	"golang.org/x/sync/errgroup"
)

// Move implements driver.Driver: a server-side copy, then a delete of src.
// S3 has no rename; a reader of dst sees the old or the new object.
func (d *Driver) Move(ctx context.Context, src, dst string) error {
	if err := driver.CheckPath("move", src); err != nil {
		return err
	}
	if err := driver.CheckPath("move", dst); err != nil {
		return err
	}
	info, err := d.core.StatObject(ctx, d.bucket, d.key(src), minio.StatObjectOptions{})
	if err != nil {
		return mapErr("move", src, err)
	}
	if err := d.copy(ctx, src, dst, info.Size); err != nil {
		return err
	}
	err = d.core.RemoveObject(ctx, d.bucket, d.key(src), minio.RemoveObjectOptions{})
	return mapErr("move", src, err)
}

// copy copies src to dst on the server: one request up to the threshold,
// else a multipart upload of copied ranges (the only way past 5 GiB).
func (d *Driver) copy(ctx context.Context, src, dst string, size int64) error {
	srcOpts := minio.CopySrcOptions{Bucket: d.bucket, Object: d.key(src)}
	if size <= d.copyMin {
		dstOpts := d.put
		_, err := d.core.CopyObject(ctx, d.bucket, d.key(src), d.bucket, d.key(dst), nil, srcOpts, dstOpts)
		return mapErr("move", src, err)
	}
	uploadID, err := d.core.NewMultipartUpload(ctx, d.bucket, d.key(dst), d.put)
	if err != nil {
		return mapErr("move", dst, err)
	}
	parts, err := d.copyParts(ctx, d.key(src), d.key(dst), uploadID, 1, size, d.copyPart)
	if err == nil {
		_, err = d.core.CompleteMultipartUpload(ctx, d.bucket, d.key(dst), uploadID, parts, d.put)
	}
	if err != nil {
		_ = d.core.AbortMultipartUpload(context.WithoutCancel(ctx), d.bucket, d.key(dst), uploadID)
		return mapErr("move", src, err)
	}
	return nil
}

// copyParts copies object srcKey, size bytes, into multipart upload
// uploadID of dstKey as parts first, first+1, …, each of at most partSize
// bytes (or a little more, where that keeps every part but the last at
// least the 5 MiB S3 requires), the sizes evened out.
func (d *Driver) copyParts(ctx context.Context, srcKey, dstKey, uploadID string, first int, size, partSize int64) ([]minio.CompletePart, error) {
	n := (size + partSize - 1) / partSize
	if n > 1 && (size+n-1)/n < minChunkSize {
		n = size / minChunkSize
	}
	each := (size + n - 1) / n
	n = (size + each - 1) / each
	parts := make([]minio.CompletePart, n)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(d.copyConc)
	for i := range n {
		start := i * each
		length := min(each, size-start)
		g.Go(func() error {
			p, err := d.core.CopyObjectPart(gctx, d.bucket, srcKey, d.bucket, dstKey, uploadID, first+int(i), start, length, nil)
			parts[i] = minio.CompletePart{PartNumber: first + int(i), ETag: p.ETag}
			return err
		})
	}
	return parts, g.Wait()
}

// Delete implements driver.Driver: the object at p and every object under
// it, in batches, with the multipart uploads of unfinished files among them.
func (d *Driver) Delete(ctx context.Context, p string) error {
	if err := driver.CheckPath("delete", p); err != nil {
		return err
	}
	key := d.key(p)
	var keys []string
	pending := map[string]bool{} // files being written: their multipart uploads go too
	startAfter, token := "", ""
	for {
		// One listing finds the file and the tree: keys with the prefix
		// "key", of which "key" and "key/…" are ours.
		res, err := d.core.ListObjectsV2(d.bucket, key, startAfter, token, "", listMax)
		if err != nil {
			return mapErr("delete", p, err)
		}
		for _, o := range res.Contents {
			if o.Key != key && !strings.HasPrefix(o.Key, key+"/") && !isStateOf(o.Key, key) {
				continue
			}
			keys = append(keys, o.Key)
			if k, ok := writtenFile(o.Key); ok {
				pending[k] = true
			}
		}
		if !res.IsTruncated || res.NextContinuationToken == "" {
			break
		}
		token = res.NextContinuationToken
	}
	if len(keys) == 0 {
		return &driver.PathError{Op: "delete", Path: p, Err: driver.ErrNotFound}
	}
	for k := range pending {
		if err := d.abortUploads(ctx, k, ""); err != nil {
			return mapErr("delete", p, err)
		}
	}
	for batch := range slices.Chunk(keys, listMax) {
		objs := make(chan minio.ObjectInfo, len(batch))
		for _, k := range batch {
			objs <- minio.ObjectInfo{Key: k}
		}
		close(objs)
		for rerr := range d.core.RemoveObjects(ctx, d.bucket, objs, minio.RemoveObjectsOptions{}) {
			if code := minio.ToErrorResponse(rerr.Err).Code; code != "NoSuchKey" {
				return mapErr("delete", p, rerr.Err)
			}
		}
	}
	return nil
}

// abortUploads aborts the multipart uploads of key except keep.
func (d *Driver) abortUploads(ctx context.Context, key, keep string) error {
	uploads, err := d.uploads(ctx, key)
	if err != nil {
		return err
	}
	for _, u := range uploads {
		if u.UploadID == keep {
			continue
		}
		if err := d.core.AbortMultipartUpload(ctx, d.bucket, key, u.UploadID); err != nil && minio.ToErrorResponse(err).Code != "NoSuchUpload" {
			return err
		}
	}
	return nil
}

// uploads lists the multipart uploads in progress for exactly key, oldest
// first.
func (d *Driver) uploads(ctx context.Context, key string) ([]minio.ObjectMultipartInfo, error) {
	var out []minio.ObjectMultipartInfo
	keyMarker, idMarker := "", ""
	for {
		res, err := d.core.ListMultipartUploads(ctx, d.bucket, key, keyMarker, idMarker, "", listMax)
		if err != nil {
			return nil, err
		}
		for _, u := range res.Uploads {
			if u.Key == key {
				out = append(out, u)
			}
		}
		if !res.IsTruncated {
			break
		}
		keyMarker, idMarker = res.NextKeyMarker, res.NextUploadIDMarker
	}
	slices.SortFunc(out, func(a, b minio.ObjectMultipartInfo) int { return a.Initiated.Compare(b.Initiated) })
	return out, nil
}
