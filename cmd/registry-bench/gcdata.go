package main

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"
)

// gcdata writes a registry's data directory straight to disk, in CNCF
// Distribution's layout, for measuring garbage collection: no registry
// could push 100,000 blobs in the minutes a measurement should wait. The
// shape of what it writes:
//
//   - a pool of base layers (1 % of the blobs, at most one per
//     repository) that images of many repositories share, the popular ones
//     far more often;
//   - per repository one tagged image or more (a manifest, a config, one
//     or two base layers and one to three layers of its own), tagged v1,
//     v2, … and the newest also latest;
//   - untagged images: manifests that latest pointed at once (its index
//     still lists them) and no tag points at now, which only
//     --delete-untagged removes;
//   - deleted images: the revision link removed and its directory left, as
//     Distribution's DELETE leaves it, the layer links and latest's index
//     entry left too;
//   - orphan layers: blobs linked into a repository by a push whose
//     manifest never came.
//
// Deleted images and orphans make up the --unreferenced fraction of the
// blobs (a quarter of it orphans). Every file's mtime is set --age in the
// past, so no grace period protects it. Contents are random (ChaCha8 from
// the seed), so the same flags write the same directory.

// gcDataOptions are gcdata's flags.
type gcDataOptions struct {
	Dir          string
	Repos        int
	Blobs        int     // distinct blobs, manifests included
	Unreferenced float64 // fraction of the blobs no manifest references
	Untagged     float64 // fraction of the live images no tag points at
	Seed         uint64
	Age          time.Duration // how far in the past every file's mtime is
	Workers      int
}

// gcDataSummary is what gcdata wrote and what a collection of it should
// remove.
type gcDataSummary struct {
	Repos        int   `json:"repos"`
	Blobs        int   `json:"blobs"`
	Bytes        int64 `json:"bytes"`
	PoolLayers   int   `json:"pool_layers"`
	Tagged       int   `json:"tagged_images"`
	Untagged     int   `json:"untagged_images"`
	Deleted      int   `json:"deleted_images"`
	OrphanLayers int   `json:"orphan_layers"`
	LayerLinks   int   `json:"layer_links"`
	Files        int64 `json:"files"` // blobs and links
	// What a collection removes, and with --delete-untagged.
	Unreferenced              int     `json:"unreferenced"`
	UnreferencedBytes         int64   `json:"unreferenced_bytes"`
	UnreferencedUntagged      int     `json:"unreferenced_delete_untagged"`
	UnreferencedUntaggedBytes int64   `json:"unreferenced_delete_untagged_bytes"`
	Seconds                   float64 `json:"seconds"`
}

type blobKind uint8

const (
	kindPool blobKind = iota
	kindLayer
	kindOrphan
	kindConfig
	kindManifest
)

type imageState uint8

const (
	imageTagged imageState = iota
	imageUntagged
	imageDeleted
)

// genBlob is one blob of the plan. Random blobs have their size planned;
// configs and manifests get theirs, and every blob its digest, when
// written.
type genBlob struct {
	kind  blobKind
	size  int64
	dg    digest.Digest
	owner int // the image of a config, manifest or own layer; the repository of an orphan
}

type genImage struct {
	repo             int
	state            imageState
	manifest, config int   // blob indexes
	layers           []int // blob indexes, base layers first
	tags             []string
}

// gcPlan is the whole directory before it is written.
type gcPlan struct {
	opt       gcDataOptions
	blobs     []genBlob
	images    []genImage
	repoNames []string
	repoImgs  [][]int // images of each repository, in push order
	orphans   [][]int // orphan blobs linked into each repository
}

func gcDataCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o := gcDataOptions{Repos: 10000, Blobs: 100000, Unreferenced: 0.2, Untagged: 0.1, Seed: 1,
		Age: 30 * 24 * time.Hour, Workers: 4 * runtime.NumCPU()}
	fs := flag.NewFlagSet("gcdata", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.Dir, "dir", "", "data directory to write (the registry's rootdirectory); must not exist or be empty")
	fs.IntVar(&o.Repos, "repos", o.Repos, "repositories")
	fs.IntVar(&o.Blobs, "blobs", o.Blobs, "distinct blobs in total, manifests and configs included")
	fs.Float64Var(&o.Unreferenced, "unreferenced", o.Unreferenced, "fraction of the blobs that no manifest references (deleted images and orphan layers)")
	fs.Float64Var(&o.Untagged, "untagged", o.Untagged, "fraction of the remaining images that no tag points at")
	fs.Uint64Var(&o.Seed, "seed", o.Seed, "seed of the random shape and contents")
	fs.DurationVar(&o.Age, "age", o.Age, "age every file's mtime is set to")
	fs.IntVar(&o.Workers, "workers", o.Workers, "files written at once")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if o.Dir == "" {
		return errors.New("gcdata needs --dir")
	}
	sum, err := writeGCData(ctx, o)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote %d blobs (%d bytes) and %d links of %d repositories in %.1f s; a collection should remove %d blobs, %d with --delete-untagged\n",
		sum.Blobs, sum.Bytes, sum.Files-int64(sum.Blobs), sum.Repos, sum.Seconds, sum.Unreferenced, sum.UnreferencedUntagged)
	b, _ := json.Marshal(sum)
	fmt.Fprintf(stdout, "%s\n", b)
	return nil
}

// writeGCData plans the directory of o and writes it.
func writeGCData(ctx context.Context, o gcDataOptions) (gcDataSummary, error) {
	t0 := time.Now()
	p, err := planGCData(o)
	if err != nil {
		return gcDataSummary{}, err
	}
	if entries, err := os.ReadDir(o.Dir); err == nil && len(entries) > 0 {
		return gcDataSummary{}, fmt.Errorf("%s is not empty", o.Dir)
	}
	w := &gcWriter{p: p, root: filepath.Join(o.Dir, "docker", "registry", "v2"), mtime: time.Now().Add(-o.Age)}
	if err := w.write(ctx); err != nil {
		return gcDataSummary{}, err
	}
	sum := p.summary()
	sum.Files, sum.LayerLinks = w.files.Load(), int(w.layerLinks.Load())
	sum.Seconds = time.Since(t0).Seconds()
	return sum, nil
}

// planGCData decides every blob, image and repository.
func planGCData(o gcDataOptions) (*gcPlan, error) {
	switch {
	case o.Repos < 1 || o.Blobs < 1:
		return nil, errors.New("--repos and --blobs must be positive")
	case o.Unreferenced < 0 || o.Unreferenced >= 1 || o.Untagged < 0 || o.Untagged >= 1:
		return nil, errors.New("--unreferenced and --untagged are fractions in [0, 1)")
	case o.Workers < 1:
		return nil, errors.New("--workers must be positive")
	}
	rng := rand.New(rand.NewPCG(o.Seed, 0x6763_6461_7461))
	p := &gcPlan{opt: o, repoImgs: make([][]int, o.Repos), orphans: make([][]int, o.Repos)}
	for i := range o.Repos {
		p.repoNames = append(p.repoNames, fmt.Sprintf("team%02d/app%05d", i%100, i))
	}
	pool := max(1, min(o.Blobs/100, o.Repos))
	unref := int(math.Round(float64(o.Blobs) * o.Unreferenced))
	orphans := unref / 4
	deletedBudget := unref - orphans
	live := o.Blobs - pool - unref
	if live < 2*o.Repos {
		return nil, fmt.Errorf("%d blobs are too few for %d repositories: each needs a tagged image (a manifest and a config at least) and %d blobs are unreferenced or base layers",
			o.Blobs, o.Repos, pool+unref)
	}
	for range pool {
		p.addBlob(rng, kindPool, -1)
	}
	liveImgs, left := p.addImages(rng, live, o.Repos, imageTagged)
	orphans += left
	deleted, left := p.addImages(rng, deletedBudget, 0, imageDeleted)
	orphans += left
	for range orphans {
		repo := rng.IntN(o.Repos)
		p.orphans[repo] = append(p.orphans[repo], p.addBlob(rng, kindOrphan, repo))
	}

	// Each repository's first image is tagged; the rest go to random
	// repositories, some of them untagged.
	extra := liveImgs[o.Repos:]
	untagged := min(len(extra), int(math.Round(float64(len(liveImgs))*o.Untagged)))
	for i, im := range liveImgs {
		repo := i
		if i >= o.Repos {
			repo = rng.IntN(o.Repos)
		}
		p.images[im].repo = repo
		if i >= o.Repos && i-o.Repos < untagged {
			p.images[im].state = imageUntagged
		}
	}
	for _, im := range deleted {
		p.images[im].repo = rng.IntN(o.Repos)
	}
	// Base layers: every pool layer is one of a tagged image's (the first
	// images of the repositories go round the pool), the others are drawn
	// with a skew towards the first, as popular bases are.
	for i, im := range append(liveImgs, deleted...) {
		n := 1 + rng.IntN(2)
		var base []int
		if i < o.Repos {
			base = append(base, i%pool)
		}
		for len(base) < min(n, pool) {
			u := rng.Float64()
			b := int(float64(pool) * u * u * u)
			if !contains(base, b) {
				base = append(base, b)
			}
		}
		p.images[im].layers = append(base, p.images[im].layers...)
	}
	for _, im := range append(liveImgs, deleted...) {
		r := p.images[im].repo
		p.repoImgs[r] = append(p.repoImgs[r], im)
	}
	// Tags: v1, v2, … on the tagged images in push order, latest on the
	// newest; latest's index lists the others too, as a tag that moved.
	for r, imgs := range p.repoImgs {
		n, last := 0, -1
		for _, im := range imgs {
			if p.images[im].state == imageTagged {
				n++
				p.images[im].tags = append(p.images[im].tags, "v"+strconv.Itoa(n))
				last = im
			}
		}
		if last < 0 {
			return nil, fmt.Errorf("internal error: repository %d has no tagged image", r)
		}
		p.images[last].tags = append(p.images[last].tags, "latest")
	}
	return p, nil
}

func contains(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// addBlob plans a blob and returns its index. Random blobs are 256 bytes
// to 4 KiB.
func (p *gcPlan) addBlob(rng *rand.Rand, kind blobKind, owner int) int {
	b := genBlob{kind: kind, owner: owner}
	if kind == kindPool || kind == kindLayer || kind == kindOrphan {
		b.size = 256 + rng.Int64N(4096-256)
	}
	p.blobs = append(p.blobs, b)
	return len(p.blobs) - 1
}

// addImages plans images that use budget blobs of their own (a manifest, a
// config and one to three layers each), at least minImages of them, and
// returns them and the blobs left over (0 or 1).
func (p *gcPlan) addImages(rng *rand.Rand, budget, minImages int, state imageState) (imgs []int, left int) {
	for budget >= 2 {
		owed := max(0, minImages-len(imgs)-1) // images still owed after this one
		k := min(1+rng.IntN(3), budget-2-2*owed)
		if rest := budget - 2 - k; rest == 1 {
			k++ // one blob makes no image
		}
		im := len(p.images)
		g := genImage{state: state}
		g.manifest = p.addBlob(rng, kindManifest, im)
		g.config = p.addBlob(rng, kindConfig, im)
		for range k {
			g.layers = append(g.layers, p.addBlob(rng, kindLayer, im))
		}
		p.images = append(p.images, g)
		imgs = append(imgs, im)
		budget -= 2 + k
	}
	return imgs, budget
}

// summary counts the plan and marks it as a collection does: what the kept
// manifests reference stays, every other blob goes.
func (p *gcPlan) summary() gcDataSummary {
	s := gcDataSummary{Repos: len(p.repoNames), Blobs: len(p.blobs)}
	for _, b := range p.blobs {
		s.Bytes += b.size
		switch b.kind {
		case kindPool:
			s.PoolLayers++
		case kindOrphan:
			s.OrphanLayers++
		}
	}
	for _, im := range p.images {
		switch im.state {
		case imageTagged:
			s.Tagged++
		case imageUntagged:
			s.Untagged++
		case imageDeleted:
			s.Deleted++
		}
	}
	s.Unreferenced, s.UnreferencedBytes = p.unreferenced(false)
	s.UnreferencedUntagged, s.UnreferencedUntaggedBytes = p.unreferenced(true)
	return s
}

func (p *gcPlan) unreferenced(deleteUntagged bool) (n int, bytes int64) {
	reachable := make([]bool, len(p.blobs))
	for _, im := range p.images {
		if im.state == imageDeleted || deleteUntagged && im.state == imageUntagged {
			continue
		}
		reachable[im.manifest], reachable[im.config] = true, true
		for _, l := range im.layers {
			reachable[l] = true
		}
	}
	for i, b := range p.blobs {
		if !reachable[i] {
			n++
			bytes += b.size
		}
	}
	return n, bytes
}

// gcWriter writes a plan.
type gcWriter struct {
	p          *gcPlan
	root       string // <dir>/docker/registry/v2
	mtime      time.Time
	files      atomic.Int64
	layerLinks atomic.Int64
}

func (w *gcWriter) write(ctx context.Context) error {
	// Configs need their layers' digests and manifests their config's, so
	// random blobs go first, then configs, then manifests, then links.
	var random, configs, manifests []int
	for i, b := range w.p.blobs {
		switch b.kind {
		case kindConfig:
			configs = append(configs, i)
		case kindManifest:
			manifests = append(manifests, i)
		default:
			random = append(random, i)
		}
	}
	steps := []struct {
		n  int
		fn func(i int) error
	}{
		{len(random), func(i int) error { return w.writeBlob(random[i], w.randomContent(random[i])) }},
		{len(configs), func(i int) error { return w.writeBlob(configs[i], w.configContent(configs[i])) }},
		{len(manifests), func(i int) error {
			b, err := w.manifestContent(manifests[i])
			if err != nil {
				return err
			}
			return w.writeBlob(manifests[i], b)
		}},
		{len(w.p.repoNames), w.writeRepo},
	}
	for _, s := range steps {
		if err := w.parallel(ctx, s.n, s.fn); err != nil {
			return err
		}
	}
	return nil
}

// parallel runs fn(0..n-1) on the writer's workers, in batches.
func (w *gcWriter) parallel(ctx context.Context, n int, fn func(i int) error) error {
	const batch = 64
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(w.p.opt.Workers)
	for start := 0; start < n; start += batch {
		if gctx.Err() != nil {
			break
		}
		g.Go(func() error {
			for i := start; i < min(n, start+batch); i++ {
				if err := fn(i); err != nil {
					return err
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	return ctx.Err()
}

func (w *gcWriter) randomContent(i int) []byte {
	var seed [32]byte
	binary.LittleEndian.PutUint64(seed[:], w.p.opt.Seed)
	binary.LittleEndian.PutUint64(seed[8:], uint64(i))
	b := make([]byte, w.p.blobs[i].size)
	_, _ = rand.NewChaCha8(seed).Read(b)
	return b
}

// configContent is a small OCI image config; its diff_ids are the layers'
// digests (the layers are random bytes, not archives) and a label makes
// it unique.
func (w *gcWriter) configContent(i int) []byte {
	im := &w.p.images[w.p.blobs[i].owner]
	cfg := v1.Image{
		Platform: v1.Platform{Architecture: "amd64", OS: "linux"},
		Config:   v1.ImageConfig{Labels: map[string]string{"berth.gcdata.image": strconv.Itoa(w.p.blobs[i].owner)}},
		RootFS:   v1.RootFS{Type: "layers"},
	}
	for _, l := range im.layers {
		cfg.RootFS.DiffIDs = append(cfg.RootFS.DiffIDs, w.p.blobs[l].dg)
	}
	b, _ := json.Marshal(cfg)
	return b
}

func (w *gcWriter) manifestContent(i int) ([]byte, error) {
	im := &w.p.images[w.p.blobs[i].owner]
	desc := func(mediaType string, j int) (v1.Descriptor, error) {
		b := w.p.blobs[j]
		if b.dg == "" {
			return v1.Descriptor{}, fmt.Errorf("internal error: blob %d is not written yet", j)
		}
		return v1.Descriptor{MediaType: mediaType, Digest: b.dg, Size: b.size}, nil
	}
	m := v1.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: v1.MediaTypeImageManifest}
	var err error
	if m.Config, err = desc(v1.MediaTypeImageConfig, im.config); err != nil {
		return nil, err
	}
	for _, l := range im.layers {
		d, err := desc(v1.MediaTypeImageLayerGzip, l)
		if err != nil {
			return nil, err
		}
		m.Layers = append(m.Layers, d)
	}
	return json.Marshal(m)
}

// writeBlob writes blob i's content under blobs/ and records its digest
// and size. Each blob is written by one goroutine and read by later steps
// only.
func (w *gcWriter) writeBlob(i int, content []byte) error {
	sum := sha256.Sum256(content)
	h := hex.EncodeToString(sum[:])
	w.p.blobs[i].dg = digest.NewDigestFromEncoded(digest.SHA256, h)
	w.p.blobs[i].size = int64(len(content))
	return w.writeFile(filepath.Join(w.root, "blobs", "sha256", h[:2], h, "data"), content)
}

// writeRepo writes repository r's links.
func (w *gcWriter) writeRepo(r int) error {
	base := filepath.Join(w.root, "repositories", filepath.FromSlash(w.p.repoNames[r]))
	link := func(dir string, dg digest.Digest) error {
		return w.writeFile(filepath.Join(dir, "link"), []byte(dg.String()))
	}
	linked := map[int]bool{} // images of a repository may share base layers
	layer := func(j int) error {
		if linked[j] {
			return nil
		}
		linked[j] = true
		w.layerLinks.Add(1)
		return link(filepath.Join(base, "_layers", "sha256", w.p.blobs[j].dg.Encoded()), w.p.blobs[j].dg)
	}
	var latest string
	var history []digest.Digest // manifests latest pointed at before
	for _, i := range w.p.repoImgs[r] {
		im := &w.p.images[i]
		mdg := w.p.blobs[im.manifest].dg
		rev := filepath.Join(base, "_manifests", "revisions", "sha256", mdg.Encoded())
		if im.state == imageDeleted {
			// DELETE removes the link and leaves its directory.
			if err := os.MkdirAll(rev, 0o755); err != nil {
				return err
			}
		} else if err := link(rev, mdg); err != nil {
			return err
		}
		for _, tag := range im.tags {
			t := filepath.Join(base, "_manifests", "tags", tag)
			if err := link(filepath.Join(t, "current"), mdg); err != nil {
				return err
			}
			if err := link(filepath.Join(t, "index", "sha256", mdg.Encoded()), mdg); err != nil {
				return err
			}
			if tag == "latest" {
				latest = t
			}
		}
		if len(im.tags) == 0 {
			history = append(history, mdg)
		}
		if err := layer(im.config); err != nil {
			return err
		}
		for _, l := range im.layers {
			if err := layer(l); err != nil {
				return err
			}
		}
	}
	for _, dg := range history {
		if err := link(filepath.Join(latest, "index", "sha256", dg.Encoded()), dg); err != nil {
			return err
		}
	}
	for _, j := range w.p.orphans[r] {
		if err := layer(j); err != nil {
			return err
		}
	}
	return nil
}

// writeFile writes a file with the writer's mtime, creating its directory.
func (w *gcWriter) writeFile(name string, content []byte) error {
	if err := os.WriteFile(name, content, 0o644); errors.Is(err, os.ErrNotExist) {
		if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
			return err
		}
		err = os.WriteFile(name, content, 0o644)
		if err != nil {
			return err
		}
	} else if err != nil {
		return err
	}
	w.files.Add(1)
	return os.Chtimes(name, w.mtime, w.mtime)
}
