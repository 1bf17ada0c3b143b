package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-registry/berth/storage"
	"github.com/berth-registry/berth/storage/driver/filesystem"
)

// The storage commands run in-process (rootCommand) on a data directory
// that the tests fill through the storage package, with a grace period of
// 2s; files are back-dated (ageStorage) rather than waited for.

const testGracePeriod = 2 * time.Second

// writeConfig writes a configuration for the data directory root with the
// test grace period; gc is more of the storage.gc mapping (indented by 4)
// and extra more top-level storage keys (indented by 2).
func writeConfig(t *testing.T, root, gc, extra string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.yml")
	text := fmt.Sprintf("version: 0.1\nstorage:\n  filesystem: {rootdirectory: %q}\n  gc:\n    graceperiod: %v\n%s%s",
		root, testGracePeriod, gc, extra)
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// openTestStore opens root as the commands do, with the test grace period.
func openTestStore(t *testing.T, root string) *storage.Store {
	t.Helper()
	d, err := filesystem.New(root)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := d.Close(); err != nil {
			t.Error(err)
		}
	})
	return storage.NewWithOptions(d, storage.Options{GracePeriod: testGracePeriod})
}

// runCommand runs the registry command with args and returns what it
// printed on stdout and stderr.
func runCommand(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	cmd := rootCommand()
	var out, errOut bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	cmd.SetArgs(args)
	err = cmd.Execute()
	return out.String(), errOut.String(), err
}

// mustRun is runCommand that fails the test when the command fails.
func mustRun(t *testing.T, args ...string) string {
	t.Helper()
	out, errOut, err := runCommand(t, args...)
	if err != nil {
		t.Fatalf("registry %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, out, errOut)
	}
	return out
}

// testImage is what pushImage stored.
type testImage struct {
	manifest, config digest.Digest
	layers           []digest.Digest
}

// blobs is every blob of the image, the manifest included.
func (im testImage) blobs() []digest.Digest {
	return append([]digest.Digest{im.manifest, im.config}, im.layers...)
}

// putBlob stores content as a blob of repo and returns its digest.
func putBlob(t *testing.T, s *storage.Store, repo string, content []byte) digest.Digest {
	t.Helper()
	dg := digest.FromBytes(content)
	if _, err := s.PutBlob(t.Context(), repo, dg, bytes.NewReader(content)); err != nil {
		t.Fatalf("put blob %s in %s: %v", dg, repo, err)
	}
	return dg
}

// randomBytes returns n random bytes, so each test blob is unique.
func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

// pushImage stores an OCI image with a fresh config and the given layers in
// repo; ref is a tag, or "" to push it by digest (untagged).
func pushImage(t *testing.T, s *storage.Store, repo, ref string, layers ...[]byte) testImage {
	t.Helper()
	cfg := []byte(fmt.Sprintf(`{"architecture":"amd64","os":"linux","config":{},"rootfs":{"type":"layers","diff_ids":[]},"comment":"%x"}`, randomBytes(8)))
	im := testImage{config: putBlob(t, s, repo, cfg)}
	m := ocispec.Manifest{
		MediaType: ocispec.MediaTypeImageManifest,
		Config:    ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: im.config, Size: int64(len(cfg))},
	}
	m.SchemaVersion = 2
	for _, l := range layers {
		dg := putBlob(t, s, repo, l)
		im.layers = append(im.layers, dg)
		m.Layers = append(m.Layers, ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayer, Digest: dg, Size: int64(len(l))})
	}
	payload, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	im.manifest = digest.FromBytes(payload)
	if ref == "" {
		ref = im.manifest.String()
	}
	if _, err := s.PutManifest(t.Context(), repo, ref, ocispec.MediaTypeImageManifest, payload); err != nil {
		t.Fatalf("push %s:%s: %v", repo, ref, err)
	}
	return im
}

// blobFile is where the filesystem layout (Distribution's) keeps dg.
func blobFile(root string, dg digest.Digest) string {
	return filepath.Join(root, "docker", "registry", "v2", "blobs", dg.Algorithm().String(), dg.Encoded()[:2], dg.Encoded(), "data")
}

func blobStored(t *testing.T, root string, dg digest.Digest) bool {
	t.Helper()
	_, err := os.Stat(blobFile(root, dg))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	return err == nil
}

// checkBlobs fails the test unless each of dgs is stored (want) or gone.
func checkBlobs(t *testing.T, root string, want bool, what string, dgs ...digest.Digest) {
	t.Helper()
	for _, dg := range dgs {
		if got := blobStored(t, root, dg); got != want {
			t.Errorf("%s: blob %s stored = %v, want %v", what, dg, got, want)
		}
	}
}

// checkPullable fails the test unless im reads back whole from repo:ref.
func checkPullable(t *testing.T, s *storage.Store, repo, ref string, im testImage) {
	t.Helper()
	m, err := s.GetManifest(t.Context(), repo, ref)
	if err != nil {
		t.Errorf("pull %s:%s: %v", repo, ref, err)
		return
	}
	if m.Digest != im.manifest {
		t.Errorf("pull %s:%s: manifest %s, want %s", repo, ref, m.Digest, im.manifest)
	}
	for _, dg := range append([]digest.Digest{im.config}, im.layers...) {
		rc, _, err := s.OpenBlob(t.Context(), repo, dg, 0)
		if err != nil {
			t.Errorf("pull %s:%s: blob %s: %v", repo, ref, dg, err)
			continue
		}
		rc.Close()
	}
}

// ageStorage back-dates every file of the content tree (blobs, links,
// leases) by an hour, well past the test grace period.
func ageStorage(t *testing.T, root string) {
	t.Helper()
	old := time.Now().Add(-time.Hour)
	err := filepath.Walk(filepath.Join(root, "docker"), func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Chtimes(p, old, old)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// setTagTime sets when tag of repo counts as pushed.
func setTagTime(t *testing.T, root, repo, tag string, at time.Time) {
	t.Helper()
	p := filepath.Join(root, "docker", "registry", "v2", "repositories", repo, "_manifests", "tags", tag, "current", "link")
	if err := os.Chtimes(p, at, at); err != nil {
		t.Fatal(err)
	}
}

func TestGarbageCollectCommand(t *testing.T) {
	root := t.TempDir()
	s := openTestStore(t, root)
	img := pushImage(t, s, "team/app", "latest", randomBytes(3000), randomBytes(2000))
	orphanContent := randomBytes(1234)
	orphan := putBlob(t, s, "team/app", orphanContent) // pushed, never referenced
	cfg := writeConfig(t, root, "", "")

	// Young content stays: a client may still be pushing the manifest
	// that references it.
	out := mustRun(t, "garbage-collect", cfg)
	if !strings.Contains(out, "removed 0 blobs (0 B, 0 bytes)") || strings.Contains(out, orphan.String()) {
		t.Fatalf("collection within the grace period removed something:\n%s", out)
	}
	checkBlobs(t, root, true, "within the grace period", orphan)

	ageStorage(t, root)
	for _, flag := range []string{"--dry-run", "-d"} {
		out = mustRun(t, "garbage-collect", flag, cfg)
		for _, want := range []string{
			"would remove blob " + orphan.String() + " (1234 bytes)\n",
			"would remove link team/app@" + orphan.String() + "\n",
			"dry run, nothing was removed; would remove 1 blob (1.2 KiB, 1234 bytes), 0 manifests, 0 tags and 1 link",
		} {
			if !strings.Contains(out, want) {
				t.Errorf("garbage-collect %s: output lacks %q:\n%s", flag, want, out)
			}
		}
		checkBlobs(t, root, true, "after a dry run", orphan)
	}

	out = mustRun(t, "garbage-collect", cfg)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	slices.Sort(lines[:len(lines)-1])
	want := []string{
		"removed blob " + orphan.String() + " (1234 bytes)",
		"removed link team/app@" + orphan.String(),
	}
	if len(lines) != 3 || !slices.Equal(lines[:2], want) {
		t.Fatalf("garbage-collect printed\n%s\nwant the lines\n%s\nand a summary", out, strings.Join(want, "\n"))
	}
	if !strings.HasPrefix(lines[2], "removed 1 blob (1.2 KiB, 1234 bytes), 0 manifests, 0 tags and 1 link; 1 repository, 1 manifest, 5 blobs seen") {
		t.Errorf("summary: %s", lines[2])
	}
	checkBlobs(t, root, false, "after a collection", orphan)
	checkBlobs(t, root, true, "referenced", img.blobs()...)
	checkPullable(t, s, "team/app", "latest", img)
	if _, err := s.StatBlob(t.Context(), "team/app", orphan); !errors.Is(err, storage.ErrBlobUnknown) {
		t.Errorf("HEAD of the collected blob: %v, want ErrBlobUnknown", err)
	}

	// The store still takes the content, and a second collection has
	// nothing to do.
	putBlob(t, s, "team/app", orphanContent)
	checkBlobs(t, root, true, "pushed again", orphan)
	if out = mustRun(t, "garbage-collect", cfg); !strings.Contains(out, "removed 0 blobs") {
		t.Errorf("second collection:\n%s", out)
	}
}

func TestGarbageCollectDeleteUntagged(t *testing.T) {
	root := t.TempDir()
	s := openTestStore(t, root)
	shared := randomBytes(1000)
	tagged := pushImage(t, s, "team/app", "latest", shared, randomBytes(1000))
	untagged := pushImage(t, s, "team/app", "", shared, randomBytes(1000))
	ageStorage(t, root)
	cfg := writeConfig(t, root, "", "")

	// Without the flag every manifest stays, with what it references.
	out := mustRun(t, "garbage-collect", cfg)
	if !strings.Contains(out, "removed 0 blobs") {
		t.Fatalf("garbage-collect without --delete-untagged:\n%s", out)
	}
	checkBlobs(t, root, true, "untagged, without --delete-untagged", untagged.blobs()...)

	out = mustRun(t, "garbage-collect", "-m", cfg)
	if !strings.Contains(out, "removed manifest team/app@"+untagged.manifest.String()+"\n") {
		t.Errorf("garbage-collect -m does not report the manifest:\n%s", out)
	}
	if !strings.Contains(out, "removed 3 blobs") || !strings.Contains(out, ", 1 manifest, 0 tags and 2 links;") {
		t.Errorf("garbage-collect -m summary:\n%s", out)
	}
	if _, err := s.GetManifest(t.Context(), "team/app", untagged.manifest.String()); !errors.Is(err, storage.ErrManifestUnknown) {
		t.Errorf("untagged manifest after -m: %v, want ErrManifestUnknown", err)
	}
	checkBlobs(t, root, false, "untagged image's own", untagged.manifest, untagged.config, untagged.layers[1])
	checkBlobs(t, root, true, "tagged image's", tagged.blobs()...)
	checkPullable(t, s, "team/app", "latest", tagged)
}

// TestGarbageCollectUsesConfig: the configuration's dryrun,
// deleteuntagged and retention rules apply to the command.
func TestGarbageCollectUsesConfig(t *testing.T) {
	root := t.TempDir()
	s := openTestStore(t, root)
	imgs := map[string]testImage{}
	for _, tag := range []string{"v1", "old1", "old2", "new"} {
		imgs[tag] = pushImage(t, s, "team/app", tag, randomBytes(500))
	}
	other := pushImage(t, s, "other/app", "old", randomBytes(500))
	ageStorage(t, root)
	now := time.Now()
	for i, tag := range []string{"v1", "old1", "old2", "new"} {
		setTagTime(t, root, "team/app", tag, now.Add(-time.Duration(10-i)*time.Hour))
	}
	retention := `    deleteuntagged: true
    retention:
      - repositories: "team/**"
        keeplast: 1
        keeptags: "^v[0-9]+"
        tagsolderthan: 1h
`

	// dryrun in the file wins over the absence of the flag.
	out := mustRun(t, "garbage-collect", writeConfig(t, root, "    dryrun: true\n"+retention, ""))
	for _, want := range []string{"would remove tag team/app:old1 (was " + imgs["old1"].manifest.String() + ")",
		"would remove tag team/app:old2", "would remove manifest team/app@" + imgs["old2"].manifest.String()} {
		if !strings.Contains(out, want) {
			t.Errorf("dry run from the config lacks %q:\n%s", want, out)
		}
	}
	for _, im := range imgs {
		checkBlobs(t, root, true, "after a dry run from the config", im.blobs()...)
	}

	out = mustRun(t, "garbage-collect", writeConfig(t, root, retention, ""))
	if !strings.Contains(out, "removed 6 blobs") || !strings.Contains(out, ", 2 manifests, 2 tags and 4 links;") {
		t.Errorf("retention run:\n%s", out)
	}
	for _, tag := range []string{"old1", "old2"} {
		checkBlobs(t, root, false, "dropped tag "+tag, imgs[tag].blobs()...)
		if _, err := s.GetManifest(t.Context(), "team/app", tag); !errors.Is(err, storage.ErrManifestUnknown) {
			t.Errorf("dropped tag %s: %v, want ErrManifestUnknown", tag, err)
		}
	}
	for _, tag := range []string{"v1", "new"} { // kept by keeptags, keeplast
		checkPullable(t, s, "team/app", tag, imgs[tag])
	}
	checkPullable(t, s, "other/app", "old", other) // no rule matches
	tags, _, err := s.Tags(t.Context(), "team/app", storage.Page{N: -1})
	if err != nil || !slices.Equal(tags, []string{"new", "v1"}) {
		t.Errorf("tags after retention: %v, %v; want [new v1]", tags, err)
	}
}

func TestRepositoryDeleteCommand(t *testing.T) {
	root := t.TempDir()
	s := openTestStore(t, root)
	shared := randomBytes(800)
	gone := pushImage(t, s, "team/app", "latest", shared, randomBytes(800))
	if _, err := s.PutManifest(t.Context(), "team/app", "v1", ocispec.MediaTypeImageManifest, mustManifest(t, s, "team/app", gone.manifest)); err != nil {
		t.Fatal(err)
	}
	stays := pushImage(t, s, "team/other", "latest", shared, randomBytes(800))
	cfg := writeConfig(t, root, "", "")

	out := mustRun(t, "repository", "delete", "team/app", cfg)
	for _, want := range []string{"deleted repository team/app: 2 tags (latest, v1)", "next garbage collection", "(2s)"} {
		if !strings.Contains(out, want) {
			t.Errorf("repository delete output lacks %q:\n%s", want, out)
		}
	}
	repos, _, err := s.Catalog(t.Context(), storage.Page{N: -1})
	if err != nil || !slices.Equal(repos, []string{"team/other"}) {
		t.Errorf("catalog after repository delete: %v, %v; want [team/other]", repos, err)
	}
	if _, err := s.GetManifest(t.Context(), "team/app", "latest"); err == nil {
		t.Error("a tag of the deleted repository still resolves")
	}
	if _, _, err := runCommand(t, "repository", "delete", "team/app", cfg); err == nil || !strings.Contains(err.Error(), "team/app") {
		t.Errorf("deleting it again: %v, want an error naming it", err)
	}
	if _, _, err := runCommand(t, "repository", "delete", "Bad Name", cfg); err == nil {
		t.Error("an invalid name was accepted")
	}

	ageStorage(t, root)
	out = mustRun(t, "garbage-collect", cfg)
	if !strings.Contains(out, "removed 3 blobs") {
		t.Errorf("collection after repository delete:\n%s", out)
	}
	checkBlobs(t, root, false, "the deleted repository's own", gone.manifest, gone.config, gone.layers[1])
	checkBlobs(t, root, true, "shared with another repository", gone.layers[0])
	checkPullable(t, s, "team/other", "latest", stays)
}

// mustManifest reads the payload of manifest dg of repo.
func mustManifest(t *testing.T, s *storage.Store, repo string, dg digest.Digest) []byte {
	t.Helper()
	m, err := s.GetManifest(t.Context(), repo, dg.String())
	if err != nil {
		t.Fatal(err)
	}
	return m.Payload
}

// TestGarbageCollectWhileAnotherRuns: a second collection on the same
// storage gives up with a clear error, and removes nothing.
func TestGarbageCollectWhileAnotherRuns(t *testing.T) {
	root := t.TempDir()
	s := openTestStore(t, root)
	putBlob(t, s, "team/app", randomBytes(100))
	ageStorage(t, root)
	cfg := writeConfig(t, root, "", "")

	// The first collection holds the lock until the test lets its first
	// removal return.
	started, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	done := make(chan error, 1)
	go func() {
		_, err := s.CollectGarbage(context.Background(), storage.GCOptions{OnRemove: func(storage.Removal) {
			once.Do(func() { close(started) })
			<-release
		}})
		done <- err
	}()
	select {
	case <-started:
	case err := <-done:
		t.Fatalf("the first collection ended early: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("the first collection removed nothing within 20s")
	}
	out, _, err := runCommand(t, "garbage-collect", cfg)
	close(release)
	if err == nil || !errors.Is(err, storage.ErrGCRunning) || !strings.Contains(err.Error(), "nothing was removed") {
		t.Errorf("garbage-collect beside another collection: %v, want ErrGCRunning saying nothing was removed", err)
	}
	if out != "" {
		t.Errorf("garbage-collect beside another collection printed:\n%s", out)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// Once the other has finished, the lock is free again.
	if out := mustRun(t, "garbage-collect", cfg); !strings.Contains(out, "removed 0 blobs") {
		t.Errorf("garbage-collect after the other finished:\n%s", out)
	}
}

func TestStorageCommandsNeedTheRoot(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "nope")
	cfg := writeConfig(t, missing, "", "")
	for _, args := range [][]string{{"garbage-collect", cfg}, {"purge-uploads", cfg}, {"repository", "delete", "a", cfg}} {
		if _, _, err := runCommand(t, args...); err == nil || !strings.Contains(err.Error(), "rootdirectory") {
			t.Errorf("registry %s on a missing root: %v", args[0], err)
		}
	}
	if _, err := os.Stat(missing); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the missing root was created: %v", err)
	}
}

func TestPurgeUploadsCommand(t *testing.T) {
	root := t.TempDir()
	s := openTestStore(t, root)
	abandoned, err := s.StartUpload(t.Context(), "team/app")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.AppendUpload(t.Context(), "team/app", abandoned, 0, bytes.NewReader(randomBytes(10))); err != nil {
		t.Fatal(err)
	}
	// Begun and last written two hours ago (Distribution's start time
	// format), against an age of one hour: no timing depends on the
	// machine's speed.
	upload := filepath.Join(root, "docker", "registry", "v2", "repositories", "team", "app", "_uploads", abandoned)
	then := time.Now().Add(-2 * time.Hour)
	if err := os.WriteFile(filepath.Join(upload, "startedat"), []byte(then.UTC().Format(time.RFC3339)), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"startedat", "data", filepath.Join("hashstates", "sha256", "10")} {
		if err := os.Chtimes(filepath.Join(upload, f), then, then); err != nil {
			t.Fatal(err)
		}
	}
	cfg := writeConfig(t, root, "", "  maintenance:\n    uploadpurging: {age: 1h}\n")
	fresh, err := s.StartUpload(t.Context(), "team/app")
	if err != nil {
		t.Fatal(err)
	}

	out := mustRun(t, "purge-uploads", "--dry-run", cfg)
	if !strings.Contains(out, "would remove upload team/app "+abandoned+"\n") || !strings.Contains(out, "would remove 1 of 2 upload sessions") {
		t.Errorf("purge-uploads --dry-run:\n%s", out)
	}
	if _, err := s.UploadSize(t.Context(), "team/app", abandoned); err != nil {
		t.Errorf("the abandoned session after a dry run: %v", err)
	}
	out = mustRun(t, "purge-uploads", cfg)
	if !strings.Contains(out, "removed upload team/app "+abandoned+"\n") || !strings.Contains(out, "removed 1 of 2 upload sessions") ||
		strings.Contains(out, fresh) {
		t.Errorf("purge-uploads:\n%s", out)
	}
	if _, err := s.UploadSize(t.Context(), "team/app", abandoned); !errors.Is(err, storage.ErrUploadUnknown) {
		t.Errorf("the abandoned session after a purge: %v, want ErrUploadUnknown", err)
	}
	if _, err := s.UploadSize(t.Context(), "team/app", fresh); err != nil {
		t.Errorf("the fresh session after a purge: %v", err)
	}
}

func TestHumanBytes(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 1536: "1.5 KiB",
		5 << 20: "5.0 MiB", 3 << 30: "3.0 GiB", 1 << 62: "4.0 EiB"} {
		if got := humanBytes(n); got != want {
			t.Errorf("humanBytes(%d) = %q, want %q", n, got, want)
		}
	}
}
