package proxy

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/storage"
)

// StatBlob returns the size of blob dg of mirrored repository local: from
// storage when cached, else from a HEAD to the upstream (nothing is
// stored). It returns storage.ErrBlobUnknown when neither has it.
func (p *Proxy) StatBlob(ctx context.Context, local string, dg digest.Digest) (int64, error) {
	size, err := p.store.StatBlob(ctx, local, dg)
	u, remoteName := p.lookup(local)
	if u == nil || !errors.Is(err, storage.ErrBlobUnknown) {
		return size, err
	}
	resp, err := p.blobRequest(ctx, u, remoteName, http.MethodHead, dg)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	if resp.ContentLength < 0 {
		return 0, ErrUpstream
	}
	return resp.ContentLength, nil
}

// OpenBlob returns blob dg of mirrored repository local from offset 0,
// and its size (-1 when the upstream does not say). A cached blob is read
// from storage. Otherwise the first request fetches it from the upstream
// and gets the bytes as they arrive, while they are stored
// (storage.PutBlob verifies the digest; a mismatch stores nothing and
// fails the reader at its end); a request for the same blob of the same
// repository meanwhile waits for that fetch to end and reads from storage.
//
// The fetch does not depend on the first client: if it goes away, the
// download goes on, so that those waiting get the blob. A blob of the
// same digest pulled through two repositories at once is fetched twice
// (each repository's upstream vouches for its own content).
func (p *Proxy) OpenBlob(ctx context.Context, local string, dg digest.Digest) (io.ReadCloser, int64, error) {
	u, remoteName := p.lookup(local)
	if u == nil {
		return p.store.OpenBlob(ctx, local, dg, 0)
	}
	key := local + "@" + dg.String()
	for {
		rc, size, err := p.store.OpenBlob(ctx, local, dg, 0)
		if !errors.Is(err, storage.ErrBlobUnknown) {
			return rc, size, err
		}
		p.mu.Lock()
		f, busy := p.flights[key]
		if !busy {
			f = &flight{done: make(chan struct{})}
			p.flights[key] = f
		}
		p.mu.Unlock()
		if !busy {
			return p.fetchBlob(ctx, u, remoteName, local, dg, key, f)
		}
		select {
		case <-f.done:
		case <-ctx.Done():
			return nil, 0, ctx.Err()
		}
		if f.err != nil {
			return nil, 0, f.err
		}
		// Stored: read it from storage on the next round.
	}
}

// FetchBlob makes sure blob dg of mirrored repository local is stored,
// fetching it (once, see OpenBlob) if it is not, and returns when it is.
func (p *Proxy) FetchBlob(ctx context.Context, local string, dg digest.Digest) error {
	rc, _, err := p.OpenBlob(ctx, local, dg)
	if err != nil {
		return err
	}
	defer rc.Close()
	_, err = io.Copy(io.Discard, rc)
	return err
}

// fetchBlob starts the download of flight f and returns the reader of the
// client that started it. The flight ends when the blob is stored or the
// download failed.
func (p *Proxy) fetchBlob(ctx context.Context, u *upstream, remoteName, local string, dg digest.Digest, key string, f *flight) (io.ReadCloser, int64, error) {
	end := func(err error) {
		p.mu.Lock()
		delete(p.flights, key)
		p.mu.Unlock()
		f.err = err
		close(f.done)
	}
	// Detached from the client: those waiting need the download to end.
	// It ends if the upstream sends nothing for upstreamIdle.
	fctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	idle := time.AfterFunc(upstreamIdle, cancel)
	resp, err := p.blobRequest(fctx, u, remoteName, http.MethodGet, dg)
	if err != nil {
		idle.Stop()
		cancel()
		end(err)
		return nil, 0, err
	}
	pr, pw := io.Pipe()
	go func() {
		defer cancel()
		defer idle.Stop()
		defer resp.Body.Close()
		client := &forgivingWriter{w: pw}
		body := &idleReader{r: resp.Body, idle: idle}
		_, err := p.store.PutBlob(fctx, local, dg, io.TeeReader(body, client))
		if err != nil {
			var mismatch *storage.DigestMismatchError
			if errors.As(err, &mismatch) {
				p.log.Error("proxy: upstream blob does not match its digest; not stored", "repository", local, "digest", dg, "got", mismatch.Got)
			} else {
				p.log.Warn("proxy: blob download failed", "repository", local, "digest", dg, "err", err)
			}
			err = errors.Join(ErrUpstream, err)
		}
		pw.CloseWithError(err) // nil: EOF
		end(err)
	}()
	return pr, resp.ContentLength, nil
}

// upstreamIdle is how long a blob download may receive nothing from the
// upstream (the response's headers included) before it is abandoned.
const upstreamIdle = time.Minute

// idleReader runs the idle timer only while it waits for r: time spent
// passing the bytes on (a slow first client) is not the upstream's.
type idleReader struct {
	r    io.Reader
	idle *time.Timer
}

func (r *idleReader) Read(b []byte) (int, error) {
	r.idle.Reset(upstreamIdle)
	n, err := r.r.Read(b)
	r.idle.Stop()
	return n, err
}

// forgivingWriter passes writes to w until one fails, then drops them
// without error, so a client that stops reading does not stop the
// download that is being stored.
type forgivingWriter struct {
	w      io.Writer
	failed bool
}

func (f *forgivingWriter) Write(b []byte) (int, error) {
	if !f.failed {
		if _, err := f.w.Write(b); err != nil {
			f.failed = true
		}
	}
	return len(b), nil
}

// blobRequest sends a HEAD or GET for blob dg of remoteName to u and
// returns a 200 response (redirects, to a CDN or a bucket, followed), or
// storage.ErrBlobUnknown for a 404, or an error wrapping ErrUpstream.
func (p *Proxy) blobRequest(ctx context.Context, u *upstream, remoteName, method string, dg digest.Digest) (*http.Response, error) {
	t, err := u.transport(ctx, remoteName)
	if err != nil {
		return nil, err
	}
	// RepositoryStr, as remote.Get names it (library/ added for Docker
	// Hub's index.docker.io).
	target := u.reg.Scheme() + "://" + u.reg.RegistryStr() + "/v2/" + u.reg.Repo(remoteName).RepositoryStr() + "/blobs/" + dg.String()
	req, err := http.NewRequestWithContext(ctx, method, target, nil)
	if err != nil {
		return nil, errors.Join(ErrUpstream, err)
	}
	// The client follows redirects through t, which adds the upstream's
	// credentials only for the upstream's own host.
	resp, err := (&http.Client{Transport: t}).Do(req)
	if err != nil {
		return nil, errors.Join(ErrUpstream, err)
	}
	switch {
	case resp.StatusCode == http.StatusOK:
		return resp, nil
	case resp.StatusCode == http.StatusNotFound:
		resp.Body.Close()
		return nil, storage.ErrBlobUnknown
	}
	resp.Body.Close()
	return nil, errors.Join(ErrUpstream, &statusError{code: resp.StatusCode})
}

// statusError is an upstream answer that was neither content nor 404.
type statusError struct{ code int }

func (e *statusError) Error() string {
	return "upstream answered " + strconv.Itoa(e.code) + " " + http.StatusText(e.code)
}
