package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestMirrorMode runs the mirror mode for one round with a tiny image:
// every pull succeeds, both tables and both ratios are printed, each pull
// moved the whole image, and the cold round's mirror is gone afterwards.
func TestMirrorMode(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("no go command to build the registry with: %v", err)
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "registry")
	if out, err := exec.Command(goBin, "build", "-o", bin, "../registry").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	// Over loopback, and through a link of limited bandwidth (the
	// mirror and the direct pulls then reach the upstream through it).
	for _, rate := range []string{"0", "64MiB"} {
		t.Run("upstream-rate="+rate, func(t *testing.T) { mirrorRound(t, bin, filepath.Join(dir, "w"+rate), rate) })
	}
}

func mirrorRound(t *testing.T, bin, wd, rate string) {
	var out, errOut bytes.Buffer
	err := run(context.Background(), []string{"mirror", "--berth", bin, "--workdir", wd,
		"--rounds", "1", "--layers", "2", "--layer-size", "64KiB", "--upstream-rate", rate}, &out, &errOut)
	if err != nil {
		t.Fatalf("mirror: %v\n%s\n%s", err, out.String(), errOut.String())
	}
	text := out.String()
	rs := results(t, text)
	want := map[string]bool{"pull-cold mirror-cold-1": false, "pull-cold upstream": false, "pull-cached mirror-cached": false, "pull-cached pushed": false}
	for _, r := range rs {
		key := r.Test + " " + r.Target
		if _, ok := want[key]; !ok {
			t.Errorf("unexpected result %+v", r)
			continue
		}
		want[key] = true
		// The config's few hundred bytes and two layers of 64 KiB.
		if r.Error != "" || r.Round != 1 || r.Value <= 0 || r.Bytes <= 2*64<<10 || r.Bytes > 2*64<<10+1024 {
			t.Errorf("%s: %+v", key, r)
		}
	}
	for key, seen := range want {
		if !seen {
			t.Errorf("no result for %s:\n%s", key, text)
		}
	}
	for _, re := range []string{
		`(?m)^pull-cold +MB/s +[0-9.]+ +[0-9.]+ +[0-9.]+ `,
		`(?m)^pull-cached +MB/s +[0-9.]+ +[0-9.]+ +[0-9.]+ `,
		`(?m)^pull-cold: mirror/direct [0-9]+\.[0-9]{2} \(median of 1 and 1 rounds\)$`,
		`(?m)^pull-cached: mirror/direct [0-9]+\.[0-9]{2} \(median of 1 and 1 rounds\)$`,
		`goal: mirror/direct at least 0\.90`,
	} {
		if !regexp.MustCompile(re).MatchString(text) {
			t.Errorf("output lacks %s:\n%s", re, text)
		}
	}
	if _, err := os.Stat(filepath.Join(wd, "mirror-cold-1-data")); !os.IsNotExist(err) {
		t.Errorf("the cold round's storage is still there (%v)", err)
	}
	// The cached mirror holds the image it was filled with.
	if n := storedBlobs(filepath.Join(wd, "mirror-cached-data")); n != 4 {
		t.Errorf("the cached mirror stored %d blobs, want the config, two layers and the manifest", n)
	}
	if !strings.Contains(errOut.String(), "2 layers of 64KiB, 1 rounds") {
		t.Errorf("stderr does not describe the run: %s", errOut.String())
	}
}
