package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
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
	"github.com/minio/minio-go/v7"

	"github.com/berth-registry/berth/storage"
)

// Online collection on MinIO: two replicas take pushes, retags and
// deletes from clients while two collectors, stores of their own on the
// bucket as `registry garbage-collect` beside the replicas would be, take
// turns collecting. Everything a client was told it pushed, and still has
// a tag, must pull intact.

const (
	// gcGrace is the grace period of the replicas and the collectors. The
	// bucket reports object times to the second, truncated, so content and
	// leases look up to a second older than they are: a promise lasts ¾ of
	// the grace period less that second, which must stay above the half
	// of it a manifest PUT may take, with room for a slow machine.
	gcGrace = 6 * time.Second
	// gcPushFor is how long the clients push at least; they go on until
	// every kind of operation was acknowledged and a collection that began
	// once their first garbage was collectable has finished, or until
	// gcPushMax.
	gcPushFor = 2 * gcGrace
	gcPushMax = 2 * time.Minute
	gcClients = 4
)

// gcOps are the operations a client cycles through (see step).
var gcOps = []string{"image", "index", "retag", "delete", "revive"}

// gcItem is an image or index a client pushed.
type gcItem struct {
	item remote.Taggable // v1.Image or v1.ImageIndex
	dg   v1.Hash
}

// gcClient is one client's view: the tags it was told it pushed and what
// they name, and what it deleted, to push again once it is garbage.
type gcClient struct {
	repo   string
	push   *testServer // where it pushes
	other  *testServer // where it retags and deletes
	rng    *rand.Rand
	tags   map[string]gcItem
	buried []gcBuried
}

type gcBuried struct {
	it gcItem
	at time.Time
}

type gcRun struct {
	t    *testing.T
	pool []v1.Layer
	seq  atomic.Int64

	mu     sync.Mutex
	done   map[string]int
	failed map[string][]string
}

func (r *gcRun) opts(t *testing.T, s *testServer) []remote.Option {
	return append(s.opts(t), remote.WithJobs(2),
		remote.WithRetryBackoff(remote.Backoff{Duration: 50 * time.Millisecond, Factor: 2, Steps: 3}))
}

// layer is a new layer of 1 to 5 KiB.
func (r *gcRun) layer(rng *rand.Rand) v1.Layer {
	b := make([]byte, 1024+rng.IntN(4096))
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return static.NewLayer(b, types.OCILayer)
}

// image is an OCI image of a pool layer and a layer of its own.
func (r *gcRun) image(rng *rand.Rand) v1.Image {
	return r.imageOf(r.pool[rng.IntN(len(r.pool))], r.layer(rng))
}

// imageOf is an OCI image of layers with a config of its own.
func (r *gcRun) imageOf(layers ...v1.Layer) v1.Image {
	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	for _, l := range layers {
		var err error
		if img, err = mutate.Append(img, mutate.Addendum{Layer: l, MediaType: types.OCILayer}); err != nil {
			panic(err)
		}
	}
	cf, err := img.ConfigFile()
	if err != nil {
		panic(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	cf.Config.Labels = map[string]string{"n": fmt.Sprint(r.seq.Add(1))}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		panic(err)
	}
	return img
}

func (r *gcRun) index(rng *rand.Rand) v1.ImageIndex {
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, arch := range []string{"amd64", "arm64"} {
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: r.image(rng),
			Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: arch}}})
	}
	return idx
}

func itemOf(x remote.Taggable) gcItem {
	raw, err := x.(partial.WithRawManifest).RawManifest()
	if err != nil {
		panic(err)
	}
	dg, _, err := v1.SHA256(bytes.NewReader(raw))
	if err != nil {
		panic(err)
	}
	return gcItem{item: x, dg: dg}
}

// write pushes it as c's repo:tag through s and reports whether the
// registry acknowledged it; a refusal is noted, not an error.
func (r *gcRun) write(c *gcClient, s *testServer, op, tag string, it gcItem) bool {
	ref := s.repo(r.t, c.repo).Tag(tag)
	var err error
	switch x := it.item.(type) {
	case v1.ImageIndex:
		err = remote.WriteIndex(ref, x, r.opts(r.t, s)...)
	case v1.Image:
		err = remote.Write(ref, x, r.opts(r.t, s)...)
	}
	r.note(op, err, ref)
	return err == nil
}

func (r *gcRun) note(op string, err error, ref name.Reference) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err == nil {
		r.done[op]++
	} else {
		r.failed[op] = append(r.failed[op], fmt.Sprintf("%s: %v", ref, err))
	}
}

func (r *gcRun) tag() string { return fmt.Sprintf("t%d", r.seq.Add(1)) }

// step runs client c's next operation.
func (r *gcRun) step(c *gcClient, i int) {
	switch i % 5 {
	case 0: // a new image
		it := itemOf(r.image(c.rng))
		if tag := r.tag(); r.write(c, c.push, "image", tag, it) {
			c.tags[tag] = it
		}
	case 1: // a new index
		it := itemOf(r.index(c.rng))
		if tag := r.tag(); r.write(c, c.push, "index", tag, it) {
			c.tags[tag] = it
		}
	case 2: // a tag moved, on the other replica, to another of c's items
		if len(c.tags) < 2 {
			return
		}
		keys := slices.Sorted(func(yield func(string) bool) {
			for k := range c.tags {
				if !yield(k) {
					return
				}
			}
		})
		from, to := keys[c.rng.IntN(len(keys))], keys[c.rng.IntN(len(keys))]
		it := c.tags[to]
		ref := c.other.repo(r.t, c.repo).Tag(from)
		err := remote.Tag(ref, it.item, r.opts(r.t, c.other)...)
		r.note("retag", err, ref)
		if err == nil {
			c.tags[from] = it
		}
	case 3: // pushed, then deleted on the other replica: garbage once the grace period is over
		var it gcItem
		if c.rng.IntN(2) == 0 {
			it = itemOf(r.image(c.rng))
		} else {
			it = itemOf(r.index(c.rng))
		}
		if !r.write(c, c.push, "doomed", r.tag(), it) {
			return
		}
		ref := c.other.repo(r.t, c.repo).Digest(it.dg.String())
		err := remote.Delete(ref, r.opts(r.t, c.other)...)
		r.note("delete", err, ref)
		if err == nil {
			c.buried = append(c.buried, gcBuried{it: it, at: time.Now()})
		}
	case 4: // pushed again, on either replica, once it may have been collected
		if len(c.buried) == 0 || time.Since(c.buried[0].at) < gcGrace {
			return
		}
		it := c.buried[0].it
		c.buried = c.buried[1:]
		s := c.push
		if c.rng.IntN(2) == 0 {
			s = c.other
		}
		if tag := r.tag(); r.write(c, s, "revive", tag, it) {
			c.tags[tag] = it
		}
	}
}

// verify pulls repo:tag from s and checks that it is it, hashing every
// manifest and blob it is made of.
func verify(t *testing.T, s *testServer, repo, tag string, it gcItem) error {
	ref := s.repo(t, repo).Tag(tag)
	switch want := it.item.(type) {
	case v1.ImageIndex:
		got, err := remote.Index(ref, s.opts(t)...)
		if err != nil {
			return err
		}
		if dg, err := got.Digest(); err != nil || dg != it.dg {
			return fmt.Errorf("index %s, want %s (%v)", dg, it.dg, err)
		}
		im, err := want.IndexManifest()
		if err != nil {
			return err
		}
		for _, d := range im.Manifests {
			child, err := got.Image(d.Digest)
			if err != nil {
				return fmt.Errorf("child %s: %w", d.Digest, err)
			}
			if err := verifyImage(child, d.Digest); err != nil {
				return fmt.Errorf("child %s: %w", d.Digest, err)
			}
		}
		return nil
	case v1.Image:
		got, err := remote.Image(ref, s.opts(t)...)
		if err != nil {
			return err
		}
		return verifyImage(got, it.dg)
	}
	return errors.New("neither image nor index")
}

func verifyImage(img v1.Image, want v1.Hash) error {
	if dg, err := img.Digest(); err != nil || dg != want {
		return fmt.Errorf("image %s, want %s (%v)", dg, want, err)
	}
	m, err := img.Manifest()
	if err != nil {
		return err
	}
	cfg, err := img.RawConfigFile()
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	if got := hashOf(cfg); got != m.Config.Digest.String() {
		return fmt.Errorf("config hashes to %s, want %s", got, m.Config.Digest)
	}
	layers, err := img.Layers()
	if err != nil {
		return err
	}
	for i, l := range layers {
		rc, err := l.Compressed()
		if err != nil {
			return fmt.Errorf("layer %d: %w", i, err)
		}
		h := sha256.New()
		_, err = io.Copy(h, rc)
		rc.Close()
		if err != nil {
			return fmt.Errorf("layer %d: %w", i, err)
		}
		if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != m.Layers[i].Digest.String() {
			return fmt.Errorf("layer %d hashes to %s, want %s", i, got, m.Layers[i].Digest)
		}
	}
	return nil
}

func hashOf(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// check pulls every tag of every client, alternating replicas, and
// returns what failed.
func checkTags(t *testing.T, clients []*gcClient, reps []*testServer) []string {
	var broken []string
	n := 0
	for _, c := range clients {
		for _, tag := range slices.Sorted(func(yield func(string) bool) {
			for k := range c.tags {
				if !yield(k) {
					return
				}
			}
		}) {
			n++
			if err := verify(t, reps[n%len(reps)], c.repo, tag, c.tags[tag]); err != nil {
				broken = append(broken, fmt.Sprintf("%s:%s: %v", c.repo, tag, err))
			}
		}
	}
	t.Logf("checked %d tags", n)
	return broken
}

// bucketTree is what the bucket holds of the registry's tree, read with
// the store's client and not with the storage package.
type bucketTree struct {
	blobs     map[string]bool            // digests in the blob store
	revisions map[string][]string        // repository → manifest digests it holds
	tags      map[string]map[string]bool // repository → digests its tags name
}

func (b *s3Bucket) tree(t *testing.T) bucketTree {
	t.Helper()
	tr := bucketTree{blobs: map[string]bool{}, revisions: map[string][]string{}, tags: map[string]map[string]bool{}}
	client := b.srv.Client(t)
	for o := range client.ListObjects(t.Context(), b.name, minio.ListObjectsOptions{Prefix: b.key("blobs") + "/", Recursive: true}) {
		if o.Err != nil {
			t.Fatal(o.Err)
		}
		rest := strings.TrimPrefix(o.Key, b.key("blobs")+"/") // sha256/<hh>/<hex>/data
		parts := strings.Split(rest, "/")
		if len(parts) != 4 || parts[3] != "data" {
			t.Fatalf("unexpected object %s in the blob store", o.Key)
		}
		tr.blobs[parts[0]+":"+parts[2]] = true
	}
	for o := range client.ListObjects(t.Context(), b.name, minio.ListObjectsOptions{Prefix: b.key("repositories") + "/", Recursive: true}) {
		if o.Err != nil {
			t.Fatal(o.Err)
		}
		rest := strings.TrimPrefix(o.Key, b.key("repositories")+"/")
		if repo, link, ok := strings.Cut(rest, "/_manifests/revisions/"); ok && strings.HasSuffix(link, "/link") {
			tr.revisions[repo] = append(tr.revisions[repo], b.get(t, o.Key))
		} else if repo, link, ok := strings.Cut(rest, "/_manifests/tags/"); ok && strings.HasSuffix(link, "/current/link") {
			if tr.tags[repo] == nil {
				tr.tags[repo] = map[string]bool{}
			}
			tr.tags[repo][b.get(t, o.Key)] = true
		}
	}
	return tr
}

func (b *s3Bucket) get(t *testing.T, key string) string {
	t.Helper()
	obj, err := b.srv.Client(t).GetObject(t.Context(), b.name, key, minio.GetObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer obj.Close()
	data, err := io.ReadAll(obj)
	if err != nil {
		t.Fatalf("%s: %v", key, err)
	}
	return strings.TrimSpace(string(data))
}

// references returns what manifest dg references (config, layers,
// children).
func (b *s3Bucket) references(t *testing.T, dg string) []string {
	t.Helper()
	alg, hx, _ := strings.Cut(dg, ":")
	var m struct {
		Config    *v1.Descriptor
		Layers    []v1.Descriptor
		Manifests []v1.Descriptor
	}
	if err := json.Unmarshal([]byte(b.get(t, b.key("blobs/"+alg+"/"+hx[:2]+"/"+hx+"/data"))), &m); err != nil {
		t.Fatalf("manifest %s: %v", dg, err)
	}
	var out []string
	if m.Config != nil {
		out = append(out, m.Config.Digest.String())
	}
	for _, d := range append(m.Layers, m.Manifests...) {
		out = append(out, d.Digest.String())
	}
	return out
}

// referenced returns the blobs some manifest a repository holds is, or
// references.
func (b *s3Bucket) referenced(t *testing.T, tr bucketTree) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	for _, dgs := range tr.revisions {
		for _, dg := range dgs {
			out[dg] = true
			for _, r := range b.references(t, dg) {
				out[r] = true
			}
		}
	}
	return out
}

func TestOnlineGCOnMinIO(t *testing.T) {
	if testing.Short() {
		t.Skip("pushes for several grace periods")
	}
	b := newS3Bucket(t)
	graced := func(c *Config) { c.Storage.GC.GracePeriod = gcGrace }
	reps := []*testServer{b.startReplica(t, graced), b.startReplica(t, graced)}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	r := &gcRun{t: t, done: map[string]int{}, failed: map[string][]string{}}
	rng := rand.New(rand.NewPCG(seed, 0))
	for range 6 {
		r.pool = append(r.pool, r.layer(rng))
	}
	pool := r.imageOf(r.pool...)
	poolClient := &gcClient{repo: "gc/pool", tags: map[string]gcItem{}}
	if !r.write(poolClient, reps[0], "pool", "v1", itemOf(pool)) {
		t.Fatalf("pushing the pool: %v", r.failed)
	}
	poolClient.tags["v1"] = itemOf(pool)

	clients := []*gcClient{poolClient}
	for i := range gcClients {
		clients = append(clients, &gcClient{repo: fmt.Sprintf("gc/c%d", i), push: reps[i%2], other: reps[(i+1)%2],
			rng: rand.New(rand.NewPCG(seed, uint64(i)+1)), tags: map[string]gcItem{}})
	}
	// Garbage from the start, collectable once the grace period is over.
	var wg sync.WaitGroup
	for _, c := range clients[1:] {
		wg.Go(func() {
			for range 2 {
				r.step(c, 3)
			}
		})
	}
	wg.Wait()

	// Two collectors, back to back; the store's lock lets one run at a time.
	// The garbage is collectable a grace period from now (and a second,
	// the bucket's time resolution).
	collectable := time.Now().Add(gcGrace + time.Second)
	var (
		collections, skipped, late atomic.Int64
		mu                         sync.Mutex
		during                     storage.GCReport
	)
	stop := make(chan struct{})
	var gcs sync.WaitGroup
	for range 2 {
		store := b.store(t, gcGrace)
		gcs.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				rep, err := store.CollectGarbage(context.Background(), storage.GCOptions{DeleteUntagged: true})
				if errors.Is(err, storage.ErrGCRunning) {
					skipped.Add(1)
					time.Sleep(100 * time.Millisecond)
					continue
				}
				if err != nil {
					t.Errorf("collection: %v", err)
					return
				}
				collections.Add(1)
				if time.Now().Add(-rep.Duration).After(collectable) {
					late.Add(1)
				}
				mu.Lock()
				during.BlobsDeleted += rep.BlobsDeleted
				during.ManifestsDeleted += rep.ManifestsDeleted
				during.Kept += rep.Kept
				during.Failed += rep.Failed
				mu.Unlock()
				t.Logf("collection: %d manifests, %d blobs; deleted %d blobs, %d manifests; kept %d; took %v",
					rep.Manifests, rep.Blobs, rep.BlobsDeleted, rep.ManifestsDeleted, rep.Kept, rep.Duration.Round(time.Millisecond))
			}
		})
	}

	start := time.Now()
	enough := func() bool {
		if time.Since(start) > gcPushMax {
			return true
		}
		r.mu.Lock()
		defer r.mu.Unlock()
		for _, op := range gcOps {
			if r.done[op] == 0 {
				return false
			}
		}
		return time.Since(start) > gcPushFor && late.Load() > 0
	}
	for _, c := range clients[1:] {
		wg.Go(func() {
			for i := 0; !enough(); i++ {
				r.step(c, i)
			}
		})
	}
	wg.Wait()
	close(stop)
	gcs.Wait()
	t.Logf("pushes for %v: %v; %d collections (%d begun once garbage was collectable), %d skipped for the other's lock; during the pushes they deleted %d blobs and %d manifests, kept %d",
		time.Since(start).Round(time.Millisecond), r.done, collections.Load(), late.Load(), skipped.Load(), during.BlobsDeleted, during.ManifestsDeleted, during.Kept)
	for op, errs := range r.failed {
		t.Logf("%d %s refused, e.g. %s", len(errs), op, errs[0])
	}
	for _, op := range gcOps {
		if r.done[op] == 0 {
			t.Errorf("no %s was acknowledged: the test did not exercise it", op)
		}
	}
	if late.Load() == 0 {
		t.Errorf("no collection began after the first garbage was collectable")
	}
	if during.BlobsDeleted == 0 || during.ManifestsDeleted == 0 {
		t.Errorf("the collections during the pushes deleted %d blobs and %d manifests: they exercised nothing", during.BlobsDeleted, during.ManifestsDeleted)
	}
	if skipped.Load() == 0 {
		t.Errorf("no collection found the other's lock")
	}
	if during.Failed != 0 {
		t.Errorf("%d removals failed", during.Failed)
	}
	for _, s := range checkTags(t, clients, reps) {
		t.Errorf("acknowledged but broken: %s", s)
	}
	if t.Failed() {
		return
	}

	// Fresh garbage, which no collection has seen: each client pushes and
	// deletes once more. Once the grace period is over for everything (and
	// the second the bucket's times may lag), a last collection leaves
	// exactly what the tags reach.
	for _, c := range clients[1:] {
		r.step(c, 3)
	}
	time.Sleep(gcGrace + 1500*time.Millisecond)
	before := b.tree(t)
	referenced := b.referenced(t, before)
	garbage := 0
	for dg := range before.blobs {
		if !referenced[dg] {
			garbage++
		}
	}
	if garbage == 0 {
		t.Fatalf("no blob is garbage before the final collection, though the clients just deleted images")
	}
	rep, err := b.store(t, gcGrace).CollectGarbage(context.Background(), storage.GCOptions{DeleteUntagged: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("final collection: deleted %d blobs and %d manifests (%d blobs were referenced by no manifest before it)", rep.BlobsDeleted, rep.ManifestsDeleted, garbage)
	if rep.BlobsDeleted < garbage {
		t.Errorf("the final collection deleted %d blobs; %d were referenced by no manifest", rep.BlobsDeleted, garbage)
	}
	after := b.tree(t)
	referenced = b.referenced(t, after)
	for dg := range after.blobs {
		if !referenced[dg] {
			t.Errorf("blob %s is stored but no manifest references it", dg)
		}
	}
	for repo, dgs := range after.revisions {
		reach := map[string]bool{}
		for dg := range after.tags[repo] {
			reach[dg] = true
			for _, child := range b.references(t, dg) {
				reach[child] = true
			}
		}
		for _, dg := range dgs {
			if !reach[dg] {
				t.Errorf("manifest %s of %s is kept but no tag reaches it", dg, repo)
			}
		}
	}
	t.Logf("after the final collection: %d blobs, all referenced", len(after.blobs))
	for _, s := range checkTags(t, clients, reps) {
		t.Errorf("after the final collection: %s", s)
	}
}

// TestPurgeUploadsOnMinIO: `registry purge-uploads` on the bucket, beside
// two replicas, removes a session abandoned after a chunk was kept (its
// multipart upload aborted) and keeps one that still grows through the
// other replica, which then completes.
func TestPurgeUploadsOnMinIO(t *testing.T) {
	b := newS3Bucket(t)
	ra, rb := b.startReplica(t, nil), b.startReplica(t, nil)
	const name = "team/purge"
	const age = 2 * time.Second
	begin := func(r *testServer, chunk []byte) (string, string) {
		resp, _ := r.do(t, http.MethodPost, r.url("/v2/"+name+"/blobs/uploads/"), nil, nil)
		p := uploadPathOf(t, resp)
		resp, _ = r.do(t, http.MethodPatch, r.url(p), chunkHeader(0, len(chunk)-1), chunk)
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("PATCH: %d", resp.StatusCode)
		}
		return uploadPathOf(t, resp), resp.Header.Get("Docker-Upload-UUID")
	}
	abandonedChunk, _ := randomBlob(replicaChunk + 1)
	abandoned, abandonedID := begin(ra, abandonedChunk)
	blob, dg := randomBlob(2*replicaChunk + 5)
	active, activeID := begin(rb, blob[:replicaChunk+3])
	if n := len(b.uploads(t)); n != 2 {
		t.Fatalf("%d multipart uploads in progress, want 2", n)
	}

	time.Sleep(age + 1500*time.Millisecond) // the bucket's times are whole seconds
	resp, _ := ra.do(t, http.MethodPatch, ra.url(active), chunkHeader(replicaChunk+3, 2*replicaChunk-1), blob[replicaChunk+3:2*replicaChunk])
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("PATCH of the active session on A: %d", resp.StatusCode)
	}
	active = uploadPathOf(t, resp)

	cfg := filepath.Join(t.TempDir(), "config.yml")
	yml := fmt.Sprintf(`version: 0.1
storage:
  s3: {regionendpoint: %q, bucket: %q, forcepathstyle: true, secure: false, accesskey: %q, secretkey: %q, rootdirectory: %q, chunksize: %d}
  maintenance:
    uploadpurging: {age: %v}
`, b.cfg.RegionEndpoint, b.cfg.Bucket, b.cfg.AccessKey, b.cfg.SecretKey, b.cfg.RootDirectory, b.cfg.ChunkSize, age)
	if err := os.WriteFile(cfg, []byte(yml), 0o600); err != nil {
		t.Fatal(err)
	}
	out := mustRun(t, "purge-uploads", cfg)
	if !strings.Contains(out, "removed upload "+name+" "+abandonedID+"\n") || !strings.Contains(out, "removed 1 of 2 upload sessions") {
		t.Errorf("purge-uploads:\n%s", out)
	}
	if resp, _ := rb.do(t, http.MethodGet, rb.url(abandoned), nil, nil); resp.StatusCode != http.StatusNotFound {
		t.Errorf("status of the purged session on B: %d, want 404", resp.StatusCode)
	}
	left := b.uploads(t)
	if len(left) != 1 || len(left[b.key("repositories/"+name+"/_uploads/"+activeID+"/data")]) != 1 {
		t.Errorf("multipart uploads after the purge: %v, want only the active session's", left)
	}
	finishUpload(t, b, rb, name, active, blob, dg, 2*replicaChunk)
}
