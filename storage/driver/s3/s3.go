// Package s3 is a storage driver on an S3-compatible object store (AWS S3,
// MinIO, Ceph RGW, …), with CNCF Distribution's object layout: the file
// "/docker/registry/v2/…" is the object "<rootdirectory>/docker/registry/v2/…"
// of the bucket, so Distribution and Berth serve each other's buckets.
//
// It uses minio-go: one module that speaks the S3 API to any of these
// stores, with the low-level multipart calls a resumable writer needs,
// presigned URLs and the AWS credential chain; the AWS SDK would bring a
// dozen modules for the same few calls.
//
// Directories are implicit, as in every S3 driver: a directory exists while
// some object's key has its prefix. A file being written (see writer.go) is a
// multipart upload plus a small object holding what is not yet a whole
// part; it becomes an object only at Commit.
package s3

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/minio/minio-go/v7/pkg/encrypt"

	"github.com/berth-registry/berth/storage/driver"
)

// Options are CNCF Distribution's storage.s3 keys, with its meanings.
type Options struct {
	Region         string // the bucket's region; default us-east-1
	RegionEndpoint string // the S3 endpoint, e.g. http://minio:9000; default AWS's
	ForcePathStyle bool   // address the bucket as a path, not a host name
	Bucket         string
	AccessKey      string // with SecretKey; both empty: the AWS credential chain
	SecretKey      string
	SessionToken   string
	RootDirectory  string // a prefix for every key
	Secure         *bool  // https to an endpoint given without a scheme; default true
	SkipVerify     bool   // do not verify the endpoint's TLS certificate
	// ChunkSize is the size of a multipart upload's parts: what a writer
	// holds in memory. Default 10 MiB, at least 5 MiB.
	ChunkSize int64
	// Moves of files larger than MultipartCopyThresholdSize copy parts of
	// MultipartCopyChunkSize, MultipartCopyMaxConcurrency at a time.
	MultipartCopyChunkSize      int64
	MultipartCopyMaxConcurrency int
	MultipartCopyThresholdSize  int64
	Encrypt                     bool   // server-side encryption
	KeyID                       string // with Encrypt: the KMS key (SSE-KMS); empty: SSE-S3
	StorageClass                string // default STANDARD; NONE: the bucket's default
	ObjectACL                   string // e.g. private (the default), bucket-owner-full-control
	UserAgent                   string
	// RedirectEndpoint, when set, is the endpoint presigned redirect URLs
	// name instead of RegionEndpoint: the address clients reach the store
	// at when the registry reaches it at another.
	RedirectEndpoint string
}

const (
	minChunkSize     = 5 << 20
	defaultChunkSize = 10 << 20
	maxCopyPart      = 5 << 30
	listMax          = 1000
	defaultRegion    = "us-east-1"
	redirectExpiry   = 20 * time.Minute
)

// Driver is the S3 driver. Create it with New.
type Driver struct {
	core     minio.Core
	presign  *minio.Client
	bucket   string
	root     string // key prefix, no leading or trailing slash
	chunk    int64
	copyPart int64
	copyConc int
	copyMin  int64
	put      minio.PutObjectOptions
	bufs     sync.Pool // writers' buffers of a chunk (*[]byte)
}

var (
	_ driver.Driver     = (*Driver)(nil)
	_ driver.FileStater = (*Driver)(nil)
)

// New returns a driver for the bucket opts names. It checks that the bucket
// can be reached.
func New(ctx context.Context, opts Options) (*Driver, error) {
	if opts.Bucket == "" {
		return nil, errors.New("s3: bucket is required")
	}
	chunk := opts.ChunkSize
	if chunk == 0 {
		chunk = defaultChunkSize
	}
	if chunk < minChunkSize || chunk > maxCopyPart {
		return nil, fmt.Errorf("s3: chunksize %d is outside [%d, %d]", chunk, minChunkSize, int64(maxCopyPart))
	}
	client, err := newClient(opts, opts.RegionEndpoint)
	if err != nil {
		return nil, err
	}
	presign := client
	if opts.RedirectEndpoint != "" {
		if presign, err = newClient(opts, opts.RedirectEndpoint); err != nil {
			return nil, err
		}
	}
	d := &Driver{
		core:     minio.Core{Client: client},
		presign:  presign,
		bucket:   opts.Bucket,
		root:     strings.Trim(opts.RootDirectory, "/"),
		chunk:    chunk,
		copyPart: orDefault(opts.MultipartCopyChunkSize, 32<<20),
		copyConc: int(orDefault(int64(opts.MultipartCopyMaxConcurrency), 100)),
		copyMin:  orDefault(opts.MultipartCopyThresholdSize, 32<<20),
	}
	if d.copyPart < minChunkSize || d.copyPart > maxCopyPart {
		return nil, fmt.Errorf("s3: multipartcopychunksize %d is outside [%d, %d]", d.copyPart, minChunkSize, int64(maxCopyPart))
	}
	d.copyMin = min(d.copyMin, maxCopyPart)
	d.put.ContentType = "application/octet-stream"
	switch sc := strings.ToUpper(opts.StorageClass); sc {
	case "", "STANDARD":
		d.put.StorageClass = "STANDARD"
	case "NONE":
	default:
		d.put.StorageClass = sc
	}
	if opts.Encrypt {
		if opts.KeyID != "" {
			sse, err := encrypt.NewSSEKMS(opts.KeyID, nil)
			if err != nil {
				return nil, fmt.Errorf("s3: keyid: %w", err)
			}
			d.put.ServerSideEncryption = sse
		} else {
			d.put.ServerSideEncryption = encrypt.NewSSE()
		}
	}
	if opts.ObjectACL != "" && opts.ObjectACL != "private" {
		d.put.UserMetadata = map[string]string{"x-amz-acl": opts.ObjectACL}
	}
	if opts.UserAgent != "" {
		client.SetAppInfo(opts.UserAgent, "")
	}
	ok, err := client.BucketExists(ctx, d.bucket)
	if err != nil {
		return nil, fmt.Errorf("s3: reaching bucket %s: %w", d.bucket, err)
	}
	if !ok {
		return nil, fmt.Errorf("s3: bucket %s does not exist", d.bucket)
	}
	return d, nil
}

func orDefault(v, def int64) int64 {
	if v <= 0 {
		return def
	}
	return v
}

func newClient(opts Options, endpoint string) (*minio.Client, error) {
	secure := opts.Secure == nil || *opts.Secure
	host := "s3.amazonaws.com"
	if opts.Region != "" && opts.Region != defaultRegion {
		host = "s3." + opts.Region + ".amazonaws.com"
	}
	if endpoint != "" {
		host = endpoint
		if strings.Contains(endpoint, "://") {
			u, err := url.Parse(endpoint)
			if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
				return nil, fmt.Errorf("s3: endpoint %q is not an http(s) URL", endpoint)
			}
			host, secure = u.Host, u.Scheme == "https"
		}
	}
	var creds *credentials.Credentials
	if opts.AccessKey != "" || opts.SecretKey != "" {
		creds = credentials.NewStaticV4(opts.AccessKey, opts.SecretKey, opts.SessionToken)
	} else {
		// The AWS chain: environment, shared credentials file, then the
		// instance's or task's role (IMDS, ECS, web identity).
		creds = credentials.NewChainCredentials([]credentials.Provider{
			&credentials.EnvAWS{},
			&credentials.FileAWSCredentials{},
			&credentials.IAM{Client: &http.Client{Transport: http.DefaultTransport}},
		})
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 256
	if opts.SkipVerify {
		tr.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // the operator asked for it
	}
	lookup := minio.BucketLookupAuto
	if opts.ForcePathStyle {
		lookup = minio.BucketLookupPath
	}
	region := opts.Region
	if region == "" {
		region = defaultRegion
	}
	return minio.New(host, &minio.Options{
		Creds: creds, Secure: secure, Transport: tr, Region: region, BucketLookup: lookup,
	})
}

// key is the object key of driver path p ("" for the bucket's root).
func (d *Driver) key(p string) string {
	return strings.TrimLeft(d.root+p, "/")
}

// dirPrefix is the key prefix of the files under directory p.
func (d *Driver) dirPrefix(p string) string {
	if k := d.key(p); k != "" {
		return k + "/"
	}
	return ""
}

// mapErr turns the store's not-found answers into driver.ErrNotFound.
func mapErr(op, p string, err error) error {
	if err == nil {
		return nil
	}
	resp := minio.ToErrorResponse(err)
	switch {
	case resp.Code == "NoSuchKey" || resp.Code == "NoSuchUpload" || resp.StatusCode == http.StatusNotFound && resp.Code != "NoSuchBucket":
		err = driver.ErrNotFound
	case resp.Code == "XMinioStorageFull" || resp.Code == "QuotaExceeded":
		err = fmt.Errorf("%w: %w", driver.ErrStorageFull, err)
	}
	return &driver.PathError{Op: op, Path: p, Err: err}
}

// GetContent implements driver.Driver.
func (d *Driver) GetContent(ctx context.Context, p string) ([]byte, error) {
	if err := driver.CheckPath("get", p); err != nil {
		return nil, err
	}
	body, _, _, err := d.core.GetObject(ctx, d.bucket, d.key(p), minio.GetObjectOptions{})
	if err != nil {
		return nil, mapErr("get", p, err)
	}
	defer body.Close()
	b, err := io.ReadAll(body)
	return b, mapErr("get", p, err)
}

// PutContent implements driver.Driver: one PUT, which S3 makes atomic.
func (d *Driver) PutContent(ctx context.Context, p string, content []byte) error {
	if err := driver.CheckPath("put", p); err != nil {
		return err
	}
	return d.putObject(ctx, "put", p, d.key(p), content, nil)
}

func (d *Driver) putObject(ctx context.Context, op, p, key string, content []byte, meta map[string]string) error {
	opts := d.put
	if meta != nil {
		opts.UserMetadata = mergeMeta(opts.UserMetadata, meta)
	}
	_, err := d.core.PutObject(ctx, d.bucket, key, bytes.NewReader(content), int64(len(content)), "", "", opts)
	return mapErr(op, p, err)
}

func mergeMeta(a, b map[string]string) map[string]string {
	out := make(map[string]string, len(a)+len(b))
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		out[k] = v
	}
	return out
}

// Reader implements driver.Driver with a ranged GET.
func (d *Driver) Reader(ctx context.Context, p string, offset int64) (io.ReadCloser, error) {
	if err := driver.CheckPath("read", p); err != nil {
		return nil, err
	}
	var opts minio.GetObjectOptions
	if offset > 0 {
		if err := opts.SetRange(offset, 0); err != nil {
			return nil, err
		}
	}
	body, _, _, err := d.core.GetObject(ctx, d.bucket, d.key(p), opts)
	if err != nil {
		if minio.ToErrorResponse(err).Code == "InvalidRange" {
			// At or past the end: empty, if the file exists.
			if _, serr := d.Stat(ctx, p); serr != nil {
				return nil, serr
			}
			return io.NopCloser(strings.NewReader("")), nil
		}
		return nil, mapErr("read", p, err)
	}
	return body, nil
}

// Stat implements driver.Driver: a HEAD for a file and, when there is none,
// a one-key listing for a directory.
func (d *Driver) Stat(ctx context.Context, p string) (driver.FileInfo, error) {
	if err := driver.CheckPath("stat", p); err != nil {
		return driver.FileInfo{}, err
	}
	if p == "/" {
		return driver.FileInfo{Path: p, IsDir: true}, nil
	}
	fi, err := d.StatFile(ctx, p)
	if !errors.Is(err, driver.ErrNotFound) {
		return fi, err
	}
	res, err := d.core.ListObjectsV2(d.bucket, d.dirPrefix(p), "", "", "/", 1)
	if err != nil {
		return driver.FileInfo{}, mapErr("stat", p, err)
	}
	if len(res.Contents) == 0 && len(res.CommonPrefixes) == 0 {
		return driver.FileInfo{}, &driver.PathError{Op: "stat", Path: p, Err: driver.ErrNotFound}
	}
	return driver.FileInfo{Path: p, IsDir: true}, nil
}

// StatFile implements driver.FileStater with one HEAD.
func (d *Driver) StatFile(ctx context.Context, p string) (driver.FileInfo, error) {
	if err := driver.CheckPath("stat", p); err != nil {
		return driver.FileInfo{}, err
	}
	if p == "/" {
		return driver.FileInfo{}, &driver.PathError{Op: "stat", Path: p, Err: driver.ErrNotFound}
	}
	info, err := d.core.StatObject(ctx, d.bucket, d.key(p), minio.StatObjectOptions{})
	if err != nil {
		return driver.FileInfo{}, mapErr("stat", p, err)
	}
	return driver.FileInfo{Path: p, Size: info.Size, ModTime: info.LastModified}, nil
}

// List implements driver.Driver.
func (d *Driver) List(ctx context.Context, p string) ([]string, error) {
	entries, err := d.ListPage(ctx, p, "", 0)
	if err != nil {
		return nil, err
	}
	out := make([]string, len(entries))
	for i, e := range entries {
		out[i] = path.Join(p, e.Name)
	}
	return out, nil
}

// ListPage implements driver.Driver with delimited listings, a request per
// thousand entries.
func (d *Driver) ListPage(ctx context.Context, p, after string, limit int) ([]driver.Entry, error) {
	if err := driver.CheckPath("list", p); err != nil {
		return nil, err
	}
	prefix := d.dirPrefix(p)
	var out []driver.Entry
	token, startAfter := "", ""
	if after != "" {
		startAfter = prefix + after
	}
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		max := listMax
		if limit > 0 {
			max = min(listMax, limit-len(out)+1) // +1: an internal object may be among them
		}
		res, err := d.core.ListObjectsV2(d.bucket, prefix, startAfter, token, "/", max)
		if err != nil {
			return nil, mapErr("list", p, err)
		}
		page := make([]driver.Entry, 0, len(res.Contents)+len(res.CommonPrefixes))
		for _, o := range res.Contents {
			name := strings.TrimPrefix(o.Key, prefix)
			if name == "" || isInternal(name) {
				continue // a directory marker some tools write, or a writer's own object
			}
			page = append(page, driver.Entry{Name: name})
		}
		for _, cp := range res.CommonPrefixes {
			page = append(page, driver.Entry{Name: strings.TrimSuffix(strings.TrimPrefix(cp.Prefix, prefix), "/"), IsDir: true})
		}
		slices.SortFunc(page, func(a, b driver.Entry) int { return strings.Compare(a.Key(), b.Key()) })
		for _, e := range page {
			// A directory whose files come after the start point is rolled
			// up even when its own key does not.
			if e.Key() > after {
				out = append(out, e)
			}
		}
		if limit > 0 && len(out) >= limit {
			out = out[:limit]
			break
		}
		if !res.IsTruncated || res.NextContinuationToken == "" {
			break
		}
		token, startAfter = res.NextContinuationToken, ""
	}
	if len(out) == 0 && p != "/" && after == "" {
		return nil, &driver.PathError{Op: "list", Path: p, Err: driver.ErrNotFound}
	}
	return out, nil
}

// RedirectURL implements driver.Redirector: a presigned GET of the file,
// valid for 20 minutes.
func (d *Driver) RedirectURL(ctx context.Context, p string) (string, error) {
	if err := driver.CheckPath("redirect", p); err != nil {
		return "", err
	}
	u, err := d.presign.PresignedGetObject(ctx, d.bucket, d.key(p), redirectExpiry, nil)
	if err != nil {
		return "", mapErr("redirect", p, err)
	}
	return u.String(), nil
}
