package wine

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/berth-registry/berth/internal/winetest"
)

// kills is how many times TestKillRestartLoopUnderWine kills the registry.
const kills = 21

// The registry under Wine is killed at random moments while three clients
// push, again and again. Every start succeeds; at the end every push that
// was acknowledged pulls with its digest, and every blob file's content
// hashes to its name.
func TestKillRestartLoopUnderWine(t *testing.T) {
	w := winetest.Need(t)
	s := newSite(t, w)
	s.writeRegistryConfig(t, "")

	var mu sync.Mutex
	acked := map[string]v1.Hash{}
	var attempts int
	for round := range kills {
		reg := s.startRegistry(t, "config/registry.yml", http.StatusOK)
		tr := remote.WithTransport(s.client(20 * time.Second).Transport) // one per process: see server.kill
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for c := range 3 {
			wg.Go(func() {
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					// Layers shared across pushes, and fresh ones.
					img, err := random.Image(int64(1000+rand.IntN(400_000)), 2)
					if err != nil {
						t.Error(err)
						return
					}
					ref := fmt.Sprintf("%s/kill/c%d:r%d-%d", s.registryHost(), c, round, i)
					r, _ := name.ParseReference(ref)
					mu.Lock()
					attempts++
					mu.Unlock()
					if err := remote.Write(r, img, tr); err != nil {
						continue // cut by the kill, or refused while it dies
					}
					dg, _ := img.Digest()
					mu.Lock()
					acked[ref] = dg
					mu.Unlock()
				}
			})
		}
		// At least half a second: a push is several requests, and each
		// chunk is now made durable (fsync) before it is acknowledged,
		// which Wine makes slow.
		time.Sleep(time.Duration(500+rand.IntN(1500)) * time.Millisecond)
		reg.kill()
		close(stop)
		wg.Wait()
	}
	t.Logf("%d kills during %d push attempts, %d acknowledged", kills, attempts, len(acked))
	if len(acked) < kills {
		t.Fatalf("only %d pushes acknowledged in %d rounds: the registry hardly served", len(acked), kills)
	}

	s.startRegistry(t, "config/registry.yml", http.StatusOK)
	tr := remote.WithTransport(s.client(60 * time.Second).Transport)
	for ref, want := range acked {
		r, _ := name.ParseReference(ref)
		img, err := remote.Image(r, tr)
		if err != nil {
			t.Errorf("acknowledged %s does not pull: %v", ref, err)
			continue
		}
		if got, _ := img.Digest(); got != want {
			t.Errorf("%s: digest %s, want %s", ref, got, want)
		}
		layers, err := img.Layers()
		if err != nil {
			t.Errorf("%s: %v", ref, err)
			continue
		}
		for _, l := range layers {
			rc, err := l.Compressed()
			if err != nil {
				t.Errorf("%s: layer: %v", ref, err)
				continue
			}
			_, err = io.Copy(io.Discard, rc) // ggcr checks the digest as it reads
			rc.Close()
			if err != nil {
				t.Errorf("%s: layer: %v", ref, err)
			}
		}
	}

	// Every blob file holds what its name says.
	blobs := filepath.Join(s.dir, "data", "docker", "registry", "v2", "blobs", "sha256")
	var checked int
	err := filepath.WalkDir(blobs, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Name() != "data" {
			return err
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		h := sha256.New()
		if _, err := io.Copy(h, f); err != nil {
			return err
		}
		if got, want := hex.EncodeToString(h.Sum(nil)), filepath.Base(filepath.Dir(p)); got != want {
			t.Errorf("blob %s holds content that hashes to %s", want, got)
		}
		checked++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d blob files hash to their names", checked)
}
