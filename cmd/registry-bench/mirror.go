package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sync/errgroup"
)

// The mirror mode's repository and tag: bench/mirror:v1 on the upstream
// and the pushed Berth, hub/bench/mirror:v1 through the mirror.
const (
	mirrorPrefix = "hub"
	mirrorRepo   = "bench/mirror"
	mirrorTag    = "v1"
)

// mirrorCmd measures Berth as a pull-through cache on loopback over TLS,
// with go-containerregistry's remote as the client (a pull is the manifest
// by tag, the config and every layer, digests verified, --jobs layers at
// a time as Docker's max-concurrent-downloads). Four Berth processes of
// one binary: an upstream holding the image, a mirror of it under the
// prefix hub/ with fresh storage for each cold round, a mirror whose cache
// holds the image, and a Berth the image was pushed to. Per round, in
// alternating order:
//
//   - pull-cold: a first pull through a new mirror (each blob fetched from
//     the upstream while it is streamed) against a pull straight from the
//     upstream (goal: at least 0.90);
//   - pull-cached: a pull from the warm mirror against the same pull from
//     the Berth it was pushed to (goal: 1.00).
func mirrorCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("mirror", flag.ContinueOnError)
	fs.SetOutput(stderr)
	berthBin := fs.String("berth", "", "Berth's registry binary (go build ./cmd/registry)")
	workdir := fs.String("workdir", "", "directory for the certificate, the registries' data and logs (required)")
	rounds := fs.Int("rounds", 5, "rounds of each test")
	layers := fs.Int("layers", 4, "layers of the image")
	layerSize := int64(32 << 20)
	fs.Var((*byteSize)(&layerSize), "layer-size", "bytes of each layer")
	jobs := fs.Int("jobs", 3, "layers a pull downloads at once (Docker's default max-concurrent-downloads is 3)")
	var upstreamRate int64
	fs.Var((*byteSize)(&upstreamRate), "upstream-rate", "bytes per second of a link that every response from the upstream crosses, "+
		"to the mirror and to direct pulls alike (100MiB: a fast internet link); 0: loopback, unlimited")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if *berthBin == "" || *workdir == "" {
		return errors.New("mirror needs --berth and --workdir")
	}
	if *rounds < 1 || *layers < 1 || layerSize < 1 || *jobs < 1 || upstreamRate < 0 {
		return errors.New("--rounds, --layers, --layer-size and --jobs must be positive, --upstream-rate not negative")
	}
	wd, err := filepath.Abs(*workdir)
	if err != nil {
		return err
	}
	bin, err := exec.LookPath(*berthBin)
	if err != nil {
		return err
	}
	if bin, err = filepath.Abs(bin); err != nil {
		return err
	}
	setup := serverSetup{wd: wd}
	if setup.cert, setup.key, err = genCert(filepath.Join(wd, "cert")); err != nil {
		return err
	}
	m := &mirrorBench{bin: bin, setup: setup, jobs: *jobs}
	defer m.stopAll()

	upstream, err := m.start(ctx, "upstream", nil)
	if err != nil {
		return err
	}
	pushed, err := m.start(ctx, "pushed", nil)
	if err != nil {
		return err
	}
	img := newBenchImage(newBencher(defaultOptions()), *layers, layerSize)
	for _, s := range []*server{upstream, pushed} {
		if err := m.push(ctx, s, img); err != nil {
			return fmt.Errorf("pushing the image to %s: %w", s.name, err)
		}
	}
	// With a rate, the mirror and direct pulls reach the upstream through
	// one link of that bandwidth, as both would over the internet.
	if upstreamRate > 0 {
		u, err := url.Parse(upstream.url)
		if err != nil {
			return err
		}
		link, err := newRateLink(u.Host, upstreamRate)
		if err != nil {
			return err
		}
		defer link.Close()
		linked := *upstream
		linked.url = "https://" + link.Addr()
		upstream = &linked
	}
	// The mirror's upstream is the upstream Berth, whose certificate it
	// trusts through the upstream's ca key.
	mirrorEnv := []string{
		`REGISTRY_PROXY_UPSTREAMS=[{prefix: ` + mirrorPrefix + `, remoteurl: "` + upstream.url + `", ca: "` + setup.cert + `"}]`,
	}
	warm, err := m.start(ctx, "mirror-cached", mirrorEnv)
	if err != nil {
		return err
	}
	if r := m.pull(ctx, warm, mirrorPrefix+"/"+mirrorRepo, img); r.Error != "" {
		return fmt.Errorf("filling the cached mirror: %s", r.Error)
	}
	fmt.Fprintf(stderr, "image of %d layers of %s, %d rounds, %d layers at a time; upstream %s (link: %s/s, 0: unlimited), pushed %s, cached mirror %s\n",
		*layers, (*byteSize)(&layerSize), *rounds, *jobs, upstream.url, (*byteSize)(&upstreamRate), pushed.url, warm.url)

	cold := comparison{Test: "pull-cold", Unit: "MB/s"}
	cached := comparison{Test: "pull-cached", Unit: "MB/s"}
	for round := 1; round <= *rounds; round++ {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		fresh, err := m.start(ctx, "mirror-cold-"+strconv.Itoa(round), mirrorEnv)
		if err != nil {
			return err
		}
		m.alternate(ctx, stdout, &cold, round, img, side{fresh, mirrorPrefix + "/" + mirrorRepo}, side{upstream, mirrorRepo})
		// The new mirror must have stored what it streamed: else it
		// was not the cache that was measured.
		stored := storedBlobs(fresh.root)
		m.discard(fresh)
		if want := len(img.layers) + 2; stored != want {
			return fmt.Errorf("round %d: the new mirror stored %d blobs, want %d (manifest, config and layers)", round, stored, want)
		}
		m.alternate(ctx, stdout, &cached, round, img, side{warm, mirrorPrefix + "/" + mirrorRepo}, side{pushed, mirrorRepo})
	}
	fmt.Fprintln(stdout, "\nfirst pull through a new mirror (mirror) against a pull from its upstream (direct); goal: mirror/direct at least 0.90")
	writeComparison(stdout, "mirror", "direct", []comparison{cold})
	fmt.Fprintln(stdout, "\npull from the mirror's cache (mirror) against a pull of the image pushed to a Berth (direct); goal: mirror/direct 1.00")
	writeComparison(stdout, "mirror", "direct", []comparison{cached})
	fmt.Fprintln(stdout)
	for _, c := range []comparison{cold, cached} {
		fmt.Fprintf(stdout, "%s: mirror/direct %s (median of %d and %d rounds)\n", c.Test, ratioString(c), len(values(c.A)), len(values(c.B)))
	}
	return nil
}

// ratioString is the ratio of the medians of a comparison, or "-" when a
// side has no successful round.
func ratioString(c comparison) string {
	a, b := median(values(c.A)), median(values(c.B))
	if a <= 0 || b <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f", a/b)
}

// mirrorBench holds the mirror mode's servers.
type mirrorBench struct {
	bin     string
	setup   serverSetup
	jobs    int
	servers []*server
}

// side is a registry and the repository a pull asks it for.
type side struct {
	s    *server
	repo string
}

// start starts a Berth under name with fresh storage and extra env, and
// waits until it answers.
func (m *mirrorBench) start(ctx context.Context, name string, env []string) (*server, error) {
	st := m.setup
	st.env = env
	if err := os.RemoveAll(filepath.Join(st.wd, name+"-data")); err != nil {
		return nil, err
	}
	s, err := startBerth(ctx, m.bin, name, st)
	if err != nil {
		return nil, err
	}
	m.servers = append(m.servers, s)
	return s, s.waitReady(ctx, st.cert)
}

// discard stops s and removes its storage.
func (m *mirrorBench) discard(s *server) {
	s.stop()
	_ = os.RemoveAll(s.root)
	m.servers = slices.DeleteFunc(m.servers, func(o *server) bool { return o == s })
}

// storedBlobs counts the blobs in the storage under root.
func storedBlobs(root string) int {
	n := 0
	_ = filepath.WalkDir(filepath.Join(root, "docker", "registry", "v2", "blobs"), func(_ string, d os.DirEntry, err error) error {
		if err == nil && d.Name() == "data" && d.Type().IsRegular() {
			n++
		}
		return nil
	})
	return n
}

func (m *mirrorBench) stopAll() {
	for _, s := range m.servers {
		s.stop()
	}
}

// alternate pulls the image from a (into c.A) and b (into c.B), a first
// in odd rounds, b first in even ones, with dirty pages flushed before
// each, and prints each result.
func (m *mirrorBench) alternate(ctx context.Context, stdout io.Writer, c *comparison, round int, img *benchImage, a, b side) {
	order := []side{a, b}
	if round%2 == 0 {
		order = []side{b, a}
	}
	for _, sd := range order {
		flushDirtyPages()
		reset := resetPeak(sd.s.cmd.Process.Pid)
		r := m.pull(ctx, sd.s, sd.repo, img)
		r.Test, r.Round, r.Load1 = c.Test, round, load1()
		r.PeakRSSKiB, r.PeakReset = readPeak(sd.s.cmd.Process.Pid), reset
		writeJSON(stdout, r)
		if sd == a {
			c.A = append(c.A, r)
		} else {
			c.B = append(c.B, r)
		}
	}
}

// transport is a fresh HTTP/1.1 client transport that trusts the
// certificate, as a client that starts a pull.
func (m *mirrorBench) transport() (*http.Transport, error) {
	pem, err := os.ReadFile(m.setup.cert)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s: no PEM certificate", m.setup.cert)
	}
	return &http.Transport{
		Proxy:               nil,
		TLSClientConfig:     &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool},
		MaxIdleConnsPerHost: m.jobs + 1,
		DisableCompression:  true,
		WriteBufferSize:     64 << 10,
		ReadBufferSize:      64 << 10,
	}, nil
}

func reference(s *server, repo string) (name.Reference, error) {
	u, err := url.Parse(s.url)
	if err != nil {
		return nil, err
	}
	return name.ParseReference(u.Host + "/" + repo + ":" + mirrorTag)
}

// push writes img to s as bench/mirror:v1.
func (m *mirrorBench) push(ctx context.Context, s *server, img *benchImage) error {
	ref, err := reference(s, mirrorRepo)
	if err != nil {
		return err
	}
	tr, err := m.transport()
	if err != nil {
		return err
	}
	defer tr.CloseIdleConnections()
	v1img, err := partial.CompressedToImage(img)
	if err != nil {
		return err
	}
	return remote.Write(ref, v1img, remote.WithTransport(tr), remote.WithContext(ctx))
}

// pull pulls repo:v1 from s with a new client: the manifest, then the
// config and the layers, jobs at a time, each read to its end (remote
// verifies every digest). The image must be img.
func (m *mirrorBench) pull(ctx context.Context, s *server, repo string, img *benchImage) Result {
	r := Result{Target: s.name, Unit: "MB/s", Proto: "HTTP/1.1"}
	n, d, err := m.pullOnce(ctx, s, repo, img)
	if err != nil {
		r.Error = err.Error()
		return r
	}
	r.Value, r.Bytes, r.Ops, r.Seconds = throughput(n, d), n, 1, d.Seconds()
	return r
}

func (m *mirrorBench) pullOnce(ctx context.Context, s *server, repo string, img *benchImage) (int64, time.Duration, error) {
	ref, err := reference(s, repo)
	if err != nil {
		return 0, 0, err
	}
	tr, err := m.transport()
	if err != nil {
		return 0, 0, err
	}
	defer tr.CloseIdleConnections()
	start := time.Now()
	got, err := remote.Image(ref, remote.WithTransport(tr), remote.WithContext(ctx))
	if err != nil {
		return 0, 0, err
	}
	if dg, err := got.Digest(); err != nil || dg.String() != img.digest() {
		return 0, 0, fmt.Errorf("pulled manifest %v (%v), want %s", dg, err, img.digest())
	}
	config, err := got.RawConfigFile()
	if err != nil {
		return 0, 0, fmt.Errorf("config: %w", err)
	}
	ls, err := got.Layers()
	if err != nil {
		return 0, 0, err
	}
	sizes := make([]int64, len(ls))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(m.jobs)
	for i, l := range ls {
		g.Go(func() error {
			if gctx.Err() != nil {
				return gctx.Err()
			}
			rc, err := l.Compressed()
			if err != nil {
				return err
			}
			defer rc.Close()
			sizes[i], err = io.CopyBuffer(struct{ io.Writer }{io.Discard}, rc, make([]byte, 256<<10))
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return 0, 0, fmt.Errorf("layers: %w", err)
	}
	d := time.Since(start)
	n := int64(len(config))
	for i, sz := range sizes {
		if sz != img.layers[i].Size {
			return 0, 0, fmt.Errorf("layer %d: %d bytes, want %d", i, sz, img.layers[i].Size)
		}
		n += sz
	}
	return n, d, nil
}

// benchImage is an OCI image of generated layers (uncompressed "tar"
// layers: a registry never looks inside) and a config naming them. It is
// a partial.CompressedImageCore, so the layers are generated as they are
// pushed, never held whole.
type benchImage struct {
	layers   []*Blob
	config   []byte
	manifest []byte
}

const (
	ociLayer  = "application/vnd.oci.image.layer.v1.tar"
	ociConfig = "application/vnd.oci.image.config.v1+json"
)

func newBenchImage(b *bencher, layers int, size int64) *benchImage {
	img := &benchImage{}
	var diffIDs []string
	var descs []descriptor
	for range layers {
		bl := b.newBlob(size)
		img.layers = append(img.layers, bl)
		diffIDs = append(diffIDs, bl.Digest())
		descs = append(descs, descriptor{ociLayer, bl.Digest(), bl.Size})
	}
	img.config, _ = json.Marshal(map[string]any{
		"architecture": "amd64",
		"os":           "linux",
		"config":       map[string]any{},
		"rootfs":       map[string]any{"type": "layers", "diff_ids": diffIDs},
	})
	img.manifest, _ = json.Marshal(struct {
		SchemaVersion int          `json:"schemaVersion"`
		MediaType     string       `json:"mediaType"`
		Config        descriptor   `json:"config"`
		Layers        []descriptor `json:"layers"`
	}{2, manifestType, descriptor{ociConfig, sha256Digest(img.config), int64(len(img.config))}, descs})
	return img
}

func (img *benchImage) digest() string { return sha256Digest(img.manifest) }

func sha256Digest(b []byte) string {
	h, _, _ := v1.SHA256(bytes.NewReader(b))
	return h.String()
}

// RawConfigFile, MediaType, RawManifest and LayerByDigest make a
// partial.CompressedImageCore.
func (img *benchImage) RawConfigFile() ([]byte, error) { return img.config, nil }

func (img *benchImage) MediaType() (types.MediaType, error) { return manifestType, nil }

func (img *benchImage) RawManifest() ([]byte, error) { return img.manifest, nil }

func (img *benchImage) LayerByDigest(h v1.Hash) (partial.CompressedLayer, error) {
	if h.String() == sha256Digest(img.config) {
		return &blobLayer{b: &rawBlob{img.config}, mt: ociConfig}, nil
	}
	for _, bl := range img.layers {
		if bl.Digest() == h.String() {
			return &blobLayer{b: bl, mt: ociLayer}, nil
		}
	}
	return nil, fmt.Errorf("no blob %s in the image", h)
}

// blobSource is a Blob or the config's bytes.
type blobSource interface {
	Digest() string
	Reader() io.Reader
	size() int64
}

func (b *Blob) size() int64 { return b.Size }

type rawBlob struct{ b []byte }

func (r *rawBlob) Digest() string    { return sha256Digest(r.b) }
func (r *rawBlob) Reader() io.Reader { return bytes.NewReader(r.b) }
func (r *rawBlob) size() int64       { return int64(len(r.b)) }

// blobLayer is a partial.CompressedLayer of a blob.
type blobLayer struct {
	b  blobSource
	mt types.MediaType
}

func (l *blobLayer) Digest() (v1.Hash, error)            { return v1.NewHash(l.b.Digest()) }
func (l *blobLayer) Compressed() (io.ReadCloser, error)  { return io.NopCloser(l.b.Reader()), nil }
func (l *blobLayer) Size() (int64, error)                { return l.b.size(), nil }
func (l *blobLayer) MediaType() (types.MediaType, error) { return l.mt, nil }
