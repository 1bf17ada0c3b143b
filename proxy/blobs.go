package proxy

import (
	"cmp"
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/storage"
)

// flight is a blob download in progress; done is closed when it ends,
// err then says how. local is the repository it stores the blob in.
type flight struct {
	done  chan struct{}
	err   error
	local string
}

// blobKey names a download: one per blob of an upstream, whichever of its
// repositories it goes through.
type blobKey struct {
	u  *upstream
	dg digest.Digest
}

// StatBlob returns the size of blob dg of mirrored repository local: from
// storage when cached, else from a HEAD to the upstream (nothing is
// stored). It returns storage.ErrBlobUnknown when neither has it, and for
// a foreign layer of a cached manifest without asking the upstream.
func (p *Proxy) StatBlob(ctx context.Context, local string, dg digest.Digest) (int64, error) {
	size, err := p.store.StatBlob(ctx, local, dg)
	u, remoteName := p.lookup(local)
	if u == nil || !errors.Is(err, storage.ErrBlobUnknown) {
		return size, err
	}
	if foreign, err := p.store.IsForeign(ctx, local, dg); err != nil || foreign {
		return 0, cmp.Or(err, storage.ErrBlobUnknown)
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
// (storage.PutBlob verifies the digest): all but the last byte, which
// comes once the digest is checked. A mismatch stores nothing, and the
// reader fails short of the blob's size. A request for the same blob through any
// repository of the same upstream meanwhile waits for that fetch to end
// and reads from storage; the blob is stored once, and linked into
// another repository once the upstream confirms (a HEAD) that it has the
// blob there too, so that no repository serves what its upstream
// repository does not hold. A blob already stored, through another
// repository or pushed, is linked in the same way rather than fetched.
//
// The fetch does not depend on the first client: if it goes away, the
// download goes on, so that those waiting get the blob.
//
// A foreign layer of a manifest cached in local (a descriptor with urls:
// content its vendor does not let registries distribute) is neither
// fetched nor stored: it is storage.ErrBlobUnknown, and the client takes
// it from the urls, as it would from the upstream.
//
// Errors: storage.ErrBlobUnknown when the upstream does not have the blob,
// ErrUpstream wrapped when the upstream failed (or sent content that is
// not the digest's), and storage's own errors (storage.ErrStorageFull...)
// when storing failed, for the first client and those waiting alike.
func (p *Proxy) OpenBlob(ctx context.Context, local string, dg digest.Digest) (io.ReadCloser, int64, error) {
	u, remoteName := p.lookup(local)
	if u == nil {
		return p.store.OpenBlob(ctx, local, dg, 0)
	}
	key := blobKey{u, dg}
	for {
		rc, size, err := p.store.OpenBlob(ctx, local, dg, 0)
		if !errors.Is(err, storage.ErrBlobUnknown) {
			return rc, size, err
		}
		if foreign, err := p.store.IsForeign(ctx, local, dg); err != nil || foreign {
			return nil, 0, cmp.Or(err, storage.ErrBlobUnknown)
		}
		p.mu.Lock()
		f, busy := p.flights[key]
		if !busy {
			f = &flight{done: make(chan struct{}), local: local}
			p.flights[key] = f
		}
		p.mu.Unlock()
		if !busy {
			stored, err := p.store.HasBlob(ctx, dg)
			if err != nil || !stored {
				if err != nil {
					p.endFlight(key, f, err)
					return nil, 0, err
				}
				return p.fetchBlob(ctx, u, remoteName, local, dg, key, f)
			}
			err = p.link(ctx, u, remoteName, local, dg)
			p.endFlight(key, f, err)
			if err != nil {
				return nil, 0, err
			}
			continue // linked: read it from storage
		}
		select {
		case <-f.done:
		case <-ctx.Done():
			return nil, 0, ctx.Err()
		}
		if f.local != local {
			// Fetched through another repository: this one's upstream
			// repository must have it too (if that one's lacked it, this
			// one's may still have it: ask on the next round).
			if f.err == nil {
				if err := p.link(ctx, u, remoteName, local, dg); err != nil {
					return nil, 0, err
				}
			} else if errors.Is(f.err, storage.ErrBlobUnknown) {
				continue
			}
		}
		if f.err != nil {
			return nil, 0, f.err
		}
		// Stored: read it from storage on the next round.
	}
}

// link links stored blob dg into local once u confirms that remoteName
// has it.
func (p *Proxy) link(ctx context.Context, u *upstream, remoteName, local string, dg digest.Digest) error {
	resp, err := p.blobRequest(ctx, u, remoteName, http.MethodHead, dg)
	if err != nil {
		return err
	}
	resp.Body.Close()
	_, err = p.store.MountBlob(ctx, local, "", dg)
	return err
}

// endFlight ends flight f of key with err.
func (p *Proxy) endFlight(key blobKey, f *flight, err error) {
	p.mu.Lock()
	delete(p.flights, key)
	p.mu.Unlock()
	f.err = err
	close(f.done)
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
func (p *Proxy) fetchBlob(ctx context.Context, u *upstream, remoteName, local string, dg digest.Digest, key blobKey, f *flight) (io.ReadCloser, int64, error) {
	// Detached from the client: those waiting need the download to end.
	// It ends if the upstream sends nothing for upstreamIdle.
	fctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	idle := time.AfterFunc(upstreamIdle, cancel)
	resp, err := p.blobRequest(fctx, u, remoteName, http.MethodGet, dg)
	if err != nil {
		idle.Stop()
		cancel()
		p.endFlight(key, f, err)
		return nil, 0, err
	}
	pr, pw := io.Pipe()
	go func() {
		defer cancel()
		defer idle.Stop()
		defer resp.Body.Close()
		client := &tailWriter{w: pw, left: resp.ContentLength}
		body := &idleReader{r: resp.Body, idle: idle}
		_, err := p.store.PutBlob(fctx, local, dg, io.TeeReader(body, client))
		var mismatch *storage.DigestMismatchError
		switch {
		case err == nil:
			client.release() // the digest is checked: the last bytes
		case errors.As(err, &mismatch):
			p.log.Error("proxy: upstream blob does not match its digest; not stored", "repository", local, "digest", dg, "got", mismatch.Got)
			err = errors.Join(ErrUpstream, err)
		case body.err != nil:
			// The upstream's body failed (or stalled): its fault.
			p.log.Warn("proxy: blob download failed", "repository", local, "digest", dg, "err", err)
			err = errors.Join(ErrUpstream, body.err)
		default:
			// Storing failed: storage's error (a full disk is a 503).
			p.log.Error("proxy: storing a blob from the upstream failed", "repository", local, "digest", dg, "err", err)
		}
		pw.CloseWithError(err) // nil: EOF
		p.endFlight(key, f, err)
	}()
	return pr, resp.ContentLength, nil
}

// upstreamIdle is how long a blob download may receive nothing from the
// upstream (the response's headers included) before it is abandoned.
const upstreamIdle = time.Minute

// idleReader runs the idle timer only while it waits for r: time spent
// passing the bytes on (a slow first client) is not the upstream's.
// It keeps the first read error other than io.EOF: the upstream's.
type idleReader struct {
	r    io.Reader
	idle *time.Timer
	err  error
}

func (r *idleReader) Read(b []byte) (int, error) {
	r.idle.Reset(upstreamIdle)
	n, err := r.r.Read(b)
	r.idle.Stop()
	if err != nil && err != io.EOF && r.err == nil {
		r.err = err
	}
	return n, err
}

// tailWriter passes writes to w but for the last byte of the blob (of
// size left, when it is known), which it holds back until release: a
// client gets all of a blob only once its digest has been checked, so one
// whose content is wrong ends short of its Content-Length, whatever the
// client does with the error that follows. (Of a blob of unknown size
// nothing is held: its chunked response lacks its end.) Once a write to w
// fails (the client went away) the rest are dropped without error, so
// that the download that is being stored goes on.
type tailWriter struct {
	w      io.Writer
	left   int64 // bytes to the blob's end; negative: unknown
	held   []byte
	failed bool
}

func (t *tailWriter) Write(b []byte) (int, error) {
	n := len(b)
	if t.left >= 0 {
		if int64(n) >= t.left { // the end: its last byte waits
			end := max(t.left, 0)
			if end > 0 {
				t.held = append(t.held[:0], b[end-1])
				end--
			}
			b = b[:end]
		}
		t.left -= int64(n)
	}
	t.pass(b)
	return n, nil
}

// release passes the held byte on.
func (t *tailWriter) release() {
	t.pass(t.held)
	t.held = nil
}

func (t *tailWriter) pass(b []byte) {
	if len(b) > 0 && !t.failed {
		if _, err := t.w.Write(b); err != nil {
			t.failed = true
		}
	}
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
