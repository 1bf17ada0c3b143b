package storage

import (
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"
)

// Forty pushes and forty pulls of one tag at once: every request succeeds
// and every pull gets one of the pushed manifests, whole. On Windows, with
// files opened the os package's way, readers blocked the writers' renames
// ("Access is denied") and writers the readers ("sharing violation").
func TestConcurrentTagPushesAndPulls(t *testing.T) {
	s, _ := newStore(t)
	const n = 40
	payloads := make([][]byte, n)
	pushed := map[digest.Digest]bool{}
	for i := range payloads {
		payloads[i] = image(t, s, "app", string(rune('a'+i%26))+string(rune('a'+i/26)), nil)
		pushed[digest.FromBytes(payloads[i])] = true
	}
	if _, err := s.PutManifest(ctx, "app", "latest", MediaTypeOCIManifest, payloads[0]); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 2*n)
	for i := range n {
		wg.Go(func() {
			if _, err := s.PutManifest(ctx, "app", "latest", MediaTypeOCIManifest, payloads[i]); err != nil {
				errs <- err
			}
		})
		wg.Go(func() {
			m, err := s.GetManifest(ctx, "app", "latest")
			switch {
			case err != nil:
				errs <- err
			case !pushed[m.Digest] || digest.FromBytes(m.Payload) != m.Digest:
				t.Errorf("pull got %s, which no push sent or whose payload differs", m.Digest)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
