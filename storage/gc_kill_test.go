package storage

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"

	"github.com/berth-registry/berth/internal/testutil"
	"github.com/berth-registry/berth/storage/driver/filesystem"
)

// The kill test: a collection killed at any moment (a process killed, a
// machine that lost power) must leave a store that serves everything it
// served before, and the next collection must finish the job. The test
// re-executes its own binary as the collector and kills it with
// cmd.Process.Kill, which is SIGKILL on Unix and TerminateProcess on
// Windows.

// gcKillRootEnv, when set, makes TestGCKilledMidway the collector: it
// collects the store at that root and reports what it removes.
const gcKillRootEnv = "BERTH_TEST_GC_KILL_ROOT"

// gcKillHoldEnv, when set, makes the collector wait to be killed once it
// has collected, before it closes its driver: killed then, it leaves its
// whole journal behind.
const gcKillHoldEnv = "BERTH_TEST_GC_KILL_HOLD"

// gcKillLine prefixes what the collector reports on its standard output.
const gcKillLine = "gckill: "

func TestGCKilledMidway(t *testing.T) {
	if root := os.Getenv(gcKillRootEnv); root != "" {
		gcKillChild(t, root)
		return
	}
	if testing.Short() {
		t.Skip("builds a large store and runs collectors in child processes")
	}
	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, 0))
	t.Logf("seed %d", seed)

	pristine := t.TempDir()
	start := time.Now()
	acked := buildGCKillStore(t, pristine)
	age(t, pristine)
	t.Logf("built %d acknowledged images and referrers in %v", len(acked), time.Since(start).Round(time.Millisecond))

	// One collection run to its end, on a copy: how long it takes, what it
	// removes, and the state that collections killed and resumed must
	// reach as well.
	reference := t.TempDir()
	copyTree(t, pristine, reference)
	full := runGCChild(t, reference, gcKillPoint{})
	if !full.finished || full.err != nil {
		t.Fatalf("uninterrupted collection: finished %v, %v\n%s", full.finished, full.err, full.output)
	}
	want := readGCKillState(t, reference)
	t.Logf("uninterrupted collection: first removal after %v, done after %v; removed %s",
		full.firstRemoval.Round(time.Millisecond), full.elapsed.Round(time.Millisecond), full.summary())
	if full.removed["blob"] == 0 || full.removed["manifest"] == 0 {
		t.Fatalf("the store holds too little garbage: %s", full.summary())
	}

	// Kills at random moments: the first while the collector takes the
	// lock, the last while it marks, the others while it removes. Each
	// collector starts over with what the previous ones left, so the
	// moment of a kill while removing is drawn from the work left rather
	// than from the clock: the child is killed once it has reported a
	// random number of removals, up to an equal share of what is left, so
	// that the final collection has work too. Every collector after the
	// first takes over the lock of a killed one.
	root := pristine
	kills := 10
	if testutil.UnderWine() {
		kills = 6 // every process start and kill is slow there
	}
	left := full.total()
	var last gcChildRun
	for i := range kills {
		var kill gcKillPoint
		switch i {
		case 0:
			kill.after = time.Millisecond + time.Duration(rng.Int64N(int64(lockSettle)))
		case kills - 1:
			kill.after = lockSettle + time.Duration(rng.Int64N(int64(max(full.firstRemoval-lockSettle, time.Millisecond))))
		default:
			kill.removals = 1 + rng.IntN(max(1, left/(kills-i)))
		}
		last = runGCChild(t, root, kill)
		left -= last.total()
		where := "before its first removal"
		if last.total() > 0 {
			where = fmt.Sprintf("after %v, having removed %s", last.killedAt.Round(time.Millisecond), last.summary())
		}
		if last.finished {
			where = "after it finished: " + last.summary()
		}
		t.Logf("kill %d (%s): %s", i+1, kill, where)
		if last.finished && last.err != nil {
			t.Fatalf("collection %d failed: %v\n%s", i+1, last.err, last.output)
		}
		// A fresh store on the root, as a registry starting now would
		// open it: the journal of the killed process replays first.
		checkGCKillStore(t, root, acked, fmt.Sprintf("after kill %d", i+1))
	}

	// The next collection finishes the job. A killed collector's lock
	// names a process of this host that is gone: it is taken over at
	// once instead of waiting for it to expire.
	d, err := filesystem.New(root)
	if err != nil {
		t.Fatal(err)
	}
	s := NewWithOptions(d, Options{GracePeriod: testGrace})
	if l, err := s.readGCLock(context.Background()); err != nil || l == nil || l.PID != last.pid || !time.Now().Before(l.Expires) {
		t.Errorf("the lock: %+v, %v; want the killed collector's (process %d), unexpired", l, err, last.pid)
	}
	began := time.Now()
	rep, err := s.CollectGarbage(context.Background(), GCOptions{DeleteUntagged: true})
	if err != nil {
		t.Fatalf("the collection after the kills: %v", err)
	}
	if took := time.Since(began); took > lockTTL/2 {
		t.Errorf("the collection after the kills took %v: it waited for the dead collector's lock", took)
	}
	t.Logf("final collection: %+v", rep)
	d.Close()
	if got := readGCKillState(t, root); !slices.Equal(got.blobs, want.blobs) || !slices.Equal(got.manifests, want.manifests) || !slices.Equal(got.links, want.links) {
		t.Errorf("after the kills and a final collection the store holds %d blobs, %d manifests, %d blob links; an uninterrupted collection leaves %d, %d, %d",
			len(got.blobs), len(got.manifests), len(got.links), len(want.blobs), len(want.manifests), len(want.links))
		t.Logf("blobs left that should be gone: %v", diffDigests(got.blobs, want.blobs))
		t.Logf("blobs gone that should be left: %v", diffDigests(want.blobs, got.blobs))
	}
	checkGCKillStore(t, root, acked, "after the final collection")

	// Doomed markers: the final collection leaves none older than
	// doomedTTL (requests ignore those; they would only be litter), and
	// once the younger ones a killed collector left have aged, the next
	// collection removes them and has nothing else to do.
	markers := doomedMarkers(t, root)
	for p, mod := range markers {
		if began.Sub(mod) > doomedTTL {
			t.Errorf("doomed marker %s was stale (%v old) when the final collection began, and it is still there", p, began.Sub(mod).Round(time.Second))
		}
	}
	t.Logf("%d doomed markers left by killed collectors after the final collection", len(markers))
	old := time.Now().Add(-2 * doomedTTL)
	for p := range markers {
		if err := os.Chtimes(p, old, old); err != nil {
			t.Fatal(err)
		}
	}
	d, err = filesystem.New(root)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	s = NewWithOptions(d, Options{GracePeriod: testGrace})
	rep, err = s.CollectGarbage(context.Background(), GCOptions{DeleteUntagged: true})
	if err != nil {
		t.Fatal(err)
	}
	if rep.BlobsDeleted+rep.ManifestsDeleted+rep.LinksDeleted+rep.TagsDeleted != 0 {
		t.Errorf("the collection after the final one still removed things: %+v", rep)
	}
	if left := doomedMarkers(t, root); len(left) != 0 {
		t.Errorf("%d doomed markers survive a collection after they went stale", len(left))
	}
}

// gcKillAck is something the store acknowledged and the test did not
// delete: it must pull at every step.
type gcKillAck struct {
	name, ref string
	subject   digest.Digest // for a referrer: must be listed for it
}

// buildGCKillStore fills a store at root with a few hundred repositories
// sharing layers, deletes a good part of what it pushed, and returns what
// is left to pull.
func buildGCKillStore(t *testing.T, root string) []gcKillAck {
	t.Helper()
	d, err := filesystem.New(root)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	s := NewWithOptions(d, Options{GracePeriod: testGrace})
	ctx := context.Background()

	var shared []v1.Descriptor
	for i := range 16 {
		b := bytes.Repeat([]byte(fmt.Sprintf("shared layer %d\n", i)), 64)
		dg := digest.FromBytes(b)
		if _, err := s.PutBlob(ctx, "base", dg, bytes.NewReader(b)); err != nil {
			t.Fatal(err)
		}
		shared = append(shared, v1.Descriptor{MediaType: v1.MediaTypeImageLayerGzip, Digest: dg, Size: int64(len(b))})
	}
	base, err := gcKillImage(ctx, s, "base", "base", shared)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutManifest(ctx, "base", "v1", MediaTypeOCIManifest, base); err != nil {
		t.Fatal(err)
	}
	acked := []gcKillAck{{name: "base", ref: "v1"}}

	repos := 150
	if testutil.UnderWine() {
		repos = 60
	}
	var mu sync.Mutex
	var g errgroup.Group
	g.SetLimit(8)
	for k := range repos {
		g.Go(func() error {
			a, err := buildGCKillRepo(ctx, s, k, shared)
			mu.Lock()
			acked = append(acked, a...)
			mu.Unlock()
			return err
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	return acked
}

// buildGCKillRepo pushes to repository k three images, every fourth an
// index of two untagged children, every sixth a referrer of its first
// image and every seventh an untagged image; then it deletes the second
// image in two repositories of five, untags the third in one of three,
// and deletes every other index.
func buildGCKillRepo(ctx context.Context, s *Store, k int, shared []v1.Descriptor) ([]gcKillAck, error) {
	name := fmt.Sprintf("org%d/app%d", k%10, k)
	var layers []v1.Descriptor
	for _, i := range []int{k % len(shared), (k*7 + 3) % len(shared)} {
		if _, err := s.MountBlob(ctx, name, "base", shared[i].Digest); err != nil {
			return nil, err
		}
		layers = append(layers, shared[i])
	}
	var acked []gcKillAck
	push := func(ref string, payload []byte, mediaType string) (digest.Digest, error) {
		res, err := s.PutManifest(ctx, name, ref, mediaType, payload)
		return res.Digest, err
	}
	var images []v1.Descriptor
	for i := 1; i <= 3; i++ {
		m, err := gcKillImage(ctx, s, name, fmt.Sprintf("%s v%d", name, i), layers)
		if err != nil {
			return nil, err
		}
		dg, err := push(fmt.Sprintf("v%d", i), m, MediaTypeOCIManifest)
		if err != nil {
			return nil, err
		}
		images = append(images, v1.Descriptor{MediaType: MediaTypeOCIManifest, Digest: dg, Size: int64(len(m))})
	}
	if k%5 < 2 {
		if err := s.DeleteManifest(ctx, name, images[1].Digest); err != nil {
			return nil, err
		}
	} else {
		acked = append(acked, gcKillAck{name: name, ref: "v2"})
	}
	acked = append(acked, gcKillAck{name: name, ref: "v1"})
	if k%3 == 0 {
		if err := s.Untag(ctx, name, "v3"); err != nil {
			return nil, err
		}
	} else {
		acked = append(acked, gcKillAck{name: name, ref: "v3"})
	}
	if k%4 == 0 {
		var children []v1.Descriptor
		for _, arch := range []string{"amd64", "arm64"} {
			m, err := gcKillImage(ctx, s, name, name+" "+arch, layers)
			if err != nil {
				return nil, err
			}
			dg, err := push(digest.FromBytes(m).String(), m, MediaTypeOCIManifest)
			if err != nil {
				return nil, err
			}
			children = append(children, v1.Descriptor{MediaType: MediaTypeOCIManifest, Digest: dg, Size: int64(len(m)),
				Platform: &v1.Platform{OS: "linux", Architecture: arch}})
		}
		idx, _ := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": MediaTypeOCIIndex, "manifests": children})
		dg, err := push("multi", idx, MediaTypeOCIIndex)
		if err != nil {
			return nil, err
		}
		if k%8 == 0 {
			if err := s.DeleteManifest(ctx, name, dg); err != nil {
				return nil, err
			}
		} else {
			acked = append(acked, gcKillAck{name: name, ref: "multi"})
		}
	}
	if k%6 == 0 {
		sig := []byte("signature of " + images[0].Digest.String())
		sdg := digest.FromBytes(sig)
		if _, err := s.PutBlob(ctx, name, sdg, bytes.NewReader(sig)); err != nil {
			return nil, err
		}
		cfg := []byte("{}")
		if _, err := s.PutBlob(ctx, name, digest.FromBytes(cfg), bytes.NewReader(cfg)); err != nil {
			return nil, err
		}
		m, _ := json.Marshal(map[string]any{
			"schemaVersion": 2, "mediaType": MediaTypeOCIManifest, "artifactType": "application/vnd.berth.test.signature",
			"config":  v1.Descriptor{MediaType: "application/vnd.oci.empty.v1+json", Digest: digest.FromBytes(cfg), Size: int64(len(cfg))},
			"layers":  []v1.Descriptor{{MediaType: "application/vnd.berth.test.signature", Digest: sdg, Size: int64(len(sig))}},
			"subject": images[0],
		})
		dg, err := push(digest.FromBytes(m).String(), m, MediaTypeOCIManifest)
		if err != nil {
			return nil, err
		}
		acked = append(acked, gcKillAck{name: name, ref: dg.String(), subject: images[0].Digest})
	}
	if k%7 == 0 {
		m, err := gcKillImage(ctx, s, name, name+" untagged", layers)
		if err != nil {
			return nil, err
		}
		if _, err := push(digest.FromBytes(m).String(), m, MediaTypeOCIManifest); err != nil {
			return nil, err
		}
	}
	return acked, nil
}

// gcKillImage stores a config and a layer of their own and returns an
// image manifest of them and shared.
func gcKillImage(ctx context.Context, s *Store, name, seed string, shared []v1.Descriptor) ([]byte, error) {
	var blobs []v1.Descriptor
	for _, content := range [][]byte{[]byte(`{"seed":"` + seed + `"}`), bytes.Repeat([]byte("layer of "+seed+"\n"), 32)} {
		dg := digest.FromBytes(content)
		if _, err := s.PutBlob(ctx, name, dg, bytes.NewReader(content)); err != nil {
			return nil, err
		}
		blobs = append(blobs, v1.Descriptor{Digest: dg, Size: int64(len(content))})
	}
	blobs[0].MediaType = v1.MediaTypeImageConfig
	blobs[1].MediaType = v1.MediaTypeImageLayerGzip
	return json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     MediaTypeOCIManifest,
		"config":        blobs[0],
		"layers":        append([]v1.Descriptor{blobs[1]}, shared...),
	})
}

// checkGCKillStore opens the store at root afresh and pulls everything
// acknowledged.
func checkGCKillStore(t *testing.T, root string, acked []gcKillAck, when string) {
	t.Helper()
	d, err := filesystem.New(root)
	if err != nil {
		t.Fatalf("%s: opening the store: %v", when, err)
	}
	defer d.Close()
	s := NewWithOptions(d, Options{GracePeriod: testGrace})
	var g errgroup.Group
	g.SetLimit(4)
	for _, a := range acked {
		g.Go(func() error {
			if err := pullAllErr(s, a.name, a.ref); err != nil {
				return err
			}
			if a.subject == "" {
				return nil
			}
			refs, err := s.Referrers(context.Background(), a.name, a.subject, "")
			if err != nil || !slices.ContainsFunc(refs, func(d v1.Descriptor) bool { return d.Digest.String() == a.ref }) {
				return fmt.Errorf("the referrers of %s@%s lack %s: %v %v", a.name, a.subject, a.ref, refs, err)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatalf("%s: %v", when, err)
	}
}

// pullAllErr is pullAll that returns what failed.
func pullAllErr(s *Store, name, ref string) error {
	ctx := context.Background()
	m, err := s.GetManifest(ctx, name, ref)
	if err != nil {
		return fmt.Errorf("pull %s:%s: %w", name, ref, err)
	}
	doc, _, err := parseManifest(m.Payload, "")
	if err != nil {
		return fmt.Errorf("pull %s:%s: %w", name, ref, err)
	}
	for _, c := range doc.Manifests {
		if err := pullAllErr(s, name, c.Digest.String()); err != nil {
			return fmt.Errorf("child of %s:%s: %w", name, ref, err)
		}
	}
	blobs := doc.Layers
	if doc.Config != nil {
		blobs = append(blobs, *doc.Config)
	}
	for _, b := range blobs {
		r, _, err := s.OpenBlob(ctx, name, b.Digest, 0)
		if err != nil {
			return fmt.Errorf("pull %s:%s: blob %s: %w", name, ref, b.Digest, err)
		}
		content, err := io.ReadAll(r)
		r.Close()
		if err != nil {
			return fmt.Errorf("pull %s:%s: blob %s: %w", name, ref, b.Digest, err)
		}
		if digest.FromBytes(content) != b.Digest {
			return fmt.Errorf("pull %s:%s: blob %s holds other content", name, ref, b.Digest)
		}
	}
	return nil
}

// gcKillPoint is when to kill a collector: after it has collected for a
// while, once it has reported a number of removals, or once it has
// finished collecting; zero: never.
type gcKillPoint struct {
	after    time.Duration
	removals int
	atEnd    bool
}

func (k gcKillPoint) String() string {
	if k.removals > 0 {
		return fmt.Sprintf("at removal %d", k.removals)
	}
	return fmt.Sprintf("at %v", k.after.Round(time.Millisecond))
}

// gcChildRun is what one collector process did.
type gcChildRun struct {
	pid          int
	finished     bool // it exited on its own, before the kill
	err          error
	output       string        // what it printed besides its reports
	firstRemoval time.Duration // after it began collecting; 0: none
	elapsed      time.Duration // from beginning to collect to its end
	killedAt     time.Duration // after it began collecting
	removed      map[string]int
}

func (r gcChildRun) total() int {
	n := 0
	for _, v := range r.removed {
		n += v
	}
	return n
}

func (r gcChildRun) summary() string {
	return fmt.Sprintf("%d manifests, %d blobs, %d links", r.removed["manifest"], r.removed["blob"], r.removed["link"])
}

// runGCChild runs a collector on root in a child process and kills it at
// kill.
func runGCChild(t *testing.T, root string, kill gcKillPoint) gcChildRun {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestGCKilledMidway$", "-test.count=1")
	cmd.Env = append(os.Environ(), gcKillRootEnv+"="+root)
	if kill.atEnd {
		cmd.Env = append(cmd.Env, gcKillHoldEnv+"=1")
	}
	var output bytes.Buffer // guarded by mu once the process runs
	var mu sync.Mutex
	cmd.Stderr = &lockedWriter{mu: &mu, w: &output}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	run := gcChildRun{pid: cmd.Process.Pid, removed: map[string]int{}}
	began := make(chan time.Time, 1)
	enough := make(chan struct{}) // closed at the kill.removals-th removal, or at the end
	lines := make(chan struct{})
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(out)
		var start time.Time
		n := 0
		for sc.Scan() {
			line, ok := strings.CutPrefix(sc.Text(), gcKillLine)
			mu.Lock()
			if !ok {
				output.WriteString(sc.Text() + "\n")
				mu.Unlock()
				continue
			}
			kind, _, _ := strings.Cut(line, " ")
			switch kind {
			case "begin":
				start = time.Now()
				began <- start
			case "end":
				run.elapsed = time.Since(start)
				if kill.atEnd {
					close(enough)
				}
			default:
				if run.firstRemoval == 0 {
					run.firstRemoval = time.Since(start)
				}
				run.removed[kind]++
				if n++; n == kill.removals {
					close(enough)
				}
			}
			mu.Unlock()
		}
	}()
	exited := make(chan error, 1)
	go func() {
		<-lines // Wait closes the pipe: read it to its end first
		exited <- cmd.Wait()
	}()
	var begin time.Time
	select {
	case begin = <-began:
	case err := <-exited:
		mu.Lock()
		defer mu.Unlock()
		t.Fatalf("the collector exited before collecting: %v\n%s", err, output.String())
	}
	var killNow <-chan time.Time // nil: no deadline
	if kill.after > 0 {
		killNow = time.After(time.Until(begin.Add(kill.after)))
	}
	select {
	case run.err = <-exited:
		run.finished = true
	case <-killNow:
	case <-enough:
	}
	if !run.finished {
		run.killedAt = time.Since(begin)
		if err := cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
			t.Fatal(err)
		}
		// It may have ended on its own just before.
		if err := <-exited; err == nil {
			run.finished = true
		}
	}
	mu.Lock()
	defer mu.Unlock()
	run.output = output.String()
	return run
}

// lockedWriter serialises writes to w.
type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}

// gcKillChild is the collector process: it collects the store at root and
// reports each removal on its standard output as it happens.
func gcKillChild(t *testing.T, root string) {
	d, err := filesystem.New(root)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	s := NewWithOptions(d, Options{GracePeriod: testGrace})
	var mu sync.Mutex
	say := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintf(os.Stdout, gcKillLine+format+"\n", args...)
	}
	say("begin")
	_, err = s.CollectGarbage(context.Background(), GCOptions{
		DeleteUntagged: true,
		OnRemove:       func(r Removal) { say("%s %s %s", r.Kind, r.Repository, r.Digest) },
	})
	if err != nil {
		t.Fatal(err)
	}
	say("end")
	if os.Getenv(gcKillHoldEnv) != "" {
		select {} // until killed, before the driver is closed
	}
}

// gcKillSnapshot is what a store holds, as sorted lists read from its files.
type gcKillSnapshot struct {
	blobs     []string // blob digests
	manifests []string // repository@digest of each revision
	links     []string // repository@digest of each blob link
}

func readGCKillState(t *testing.T, root string) gcKillSnapshot {
	t.Helper()
	var st gcKillSnapshot
	base := filepath.Join(root, "docker", "registry", "v2")
	err := filepath.WalkDir(base, func(p string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(base, p)
		parts := strings.Split(filepath.ToSlash(rel), "/")
		switch {
		case parts[0] == "blobs" && len(parts) == 5 && parts[4] == "data":
			st.blobs = append(st.blobs, parts[1]+":"+parts[3])
		case parts[0] == "repositories" && e.Name() == "link":
			s := strings.Join(parts[1:], "/")
			if repo, rest, ok := strings.Cut(s, "/_manifests/revisions/"); ok {
				st.manifests = append(st.manifests, repo+"@"+strings.TrimSuffix(rest, "/link"))
			} else if repo, rest, ok := strings.Cut(s, "/_layers/"); ok {
				st.links = append(st.links, repo+"@"+strings.TrimSuffix(rest, "/link"))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(st.blobs)
	slices.Sort(st.manifests)
	slices.Sort(st.links)
	return st
}

func diffDigests(a, b []string) []string {
	var out []string
	for _, x := range a {
		if _, found := slices.BinarySearch(b, x); !found {
			out = append(out, x)
		}
	}
	return out
}

// doomedMarkers returns the doomed marker files under root and when each
// was written.
func doomedMarkers(t *testing.T, root string) map[string]time.Time {
	t.Helper()
	out := map[string]time.Time{}
	dir := filepath.Join(root, "docker", "registry", "v2", "_berth", "doomed")
	err := filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil || e.IsDir() {
			return err
		}
		fi, err := e.Info()
		if err != nil {
			return err
		}
		out[p] = fi.ModTime()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// copyTree copies the files under src to dst.
func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		info, err := e.Info()
		if err != nil {
			return err
		}
		if e.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if err := os.WriteFile(target, b, 0o644); err != nil {
			return err
		}
		return os.Chtimes(target, info.ModTime(), info.ModTime())
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestGCKilledCollectorJournalReplay: a collector killed after it removed
// an image's blobs, before its journal was checkpointed; the registry,
// still running, is pushed the same image again; then another process
// opens the store (the next collection, a replica starting). Replaying the
// dead collector's journal there deleted the blobs again, under the
// manifest the registry had acknowledged since; journals of a process
// that died in this boot are no longer replayed (filesystem/boot.go).
func TestGCKilledCollectorJournalReplay(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a collector in a child process")
	}
	root := t.TempDir()
	d, err := filesystem.New(root)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	s := NewWithOptions(d, Options{GracePeriod: testGrace})
	payload := image(t, s, "a", "x", nil)
	res, err := s.PutManifest(ctx, "a", "v1", MediaTypeOCIManifest, payload)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteManifest(ctx, "a", res.Digest); err != nil {
		t.Fatal(err)
	}
	age(t, root)

	run := runGCChild(t, root, gcKillPoint{atEnd: true})
	if run.finished || run.removed["blob"] != 3 {
		t.Fatalf("collector: finished %v, removed %s, want 3 blobs and a kill\n%s", run.finished, run.summary(), run.output)
	}
	if again := image(t, s, "a", "x", nil); !bytes.Equal(again, payload) {
		t.Fatal("the same image differs")
	}
	if _, err := s.PutManifest(ctx, "a", "v2", MediaTypeOCIManifest, payload); err != nil {
		t.Fatal(err)
	}
	if err := pullAllErr(s, "a", "v2"); err != nil {
		t.Fatalf("pushed again: %v", err)
	}
	other, err := filesystem.New(root)
	if err != nil {
		t.Fatal(err)
	}
	other.Close()
	if err := pullAllErr(s, "a", "v2"); err != nil {
		t.Errorf("an image pushed after the collector died is broken once another process opened the store: %v", err)
	}
}
