package storage

import (
	"context"
	"errors"
	"fmt"
	"path"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/storage/driver"
)

// How requests and garbage collection agree on what may be deleted.
//
// The collection runs while registries serve, possibly several registries
// on one store, with no lock shared between them; it must never delete
// content that a request has told a client exists (HEAD 200, mount 201,
// upload 201) or that a manifest PUT in flight is about to reference. Two
// kinds of small files in storage, both outside Distribution's tree, carry
// the agreement:
//
//   - A lease per digest (_berth/leases/<alg>/<hh>/<hex>). A request that
//     relies on a blob or manifest renews its lease (rewrites it when it is
//     older than a quarter of the grace period) before it checks that the
//     content exists.
//   - A doomed marker per digest (_berth/doomed/blobs/<alg>/<hex>) and per
//     tag (_berth/doomed/tags/<name>/@<tag>). The collection writes it before
//     it looks a last time at the content's lease and then deletes; it
//     removes the marker when it is done. A request that finds a marker
//     after renewing its lease waits until the marker is gone and starts
//     over.
//
// Why nothing promised is deleted. The collection only considers content
// unreachable from every manifest that it saw and whose data and lease are
// both older than the grace period when it starts (T0). For each such
// digest it writes the marker (g1), reads the lease (g2), and deletes only
// if the lease is still that old. A request renews the lease (p1), then
// reads the marker (p2), then checks the content and answers. The store is
// linearizable (a filesystem; S3 is strongly consistent), so either p1
// comes before g2, and the collection sees a renewed lease and keeps the
// content, or g2 comes before p1, so g1 < p2 and the request sees the
// marker, waits for the collection to finish, and checks again, finding
// the content gone if it was deleted, and saying so, rather than the
// other way round. This is Dekker's handshake: each side writes its flag,
// then reads the other's.
//
// The collection removes its marker once it has deleted, so a request
// that finds no marker may have come after a whole deletion: what it
// checks or writes must come after its read of the marker, not before.
// A manifest PUT therefore promises what needs a promise (below) first,
// then checks its references and whether its own content is stored, then
// writes. A tag has no lease: a push writes the tag's link (its flag),
// reads the marker, and then reads the link back, writing it again if a
// retention pass deleted it meanwhile.
//
// A blob whose data is young needs no lease either: the collection judges
// a blob's data by the same age as its lease, and data is placed only
// after the placing request's promise, so after any collection that was
// deleting an earlier copy (and its links) is done. A manifest PUT reads
// its blobs' data first and their links after, and promises only the
// blobs older than a quarter of the grace period (see PutManifest).
//
// Markers are written only by a collection that holds the collection lock
// (gclock.go), which it releases after its last deletion: when the lock
// file is absent no marker is live, and a request reads the lock once
// instead of one marker per digest.
//
// A lease that is merely recent is not rewritten (a pull-heavy registry
// would otherwise write on every request). That is still safe: a lease
// renewed less than a quarter of the grace period before the request is
// younger than the grace period at any T0 up to three quarters of the grace
// period after the request, and the request checks the marker all the
// same. So a promise lasts at least ¾ of the grace period: a client may
// take that long between HEAD and the manifest PUT that relies on it, and
// a manifest PUT refuses to write (ErrPromiseExpired) if more than half of
// it has passed since it renewed its references' leases, since a manifest
// the collection did not see protects nothing.
//
// A collection that dies leaves its markers; a marker older than
// doomedTTL is ignored by requests and removed by the next collection, and
// a collection never performs a deletion more than doomedTTL/2 after it
// wrote the marker that covers it. Two collections never run at once
// (gcLock). Clocks: leases are compared with the collector's clock, so the
// clocks of replicas and store may differ by much less than the grace
// period.

// DefaultGracePeriod is how long new content, and content a request has
// relied on, is safe from collection when no grace period is configured.
const DefaultGracePeriod = time.Hour

// doomedTTL is how long a doomed marker binds requests: a collection
// killed while it held one delays requests on that digest at most this
// long.
const doomedTTL = 30 * time.Second

// ErrPromiseExpired: a manifest PUT took so long between checking the
// content it references and storing the manifest that a collection may
// have deleted that content meanwhile; nothing was stored and the client
// may retry.
var ErrPromiseExpired = errors.New("storage: the manifest's references were checked too long ago")

func berthPath(elem ...string) string {
	return path.Join(append([]string{root, "_berth"}, elem...)...)
}

func leasePath(dg digest.Digest) string {
	hex := dg.Encoded()
	return berthPath("leases", dg.Algorithm().String(), hex[:2], hex)
}

func doomedPath(dg digest.Digest) string {
	return berthPath("doomed", "blobs", dg.Algorithm().String(), dg.Encoded())
}

// doomedTagPath: "@" cannot begin a repository name component, so a tag's
// marker never collides with a nested repository's directory.
func doomedTagPath(name, tag string) string {
	return berthPath("doomed", "tags", name, "@"+tag)
}

// promise protects each of dgs from collection for at least ¾ of the grace
// period (see above) and returns when it did so. The caller checks that
// the content exists after it returns, not before.
func (s *Store) promise(ctx context.Context, dgs ...digest.Digest) (time.Time, error) {
	at := time.Now()
	if len(dgs) == 0 {
		return at, nil
	}
	renewals := make([]func() error, len(dgs))
	markers := make([]string, len(dgs))
	for i, dg := range dgs {
		renewals[i] = func() error { return s.renewLease(ctx, dg) }
		markers[i] = doomedPath(dg)
	}
	for {
		if err := concurrently(renewals...); err != nil {
			return at, err
		}
		waited, err := s.waitDoomed(ctx, markers...)
		if err != nil || !waited {
			return at, err
		}
		// A collection held one of dgs: it may have deleted the content
		// and the lease just renewed. Renew again; the caller's check
		// then sees what is left.
	}
}

// renewLease rewrites dg's lease unless it is younger than a quarter of the
// grace period.
func (s *Store) renewLease(ctx context.Context, dg digest.Digest) error {
	if err := dg.Validate(); err != nil {
		return fmt.Errorf("%w: %v", ErrDigestInvalid, err)
	}
	p := leasePath(dg)
	if fi, err := s.statFile(ctx, p); err == nil && s.young(fi.ModTime) {
		return nil
	}
	return s.d.PutContent(ctx, p, []byte(time.Now().UTC().Format(time.RFC3339Nano)))
}

// waitDoomed waits while a live doomed marker is at any of ps and reports
// whether there was one. Markers are written only by a collection holding
// the collection lock, which it releases after its last deletion: with no
// lock file there is no live marker, and one read of the lock stands for
// reading every marker.
func (s *Store) waitDoomed(ctx context.Context, ps ...string) (bool, error) {
	if ok, err := s.fileExists(ctx, gcLockPath()); err != nil || !ok {
		return false, err
	}
	waited := false
	for _, p := range ps {
		w, err := s.waitMarker(ctx, p)
		waited = waited || w
		if err != nil {
			return waited, err
		}
	}
	return waited, nil
}

// waitMarker waits while a live doomed marker is at p and reports whether
// there was one.
func (s *Store) waitMarker(ctx context.Context, p string) (bool, error) {
	waited := false
	for {
		fi, err := s.statFile(ctx, p)
		if errors.Is(err, driver.ErrNotFound) {
			return waited, nil
		}
		if err != nil {
			return waited, err
		}
		if time.Since(fi.ModTime) > doomedTTL {
			return waited, nil // left by a collection that died
		}
		waited = true
		t := time.NewTimer(20 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return waited, context.Cause(ctx)
		case <-t.C:
		}
	}
}

// young reports whether content written at modTime needs no lease for a
// request to rely on it: like a lease renewed then, it is younger than the
// grace period for any collection that could delete it before the request
// is done (see above, and PutManifest).
func (s *Store) young(modTime time.Time) bool {
	return time.Since(modTime) < s.grace/4
}

// checkPromise returns ErrPromiseExpired when a promise made at at may no
// longer hold for content a manifest about to be written references.
func (s *Store) checkPromise(at time.Time) error {
	if time.Since(at) > s.grace/2 {
		return ErrPromiseExpired
	}
	return nil
}
