package registry

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/storage"
	"github.com/berth-registry/berth/storage/driver"
)

// The stress test: clients push through a real server with
// go-containerregistry while collections run back to back on the same
// store, and everything a client was told it pushed must pull at the end.

const (
	// stressGrace is the grace period: short, so that what the clients
	// delete becomes garbage while they push.
	stressGrace = 3 * time.Second
	// stressFor is how long the clients push: two grace periods, so that
	// content deleted while they push is collected too.
	stressFor = 2 * stressGrace
	// stressClients is how many clients push at once.
	stressClients = 8
	// stressLatency is how long each of the collector's storage calls
	// takes.
	stressLatency = 2 * time.Millisecond
)

// stressImage is something a client was told it pushed and did not delete.
type stressImage struct {
	repo   string
	ref    string // the tag, or the digest for a push by digest
	digest digest.Digest
	op     string
	// desc and layers (images only) let later pushes refer to it as a
	// subject or mount its layers.
	desc   v1.Descriptor
	layers []v1.Layer
}

// stressReferrer is an artifact pushed with a subject.
type stressReferrer struct {
	repo              string
	subject, referrer digest.Digest
}

// stressBuried is something a client pushed and deleted, to push again
// once it has become garbage.
type stressBuried struct {
	repo   string
	item   remote.Taggable // a v1.Image or a v1.ImageIndex
	layers []v1.Layer
	at     time.Time
}

type stressRun struct {
	t      *testing.T
	g      *gcServer
	host   string
	opts   []remote.Option
	pool   []v1.Layer
	poolAt name.Repository
	seq    atomic.Int64
	sweep  *sweepWatch

	mu        sync.Mutex
	kept      []stressImage
	referrers []stressReferrer
	buried    map[int][]stressBuried // by client
	done      map[string]int         // acknowledged pushes by operation
	failed    map[string][]string    // refused pushes by operation
}

// stressResult is what the clients and the collections did.
type stressResult struct {
	run         *stressRun
	collections int
	total       storage.GCReport // summed over the collections
	broken      []string         // acknowledged images that do not pull
}

// runGCStress runs the clients and the collection loop and checks every
// acknowledged image. The collections skip the protocol when unsafe.
func runGCStress(t *testing.T, unsafe bool, seed uint64, pushFor time.Duration) stressResult {
	t.Helper()
	start := time.Now()
	g := newGCServer(t, stressGrace)
	r := &stressRun{
		t: t, g: g, host: strings.TrimPrefix(g.srv.URL, "http://"),
		buried: map[int][]stressBuried{}, done: map[string]int{}, failed: map[string][]string{},
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r.opts = []remote.Option{
		remote.WithTransport(g.client.Transport), remote.WithContext(ctx), remote.WithJobs(2),
		// A refused promise (503) is retried, as clients do, but quickly.
		remote.WithRetryBackoff(remote.Backoff{Duration: 50 * time.Millisecond, Factor: 2, Steps: 3}),
	}
	t.Logf("seed %d", seed)

	// The shared layers, in a repository of their own that nothing deletes:
	// the source of cross-repository mounts.
	rng := rand.New(rand.NewPCG(seed, 0))
	for range 12 {
		r.pool = append(r.pool, r.layer(rng))
	}
	r.poolAt = r.repo("stress/pool")
	poolImage := r.image(r.pool...)
	if err := remote.Write(r.poolAt.Tag("v1"), poolImage, r.opts...); err != nil {
		t.Fatal(err)
	}
	r.keep(stressImage{repo: "stress/pool", ref: "v1", op: "pool"}, poolImage, r.pool)

	// Garbage from the start: each client pushes and deletes a few images
	// and indexes, and the grace period is over for all of it, so that the
	// first collection already removes what the clients are pushing again.
	var wg sync.WaitGroup
	for c := range stressClients {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(seed, uint64(c)+1))
			for range 2 {
				if err := r.churn(c, rng); err != nil {
					t.Error(err)
				}
			}
			if err := r.pushIndex(c, rng); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	ageTree(t, g.root, time.Hour)
	t.Logf("%v: garbage ready", time.Since(start).Round(time.Millisecond))
	for _, q := range r.buried {
		for i := range q {
			q[i].at = time.Time{}
		}
	}

	// Collections back to back, on a store of their own over the same
	// files, as a collector beside the registry would; every call of the
	// collector's takes a while, as on an object store, so that a
	// collection's mark and its sweep are far enough apart for pushes to
	// land in between.
	r.sweep = &sweepWatch{Driver: slowDriver{g.d, stressLatency}, begins: make(chan struct{})}
	gc := storage.NewWithOptions(r.sweep, storage.Options{GracePeriod: stressGrace})
	res := stressResult{run: r}
	stop := make(chan struct{})
	gcDone := make(chan error, 1)
	go func() {
		for {
			select {
			case <-stop:
				gcDone <- nil
				return
			default:
			}
			rep, err := gc.CollectGarbage(context.Background(), storage.GCOptions{DeleteUntagged: true, Unsafe: unsafe})
			if err != nil {
				gcDone <- err
				return
			}
			res.collections++
			res.total.BlobsDeleted += rep.BlobsDeleted
			res.total.ManifestsDeleted += rep.ManifestsDeleted
			res.total.LinksDeleted += rep.LinksDeleted
			res.total.Kept += rep.Kept
			res.total.Failed += rep.Failed
			t.Logf("collection %d: %d repositories, %d manifests, %d blobs; deleted %d blobs, %d manifests, %d links; kept %d; took %v",
				res.collections, rep.Repositories, rep.Manifests, rep.Blobs, rep.BlobsDeleted, rep.ManifestsDeleted, rep.LinksDeleted, rep.Kept, rep.Duration.Round(time.Millisecond))
		}
	}()

	deadline := time.Now().Add(pushFor)
	for c := range stressClients {
		wg.Go(func() { r.client(c, rand.New(rand.NewPCG(seed, uint64(c)+100)), deadline) })
	}
	wg.Wait()
	t.Logf("%v: clients done", time.Since(start).Round(time.Millisecond))
	close(stop)
	if err := <-gcDone; err != nil {
		t.Fatalf("collection: %v", err)
	}
	t.Logf("%v: collections done", time.Since(start).Round(time.Millisecond))
	var ops []string
	for op, n := range r.done {
		ops = append(ops, fmt.Sprintf("%s %d", op, n))
	}
	slices.Sort(ops)
	t.Logf("acknowledged pushes: %s; %d images and %d referrers to check", strings.Join(ops, ", "), len(r.kept), len(r.referrers))
	for op, errs := range r.failed {
		t.Logf("%d %s pushes refused: %s", len(errs), op, strings.Join(errs, "; "))
	}
	t.Logf("%d collections deleted %d blobs, %d manifests and %d links, kept %d candidates a request relied on",
		res.collections, res.total.BlobsDeleted, res.total.ManifestsDeleted, res.total.LinksDeleted, res.total.Kept)
	res.broken = r.check()
	t.Logf("%v: checked", time.Since(start).Round(time.Millisecond))
	return res
}

// TestGCStress: clients push images that share layers, delete manifests
// and push their content again, mount across repositories, push
// multi-platform indexes and referrers, while collections that delete
// untagged manifests run back to back. Everything a client was told it
// pushed must pull once the clients are done, and again after a final
// collection that must leave no unreferenced blob.
func TestGCStress(t *testing.T) {
	if testing.Short() {
		t.Skip("stress test")
	}
	res := runGCStress(t, false, uint64(time.Now().UnixNano()), stressFor)
	if res.total.BlobsDeleted == 0 {
		t.Errorf("the collections deleted nothing during the pushes; the test exercised nothing")
	}
	for _, op := range []string{"image", "mount", "churn-again", "index", "referrer", "revive"} {
		if res.run.done[op] == 0 {
			t.Errorf("no %s push was acknowledged; the test did not exercise it", op)
		}
	}
	if n := res.run.g.mounted.Load(); n == 0 {
		t.Errorf("no blob was mounted across repositories")
	} else {
		t.Logf("%d blobs mounted across repositories", n)
	}
	if res.total.Failed != 0 {
		t.Errorf("%d removals failed", res.total.Failed)
	}
	for _, b := range res.broken {
		t.Errorf("acknowledged but broken: %s", b)
	}
	if t.Failed() {
		return
	}

	// The grace period over for everything, one more collection must leave
	// exactly the blobs that surviving manifests reference.
	r := res.run
	start := time.Now()
	ageTree(t, r.g.root, time.Hour)
	t.Logf("aged in %v", time.Since(start))
	// Blobs that no manifest, tagged or not, references now: the final
	// collection must remove at least these (the collections during the
	// pushes may have left none: under Wine they are slower and do).
	garbage := 0
	if referenced, err := referencedBlobs(r.g.root); err != nil {
		t.Fatal(err)
	} else if stored, err := storedBlobs(r.g.root); err != nil {
		t.Fatal(err)
	} else {
		for _, dg := range stored {
			if !referenced[dg] {
				garbage++
			}
		}
	}
	rep, err := r.g.store.CollectGarbage(context.Background(), storage.GCOptions{DeleteUntagged: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%v: final collection: %+v; %d blobs were referenced by no manifest before it", time.Since(start), rep, garbage)
	if rep.BlobsDeleted < garbage {
		t.Errorf("the final collection deleted %d blobs; %d were referenced by no manifest", rep.BlobsDeleted, garbage)
	}
	referenced, err := referencedBlobs(r.g.root)
	if err != nil {
		t.Fatal(err)
	}
	stored, err := storedBlobs(r.g.root)
	if err != nil {
		t.Fatal(err)
	}
	for _, dg := range stored {
		if !referenced[dg] {
			t.Errorf("blob %s is stored but no surviving manifest references it", dg)
		}
	}
	t.Logf("%v: after the final collection: %d blobs, all referenced", time.Since(start), len(stored))
	for _, b := range r.check() {
		t.Errorf("after the final collection: %s", b)
	}
}

// TestGCStressUnsafe runs the same clients, for one grace period, with the
// protocol switched off: some acknowledged image must break, or the stress
// test could pass without the protocol and would show nothing. An image
// breaks when its push lands between a collection's mark and its sweep,
// which the clients' revivals aim at (see revive): 3 to 8 images broke in
// each of 15 runs under -race, so the test asserts it. TestGCKeepsPromises
// shows the same one request at a time.
func TestGCStressUnsafe(t *testing.T) {
	if testing.Short() {
		t.Skip("stress test")
	}
	res := runGCStress(t, true, uint64(time.Now().UnixNano()), stressGrace)
	t.Logf("without the protocol, %d acknowledged images broke", len(res.broken))
	if len(res.broken) == 0 {
		t.Errorf("nothing broke without the protocol")
	}
	for i, b := range res.broken {
		if i == 5 {
			break
		}
		t.Logf("broken: %s", b)
	}
}

// client pushes until deadline, cycling through the operations.
func (r *stressRun) client(c int, rng *rand.Rand, deadline time.Time) {
	ops := []func(c int, rng *rand.Rand) error{r.pushImage, r.revive, r.pushMounted, r.churn, r.pushIndex, r.pushReferrer}
	for i := c; time.Now().Before(deadline); i++ {
		if err := ops[i%len(ops)](c, rng); err != nil {
			r.t.Errorf("client %d: %v", c, err)
			return
		}
	}
}

func (r *stressRun) repo(p string) name.Repository {
	repo, err := name.NewRepository(r.host+"/"+p, name.Insecure)
	if err != nil {
		panic(err)
	}
	return repo
}

// layer returns a new layer of 0.5 to 4.5 KiB.
func (r *stressRun) layer(rng *rand.Rand) v1.Layer {
	b := make([]byte, 512+rng.IntN(4096))
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	copy(b, fmt.Sprintf("layer %d\n", r.seq.Add(1)))
	return static.NewLayer(b, types.OCILayer)
}

// image returns an OCI image of layers with a config of its own.
func (r *stressRun) image(layers ...v1.Layer) v1.Image {
	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	adds := make([]mutate.Addendum, len(layers))
	for i, l := range layers {
		adds[i] = mutate.Addendum{Layer: l, MediaType: types.OCILayer}
	}
	img, err := mutate.Append(img, adds...)
	if err != nil {
		panic(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		panic(err)
	}
	cf = cf.DeepCopy()
	cf.Architecture, cf.OS = "amd64", "linux"
	cf.Config.Labels = map[string]string{"n": fmt.Sprint(r.seq.Add(1))}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		panic(err)
	}
	return img
}

func (r *stressRun) poolLayers(rng *rand.Rand, n int) []v1.Layer {
	var out []v1.Layer
	for _, i := range rng.Perm(len(r.pool))[:n] {
		out = append(out, r.pool[i])
	}
	return out
}

// push writes item as repo:ref and says whether the registry acknowledged
// it; a refusal is recorded (and logged at the end), not an error: a push
// may fail while a collection runs, it may not be acknowledged and lost.
func (r *stressRun) push(op, repo, ref string, item remote.Taggable) bool {
	var target name.Reference
	if dg, err := digest.Parse(ref); err == nil {
		target = r.repo(repo).Digest(dg.String())
	} else {
		target = r.repo(repo).Tag(ref)
	}
	var err error
	switch it := item.(type) {
	case v1.ImageIndex:
		err = remote.WriteIndex(target, it, r.opts...)
	case v1.Image:
		err = remote.Write(target, it, r.opts...)
	}
	if err == nil {
		r.mu.Lock()
		r.done[op]++
		r.mu.Unlock()
		return true
	}
	r.mu.Lock()
	r.failed[op] = append(r.failed[op], fmt.Sprintf("%s:%s: %v", repo, ref, err))
	r.mu.Unlock()
	return false
}

// keep records an acknowledged push.
func (r *stressRun) keep(im stressImage, item remote.Taggable, layers []v1.Layer) {
	dg, err := item.(partial.WithRawManifest).RawManifest()
	if err != nil {
		panic(err)
	}
	im.digest = digest.FromBytes(dg)
	if img, ok := item.(v1.Image); ok {
		d, err := partial.Descriptor(img)
		if err != nil {
			panic(err)
		}
		im.desc, im.layers = *d, layers
	}
	r.mu.Lock()
	r.kept = append(r.kept, im)
	r.mu.Unlock()
}

// bury deletes item's manifest; half the time the client will push it
// again once the grace period has passed (revive), the other half its
// content stays garbage for the collections to remove.
func (r *stressRun) bury(c int, rng *rand.Rand, repo string, item remote.Taggable, layers []v1.Layer) error {
	raw, err := item.(partial.WithRawManifest).RawManifest()
	if err != nil {
		return err
	}
	if err := remote.Delete(r.repo(repo).Digest(digest.FromBytes(raw).String()), r.opts...); err != nil {
		return fmt.Errorf("delete from %s: %w", repo, err)
	}
	if rng.IntN(2) == 0 {
		return nil
	}
	r.mu.Lock()
	r.buried[c] = append(r.buried[c], stressBuried{repo: repo, item: item, layers: layers, at: time.Now()})
	r.mu.Unlock()
	return nil
}

func (r *stressRun) tag() string { return fmt.Sprintf("t%d", r.seq.Add(1)) }

// pushImage pushes an image of shared layers and one of its own.
func (r *stressRun) pushImage(c int, rng *rand.Rand) error {
	repo := fmt.Sprintf("stress/c%d", c)
	layers := append(r.poolLayers(rng, 2), r.layer(rng))
	img := r.image(layers...)
	tag := r.tag()
	if !r.push("image", repo, tag, img) {
		return nil
	}
	r.keep(stressImage{repo: repo, ref: tag, op: "image"}, img, layers)
	return nil
}

// pushMounted pushes to a new repository an image whose layers come from
// other repositories: shared ones from the pool, and one of another
// client's images; go-containerregistry mounts them (POST ?mount=&from=).
func (r *stressRun) pushMounted(c int, rng *rand.Rand) error {
	repo := fmt.Sprintf("stress/c%d/m%d", c, r.seq.Add(1))
	var layers []v1.Layer
	for _, l := range r.poolLayers(rng, 2) {
		dg, _ := l.Digest()
		layers = append(layers, &remote.MountableLayer{Layer: l, Reference: r.poolAt.Digest(dg.String())})
	}
	r.mu.Lock()
	var from *stressImage
	if n := len(r.kept); n > 0 {
		if im := r.kept[rng.IntN(n)]; len(im.layers) > 0 {
			from = &im
		}
	}
	r.mu.Unlock()
	if from != nil {
		l := from.layers[len(from.layers)-1]
		dg, _ := l.Digest()
		layers = append(layers, &remote.MountableLayer{Layer: l, Reference: r.repo(from.repo).Digest(dg.String())})
	}
	layers = append(layers, r.layer(rng))
	img := r.image(layers...)
	tag := r.tag()
	if !r.push("mount", repo, tag, img) {
		return nil
	}
	r.keep(stressImage{repo: repo, ref: tag, op: "mount"}, img, layers)
	return nil
}

// churn pushes an image, deletes its manifest, and pushes at once another
// image of the same layers.
func (r *stressRun) churn(c int, rng *rand.Rand) error {
	repo := fmt.Sprintf("stress/c%d", c)
	layers := append(r.poolLayers(rng, 1), r.layer(rng), r.layer(rng))
	img := r.image(layers...)
	if !r.push("churn-first", repo, r.tag(), img) {
		return nil
	}
	if err := r.bury(c, rng, repo, img, layers); err != nil {
		return err
	}
	again := r.image(layers...)
	tag := r.tag()
	if !r.push("churn-again", repo, tag, again) {
		return nil
	}
	r.keep(stressImage{repo: repo, ref: tag, op: "churn-again"}, again, layers)
	return nil
}

// pushIndex pushes a two-platform index whose children are untagged; every
// other one is deleted at once, to be pushed again later.
func (r *stressRun) pushIndex(c int, rng *rand.Rand) error {
	repo := fmt.Sprintf("stress/c%d", c)
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	var all []v1.Layer
	for _, arch := range []string{"amd64", "arm64"} {
		layers := append(r.poolLayers(rng, 1), r.layer(rng))
		all = append(all, layers...)
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{
			Add:        r.image(layers...),
			Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: arch}},
		})
	}
	tag := r.tag()
	if !r.push("index", repo, tag, idx) {
		return nil
	}
	if rng.IntN(2) == 0 {
		return r.bury(c, rng, repo, idx, all)
	}
	r.keep(stressImage{repo: repo, ref: tag, op: "index"}, idx, nil)
	return nil
}

// pushReferrer pushes, by digest and untagged, an artifact whose subject is
// one of the client's images.
func (r *stressRun) pushReferrer(c int, rng *rand.Rand) error {
	repo := fmt.Sprintf("stress/c%d", c)
	r.mu.Lock()
	var subjects []stressImage
	for _, im := range r.kept {
		if im.repo == repo && im.desc.Digest.Hex != "" && im.op != "referrer" {
			subjects = append(subjects, im)
		}
	}
	r.mu.Unlock()
	if len(subjects) == 0 {
		return r.pushImage(c, rng)
	}
	subject := subjects[rng.IntN(len(subjects))]
	art := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), "application/vnd.berth.test.signature")
	sig := static.NewLayer(fmt.Appendf(nil, "signature %d of %s", r.seq.Add(1), subject.digest), "application/vnd.berth.test.signature.v1")
	art, err := mutate.Append(art, mutate.Addendum{Layer: sig, MediaType: "application/vnd.berth.test.signature.v1"})
	if err != nil {
		return err
	}
	art = mutate.Subject(art, subject.desc).(v1.Image)
	raw, err := art.RawManifest()
	if err != nil {
		return err
	}
	dg := digest.FromBytes(raw)
	if !r.push("referrer", repo, dg.String(), art) {
		return nil
	}
	r.keep(stressImage{repo: repo, ref: dg.String(), op: "referrer"}, art, nil)
	r.mu.Lock()
	r.referrers = append(r.referrers, stressReferrer{repo: repo, subject: subject.digest, referrer: dg})
	r.mu.Unlock()
	return nil
}

// revive pushes again, under a new tag, the oldest thing the client deleted
// once the grace period has passed since: its blobs are garbage. It waits
// for a collection to begin its sweep, so that the push lands after the
// collection marked the content unreferenced and while it removes it.
func (r *stressRun) revive(c int, rng *rand.Rand) error {
	r.mu.Lock()
	var b *stressBuried
	if q := r.buried[c]; len(q) > 0 && time.Since(q[0].at) > stressGrace {
		b = &q[0]
		r.buried[c] = q[1:]
	}
	r.mu.Unlock()
	if b == nil {
		return r.pushImage(c, rng)
	}
	select {
	case <-r.sweep.next():
	case <-time.After(stressGrace):
	}
	op := "revive"
	if _, ok := b.item.(v1.ImageIndex); ok {
		op = "revive-index"
	}
	tag := r.tag()
	if !r.push(op, b.repo, tag, b.item) {
		return nil
	}
	r.keep(stressImage{repo: b.repo, ref: tag, op: op}, b.item, b.layers)
	return nil
}

// check pulls every acknowledged image and lists referrers of every kept
// subject; it returns what failed.
func (r *stressRun) check() []string {
	var (
		mu     sync.Mutex
		broken []string
		wg     sync.WaitGroup
		next   atomic.Int64
	)
	fail := func(format string, args ...any) {
		mu.Lock()
		broken = append(broken, fmt.Sprintf(format, args...))
		mu.Unlock()
	}
	for range 4 {
		wg.Go(func() {
			for i := int(next.Add(1)) - 1; i < len(r.kept); i = int(next.Add(1)) - 1 {
				im := r.kept[i]
				dg, err := r.g.pull(im.repo, im.ref)
				switch {
				case err != nil:
					fail("%s %s:%s: %v", im.op, im.repo, im.ref, err)
				case dg != im.digest:
					fail("%s %s:%s is %s, pushed %s", im.op, im.repo, im.ref, dg, im.digest)
				}
			}
		})
	}
	wg.Wait()
	for _, ref := range r.referrers {
		status, body, _, err := r.g.do("GET", "/v2/"+ref.repo+"/referrers/"+ref.subject.String(), "", nil)
		var idx struct{ Manifests []manifestRef }
		if err == nil && status == http.StatusOK {
			err = json.Unmarshal(body, &idx)
		} else if err == nil {
			err = fmt.Errorf("status %d", status)
		}
		if err != nil || !slices.ContainsFunc(idx.Manifests, func(m manifestRef) bool { return m.Digest == ref.referrer }) {
			fail("referrers of %s@%s lack %s (%v)", ref.repo, ref.subject, ref.referrer, err)
		}
	}
	return broken
}

// referencedBlobs reads the store's tree, without the storage package:
// every manifest a repository holds (a revision link) and every blob such
// a manifest references.
func referencedBlobs(root string) (map[digest.Digest]bool, error) {
	base := filepath.Join(root, "docker", "registry", "v2")
	out := map[digest.Digest]bool{}
	err := filepath.Walk(filepath.Join(base, "repositories"), func(p string, fi os.FileInfo, err error) error {
		if err != nil || fi.IsDir() || fi.Name() != "link" {
			return err
		}
		rel := filepath.ToSlash(p)
		i := strings.Index(rel, "/_manifests/revisions/")
		if i < 0 || strings.Count(rel[i+len("/_manifests/revisions/"):], "/") != 2 {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		dg, err := digest.Parse(strings.TrimSpace(string(b)))
		if err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		payload, err := os.ReadFile(filepath.Join(base, "blobs", dg.Algorithm().String(), dg.Encoded()[:2], dg.Encoded(), "data"))
		if err != nil {
			return fmt.Errorf("manifest %s of %s: %w", dg, p, err)
		}
		var m struct {
			Config    *manifestRef
			Layers    []manifestRef
			Manifests []manifestRef
		}
		if err := json.Unmarshal(payload, &m); err != nil {
			return fmt.Errorf("manifest %s: %w", dg, err)
		}
		out[dg] = true
		if m.Config != nil {
			out[m.Config.Digest] = true
		}
		for _, d := range append(m.Layers, m.Manifests...) {
			out[d.Digest] = true
		}
		return nil
	})
	return out, err
}

// storedBlobs lists the digests of the blob files in the store's tree.
func storedBlobs(root string) ([]digest.Digest, error) {
	var out []digest.Digest
	base := filepath.Join(root, "docker", "registry", "v2", "blobs")
	err := filepath.Walk(base, func(p string, fi os.FileInfo, err error) error {
		if os.IsNotExist(err) {
			return nil
		}
		if err != nil || fi.IsDir() {
			return err
		}
		rel, err := filepath.Rel(base, p)
		if err != nil {
			return err
		}
		parts := strings.Split(filepath.ToSlash(rel), "/") // <alg>/<hh>/<hex>/data
		if len(parts) != 4 || parts[3] != "data" {
			return fmt.Errorf("unexpected file %s in the blob store", p)
		}
		dg := digest.NewDigestFromEncoded(digest.Algorithm(parts[0]), parts[2])
		if err := dg.Validate(); err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		out = append(out, dg)
		return nil
	})
	return out, err
}

// slowDriver delays every call by a fixed latency.
type slowDriver struct {
	driver.Driver
	latency time.Duration
}

func (d slowDriver) GetContent(ctx context.Context, p string) ([]byte, error) {
	time.Sleep(d.latency)
	return d.Driver.GetContent(ctx, p)
}

func (d slowDriver) PutContent(ctx context.Context, p string, content []byte) error {
	time.Sleep(d.latency)
	return d.Driver.PutContent(ctx, p, content)
}

func (d slowDriver) Reader(ctx context.Context, p string, offset int64) (io.ReadCloser, error) {
	time.Sleep(d.latency)
	return d.Driver.Reader(ctx, p, offset)
}

func (d slowDriver) Writer(ctx context.Context, p string, append bool) (driver.FileWriter, error) {
	time.Sleep(d.latency)
	return d.Driver.Writer(ctx, p, append)
}

func (d slowDriver) Stat(ctx context.Context, p string) (driver.FileInfo, error) {
	time.Sleep(d.latency)
	return d.Driver.Stat(ctx, p)
}

func (d slowDriver) List(ctx context.Context, p string) ([]string, error) {
	time.Sleep(d.latency)
	return d.Driver.List(ctx, p)
}

func (d slowDriver) Move(ctx context.Context, src, dst string) error {
	time.Sleep(d.latency)
	return d.Driver.Move(ctx, src, dst)
}

func (d slowDriver) Delete(ctx context.Context, p string) error {
	time.Sleep(d.latency)
	return d.Driver.Delete(ctx, p)
}

// sweepWatch tells when a collection begins to sweep blobs: it lists the
// blob store after its mark, before its first blob removal.
type sweepWatch struct {
	driver.Driver
	mu     sync.Mutex
	begins chan struct{} // closed when the next sweep begins
}

func (d *sweepWatch) List(ctx context.Context, p string) ([]string, error) {
	if p == "/docker/registry/v2/blobs" {
		d.mu.Lock()
		close(d.begins)
		d.begins = make(chan struct{})
		d.mu.Unlock()
	}
	return d.Driver.List(ctx, p)
}

// next returns a channel closed when the next sweep begins.
func (d *sweepWatch) next() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.begins
}
