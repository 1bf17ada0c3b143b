package main

import (
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
)

// s3Counter is a reverse proxy in front of the store that counts the S3
// requests a registry makes, by operation, and the bytes of their bodies.
// Requests keep their Host header, so version 4 signatures made for the
// proxy's address stay valid. It costs a copy of every byte: counts come
// from their own run, never from a timed one.
type s3Counter struct {
	url string // what the registry is given as its endpoint
	srv *http.Server

	mu     sync.Mutex
	counts map[string]int
	sent   int64 // request body bytes, to the store
	recv   int64 // response body bytes, from the store
}

// countingBody counts what is read through it into *n.
type countingBody struct {
	io.ReadCloser
	c *s3Counter
}

func (b countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.c.mu.Lock()
	b.c.sent += int64(n)
	b.c.mu.Unlock()
	return n, err
}

// countingWriter counts the response bytes written through it.
type countingWriter struct {
	http.ResponseWriter
	c *s3Counter
}

func (w countingWriter) Write(p []byte) (int, error) {
	n, err := w.ResponseWriter.Write(p)
	w.c.mu.Lock()
	w.c.recv += int64(n)
	w.c.mu.Unlock()
	return n, err
}

func (w countingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func startS3Counter(endpoint string) (*s3Counter, error) {
	target, err := url.Parse(endpoint)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	c := &s3Counter{url: "http://" + ln.Addr().String(), counts: map[string]int{}}
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.FlushInterval = -1
	c.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		op := s3Operation(r)
		c.mu.Lock()
		c.counts[op]++
		c.mu.Unlock()
		if r.Body != nil && r.Body != http.NoBody {
			r.Body = countingBody{r.Body, c}
		}
		proxy.ServeHTTP(countingWriter{w, c}, r)
	})}
	go func() { _ = c.srv.Serve(ln) }()
	return c, nil
}

func (c *s3Counter) close() { _ = c.srv.Close() }

// take returns the counts and bytes since the last take and starts again
// from zero.
func (c *s3Counter) take() (counts map[string]int, sent, recv int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	counts, sent, recv = c.counts, c.sent, c.recv
	c.counts, c.sent, c.recv = map[string]int{}, 0, 0
	return counts, sent, recv
}

// s3Operation names the S3 API operation of a path-style request.
func s3Operation(r *http.Request) string {
	q := r.URL.Query()
	has := func(k string) bool { _, ok := q[k]; return ok }
	object := strings.Contains(strings.Trim(r.URL.Path, "/"), "/")
	switch r.Method {
	case http.MethodGet:
		switch {
		case has("uploadId"):
			return "ListParts"
		case has("uploads"):
			return "ListMultipartUploads"
		case has("list-type"):
			return "ListObjectsV2"
		case has("location"):
			return "GetBucketLocation"
		case !object:
			return "ListObjects"
		}
		return "GetObject"
	case http.MethodHead:
		if !object {
			return "HeadBucket"
		}
		return "HeadObject"
	case http.MethodPut:
		copySrc := r.Header.Get("X-Amz-Copy-Source") != ""
		switch {
		case has("partNumber") && copySrc:
			return "UploadPartCopy"
		case has("partNumber"):
			return "UploadPart"
		case copySrc:
			return "CopyObject"
		case !object:
			return "CreateBucket"
		}
		return "PutObject"
	case http.MethodPost:
		switch {
		case has("uploads"):
			return "CreateMultipartUpload"
		case has("uploadId"):
			return "CompleteMultipartUpload"
		case has("delete"):
			return "DeleteObjects"
		}
	case http.MethodDelete:
		if has("uploadId") {
			return "AbortMultipartUpload"
		}
		return "DeleteObject"
	}
	return r.Method + " other"
}

// countRow is the S3 requests of one test on one registry, per operation of
// the test (a push, a pull, a manifest PUT or GET).
type countRow struct {
	Target string         `json:"target"`
	Test   string         `json:"test"`
	Ops    int            `json:"ops"`
	Counts map[string]int `json:"s3_requests"`
	// Sent and Recv are the bytes of request and response bodies: what
	// the registry sent to the store and read from it.
	Sent int64 `json:"bytes_to_s3"`
	Recv int64 `json:"bytes_from_s3"`
}

func (r countRow) total() int {
	n := 0
	for _, v := range r.Counts {
		n += v
	}
	return n
}

// writeCounts prints the S3 requests per registry operation, one line per
// test and registry.
func writeCounts(w io.Writer, rows []countRow) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "test\tregistry\toperations\tS3 requests per operation\tMB to | from S3 per operation\tof which")
	for _, r := range rows {
		ops := max(r.Ops, 1)
		var parts []string
		for _, k := range slices.Sorted(maps.Keys(r.Counts)) {
			parts = append(parts, fmt.Sprintf("%s %s", k, fmtNum(float64(r.Counts[k])/float64(ops))))
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s | %s\t%s\n", r.Test, r.Target, r.Ops, fmtNum(float64(r.total())/float64(ops)),
			fmtNum(float64(r.Sent)/1e6/float64(ops)), fmtNum(float64(r.Recv)/1e6/float64(ops)), strings.Join(parts, ", "))
	}
	tw.Flush()
}
