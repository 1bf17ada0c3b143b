package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"
)

// The listing measurement: a registry of many repositories and one
// repository of many tags, and the four figures of Berth's listings issue
// (the first catalog page, the whole catalog in pages, all tags in pages,
// and manifest GETs by tag), with the first tag page besides.
//
//	registry-bench listdata --dir DIR [--repos 10000] [--tags 10000]
//	registry-bench listings --url http://127.0.0.1:5000 [--drop-caches]

// listTagsRepo is the repository listdata fills with tags.
const listTagsRepo = "bench/tags"

// listDataOptions are listdata's flags.
type listDataOptions struct {
	Dir    string
	Repos  int
	Tags   int
	Images int // distinct manifests the tags point at
	Seed   uint64
}

func listDataCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o := listDataOptions{Repos: 10000, Tags: 10000, Images: 100, Seed: 1}
	fs := flag.NewFlagSet("listdata", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.Dir, "dir", "", "data directory to write (the registry's rootdirectory); must not exist or be empty")
	fs.IntVar(&o.Repos, "repos", o.Repos, "repositories, as gcdata writes them (team<NN>/app<NNNNN>)")
	fs.IntVar(&o.Tags, "tags", o.Tags, "tags of the repository "+listTagsRepo)
	fs.IntVar(&o.Images, "images", o.Images, "distinct manifests the tags point at")
	fs.Uint64Var(&o.Seed, "seed", o.Seed, "seed of gcdata's shape and contents")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if o.Dir == "" || o.Repos < 1 || o.Tags < 1 || o.Images < 1 {
		return errors.New("listdata needs --dir, and positive --repos, --tags and --images")
	}
	t0 := time.Now()
	// The repositories are gcdata's, with as few blobs as its plan allows
	// (each repository needs a manifest and a config, and a fifth of the
	// blobs are unreferenced).
	sum, err := writeGCData(ctx, gcDataOptions{Dir: o.Dir, Repos: o.Repos, Blobs: 3 * o.Repos, Unreferenced: 0.2, Untagged: 0.1,
		Seed: o.Seed, Age: 30 * 24 * time.Hour, Workers: 4 * runtime.NumCPU()})
	if err != nil {
		return err
	}
	if err := writeTagsRepo(ctx, o); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote %d repositories (%d blobs) and %s with %d tags on %d manifests in %.1f s\n",
		sum.Repos, sum.Blobs, listTagsRepo, o.Tags, o.Images, time.Since(t0).Seconds())
	return nil
}

// listTagNames returns n tags shaped like a base image's: per version
// "M.m" the variants M.m, M.m-alpine, M.m.0, M.m.0-alpine, M.m.0-rc.1,
// which are prefixes of one another, so plain and key order differ.
func listTagNames(n int) []string {
	tags := make([]string, 0, n)
	for k := 0; len(tags) < n; k++ {
		v := strconv.Itoa(k/25) + "." + strconv.Itoa(k%25)
		for _, t := range []string{v, v + "-alpine", v + ".0", v + ".0-alpine", v + ".0-rc.1"} {
			if len(tags) < n {
				tags = append(tags, t)
			}
		}
	}
	return tags
}

// writeTagsRepo writes repository listTagsRepo: o.Images images (a
// manifest, a config and a layer each) and o.Tags tags, tag i on image
// i mod o.Images.
func writeTagsRepo(ctx context.Context, o listDataOptions) error {
	w := &gcWriter{root: filepath.Join(o.Dir, "docker", "registry", "v2"), mtime: time.Now().Add(-24 * time.Hour)}
	repo := filepath.Join(w.root, "repositories", filepath.FromSlash(listTagsRepo))
	blob := func(content []byte) (v1.Descriptor, error) {
		sum := sha256.Sum256(content)
		h := hex.EncodeToString(sum[:])
		dg := digest.NewDigestFromEncoded(digest.SHA256, h)
		if err := w.writeFile(filepath.Join(w.root, "blobs", "sha256", h[:2], h, "data"), content); err != nil {
			return v1.Descriptor{}, err
		}
		return v1.Descriptor{Digest: dg, Size: int64(len(content))}, nil
	}
	link := func(dir string, dg digest.Digest) error {
		return w.writeFile(filepath.Join(dir, "link"), []byte(dg.String()))
	}
	manifests := make([]digest.Digest, o.Images)
	for i := range manifests {
		layer, err := blob([]byte(fmt.Sprintf("listdata layer %d of seed %d", i, o.Seed)))
		if err != nil {
			return err
		}
		layer.MediaType = v1.MediaTypeImageLayerGzip
		cfgJSON, _ := json.Marshal(v1.Image{Platform: v1.Platform{Architecture: "amd64", OS: "linux"},
			RootFS: v1.RootFS{Type: "layers", DiffIDs: []digest.Digest{layer.Digest}}})
		cfg, err := blob(cfgJSON)
		if err != nil {
			return err
		}
		cfg.MediaType = v1.MediaTypeImageConfig
		mJSON, _ := json.Marshal(v1.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: v1.MediaTypeImageManifest,
			Config: cfg, Layers: []v1.Descriptor{layer}})
		m, err := blob(mJSON)
		if err != nil {
			return err
		}
		manifests[i] = m.Digest
		for _, d := range []digest.Digest{layer.Digest, cfg.Digest} {
			if err := link(filepath.Join(repo, "_layers", "sha256", d.Encoded()), d); err != nil {
				return err
			}
		}
		if err := link(filepath.Join(repo, "_manifests", "revisions", "sha256", m.Digest.Encoded()), m.Digest); err != nil {
			return err
		}
	}
	tags := listTagNames(o.Tags)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(4 * runtime.NumCPU())
	for i, tag := range tags {
		if gctx.Err() != nil {
			break
		}
		g.Go(func() error {
			dg := manifests[i%len(manifests)]
			t := filepath.Join(repo, "_manifests", "tags", tag)
			if err := link(filepath.Join(t, "current"), dg); err != nil {
				return err
			}
			return link(filepath.Join(t, "index", "sha256", dg.Encoded()), dg)
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	return ctx.Err()
}

// listingsCmd times the four listing figures against a running registry.
func listingsCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("listings", flag.ContinueOnError)
	fs.SetOutput(stderr)
	base := fs.String("url", "", "registry base URL (http:// or https://); required")
	caFile := fs.String("cacert", "", "PEM file of a CA to trust")
	repo := fs.String("repo", listTagsRepo, "repository whose tags are listed and pulled")
	gets := fs.Int("gets", 1000, "manifest GETs by tag")
	drop := fs.Bool("drop-caches", false, "write back dirty pages and drop the page cache before each figure (root only; Linux)")
	label := fs.String("target", "", "name of the registry in the output (default: the URL)")
	round := fs.Int("round", 0, "round number in the output")
	only := fs.String("only", "", "comma-separated figures to time (default all; manifest-get-by-tag lists the tags first, untimed, if tags-all-1000 is not timed)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *base == "" || fs.NArg() > 0 {
		return errors.New("listings needs --url and no arguments")
	}
	c, err := newClient(*base, *caFile, false, "", "")
	if err != nil {
		return err
	}
	defer c.close()
	name := *label
	if name == "" {
		name = *base
	}
	cache := "warm"
	if *drop {
		cache = "cold"
	}
	// prepare drops the page cache if asked, then sends GET /v2/ (not
	// timed), so that the figure includes neither the connection's set-up
	// nor reading the server's request handling back from disk.
	prepare := func() error {
		if *drop {
			flushDirtyPages()
			if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3\n"), 0o200); err != nil {
				return fmt.Errorf("dropping the page cache: %w", err)
			}
		}
		_, _, err := listPage(ctx, c, "/v2/", "")
		return err
	}
	var tags []string
	figures := []struct {
		test string
		run  func() (int, error)
	}{
		{"catalog-first-100", func() (int, error) {
			items, _, err := listPage(ctx, c, "/v2/_catalog?n=100", "repositories")
			return len(items), err
		}},
		{"catalog-all-1000", func() (int, error) {
			items, err := listAll(ctx, c, "/v2/_catalog?n=1000", "repositories")
			return len(items), err
		}},
		{"tags-first-100", func() (int, error) {
			items, _, err := listPage(ctx, c, "/v2/"+*repo+"/tags/list?n=100", "tags")
			return len(items), err
		}},
		{"tags-all-1000", func() (int, error) {
			tags, err = listAll(ctx, c, "/v2/"+*repo+"/tags/list?n=1000", "tags")
			return len(tags), err
		}},
		{"manifest-get-by-tag", func() (int, error) {
			if len(tags) == 0 {
				return 0, errors.New("no tags to pull")
			}
			// Tags spread over the whole list (or what of it was listed
			// before the listing failed), each pulled once.
			n := min(*gets, len(tags))
			for i := range n {
				if err := getManifest(ctx, c, *repo, tags[i*len(tags)/n]); err != nil {
					return i, err
				}
			}
			return n, nil
		}},
	}
	// A figure that fails (a registry that lists an item twice) is
	// reported and the others still run; the command fails at the end.
	var results []Result
	var failed []error
	for _, f := range figures {
		if *only != "" && !slices.Contains(strings.Split(*only, ","), f.test) {
			if f.test == "tags-all-1000" && strings.Contains(*only, "manifest-get-by-tag") {
				if _, err := f.run(); err != nil {
					failed = append(failed, fmt.Errorf("%s: %w", f.test, err))
				}
			}
			continue
		}
		if err := prepare(); err != nil {
			return err
		}
		t0 := time.Now()
		n, err := f.run()
		secs := time.Since(t0).Seconds()
		if err != nil {
			err = fmt.Errorf("%s: %w", f.test, err)
			fmt.Fprintln(stderr, "registry-bench:", err)
			failed = append(failed, err)
			continue
		}
		r := Result{Target: name, Test: f.test, Round: *round, Unit: "s", Value: secs, Seconds: secs, Ops: n, Cache: cache}
		writeJSON(stdout, r)
		results = append(results, r)
	}
	fmt.Fprintln(stdout)
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "test\titems\tseconds\tcache\t")
	for _, r := range results {
		fmt.Fprintf(tw, "%s\t%d\t%.3f\t%s\t\n", r.Test, r.Ops, r.Seconds, r.Cache)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	return errors.Join(failed...)
}

// listPage GETs one page of a listing and returns its items (the JSON
// array field; none if field is empty) and the next page's path from the
// Link header ("" if none).
func listPage(ctx context.Context, c *Client, ref, field string) ([]string, string, error) {
	u, err := c.resolve(ref)
	if err != nil {
		return nil, "", err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, "", err
	}
	resp, err := c.Do(req, "")
	if err != nil {
		return nil, "", err
	}
	defer drain(resp)
	if resp.StatusCode != http.StatusOK {
		return nil, "", fmt.Errorf("GET %s: %s", ref, resp.Status)
	}
	if field == "" {
		return nil, "", nil
	}
	var body map[string]json.RawMessage
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return nil, "", fmt.Errorf("GET %s: %w", ref, err)
	}
	var items []string
	if err := json.Unmarshal(body[field], &items); err != nil {
		return nil, "", fmt.Errorf("GET %s: %s: %w", ref, field, err)
	}
	return items, nextLink(resp.Header.Get("Link")), nil
}

// nextLink extracts the target of a `<…>; rel="next"` Link header.
func nextLink(h string) string {
	start, end := strings.IndexByte(h, '<'), strings.IndexByte(h, '>')
	if start < 0 || end < start || !strings.Contains(h[end:], `rel="next"`) {
		return ""
	}
	return h[start+1 : end]
}

// listAll follows a listing's Link headers from ref to the end and checks
// that no item comes twice.
func listAll(ctx context.Context, c *Client, ref, field string) ([]string, error) {
	var all []string
	seen := map[string]bool{}
	for ref != "" {
		items, next, err := listPage(ctx, c, ref, field)
		if err != nil {
			return all, err
		}
		for _, it := range items {
			if seen[it] {
				return all, fmt.Errorf("%s listed twice (page %s)", it, ref)
			}
			seen[it] = true
		}
		all = append(all, items...)
		ref = next
	}
	return all, nil
}

// getManifest GETs repo's manifest by tag and reads it whole.
func getManifest(ctx context.Context, c *Client, repo, tag string) error {
	u, err := c.resolve("/v2/" + repo + "/manifests/" + tag)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", strings.Join([]string{v1.MediaTypeImageManifest, v1.MediaTypeImageIndex,
		"application/vnd.docker.distribution.manifest.v2+json", "application/vnd.docker.distribution.manifest.list.v2+json"}, ", "))
	resp, err := c.Do(req, "repository:"+repo+":pull")
	if err != nil {
		return err
	}
	defer drain(resp)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET manifest %s:%s: %s", repo, tag, resp.Status)
	}
	_, err = io.Copy(io.Discard, resp.Body)
	return err
}
