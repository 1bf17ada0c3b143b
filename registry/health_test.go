package registry

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berth-registry/berth/storage"
	"github.com/berth-registry/berth/storage/driver"
	"github.com/berth-registry/berth/storage/driver/filesystem"
)

// awayDriver is a filesystem driver whose stats fail while away is set, as
// when the storage behind it stops answering.
type awayDriver struct {
	*filesystem.Driver
	away atomic.Bool
}

func (d *awayDriver) Stat(ctx context.Context, p string) (driver.FileInfo, error) {
	if d.away.Load() {
		return driver.FileInfo{}, &driver.PathError{Op: "stat", Path: p, Err: errors.New("connection refused")}
	}
	return d.Driver.Stat(ctx, p)
}

// TestStorageCheckFlipsReadiness: readiness fails only after threshold
// failed checks in a row, liveness and the check's own state never depend
// on a request, and one good check brings readiness back.
func TestStorageCheckFlipsReadiness(t *testing.T) {
	fs, err := filesystem.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fs.Close() })
	d := &awayDriver{Driver: fs}
	store := storage.New(d)
	check := NewStorageCheck(store, time.Hour, 2)
	h := New(Config{Store: store, StorageCheck: check})
	ctx := context.Background()

	check.Check(ctx) // an empty registry has no repositories directory: passes
	run(t, h, []step{{method: "GET", path: "/readyz", status: 200}})
	d.away.Store(true)
	check.Check(ctx)
	run(t, h, []step{{method: "GET", path: "/readyz", status: 200}}) // one failure is below the threshold
	check.Check(ctx)
	run(t, h, []step{
		{method: "GET", path: "/readyz", status: 503, wantBody: "not ready: storage is failing", want: map[string]string{"Retry-After": "30"}},
		{method: "GET", path: "/healthz", status: 200},
	})
	if err := check.Err(); err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("Err = %v, want the last failure", err)
	}
	// Distribution's /debug/health says the same, with the cause.
	rec := httptest.NewRecorder()
	h.DebugHealth(rec, httptest.NewRequest("GET", "/debug/health", nil))
	var failing map[string]string
	if err := json.Unmarshal(rec.Body.Bytes(), &failing); err != nil || rec.Code != 503 ||
		len(failing) != 1 || !strings.Contains(failing["storagedriver"], "connection refused") {
		t.Fatalf("/debug/health: %d %s (%v)", rec.Code, rec.Body, err)
	}
	d.away.Store(false)
	check.Check(ctx)
	run(t, h, []step{{method: "GET", path: "/readyz", status: 200}})
	rec = httptest.NewRecorder()
	h.DebugHealth(rec, httptest.NewRequest("GET", "/debug/health", nil))
	if rec.Code != 200 || rec.Body.String() != "{}\n" {
		t.Fatalf("/debug/health after recovery: %d %q", rec.Code, rec.Body)
	}
}

// TestStorageCheckRuns: Run checks at once and then every interval, so
// readiness follows storage without any request.
func TestStorageCheckRuns(t *testing.T) {
	fs, err := filesystem.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fs.Close() })
	d := &awayDriver{Driver: fs}
	d.away.Store(true)
	check := NewStorageCheck(storage.New(d), 5*time.Millisecond, 3)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { check.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	waitFor(t, func() bool { return check.Err() != nil })
	d.away.Store(false)
	waitFor(t, func() bool { return check.Err() == nil })
}

// TestReadOnly: in read-only mode every write is refused with 405
// UNSUPPORTED and nothing is written, while pulls, listings and readiness
// go on.
func TestReadOnly(t *testing.T) {
	store := newTestStore(t, storage.Options{})
	pushImage(t, store, "team/app", "v1")
	h := newTestHandler(t, Config{Store: store, DeleteEnabled: true, ReadOnly: true})
	const manifest = `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}`
	run(t, h, []step{
		{method: "POST", path: "/v2/team/app/blobs/uploads/", status: http.StatusMethodNotAllowed, code: "UNSUPPORTED",
			wantBody: `{"errors":[{"code":"UNSUPPORTED","message":"the registry is in read-only mode: pushes and deletes are refused"}]}`},
		{method: "PATCH", path: "/v2/team/app/blobs/uploads/x", status: http.StatusMethodNotAllowed, code: "UNSUPPORTED"},
		{method: "PUT", path: "/v2/team/app/manifests/v2", body: manifest,
			header: map[string]string{"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
			status: http.StatusMethodNotAllowed, code: "UNSUPPORTED"},
		{method: "DELETE", path: "/v2/team/app/manifests/v1", status: http.StatusMethodNotAllowed, code: "UNSUPPORTED"},
		{method: "DELETE", path: "/v2/team/app/", status: http.StatusMethodNotAllowed, code: "UNSUPPORTED"},
		{method: "GET", path: "/v2/team/app/manifests/v1", status: http.StatusOK},
		{method: "HEAD", path: "/v2/team/app/manifests/v1", status: http.StatusOK},
		{method: "GET", path: "/v2/team/app/tags/list", status: http.StatusOK, wantBody: `{"name":"team/app","tags":["v1"]}`},
		{method: "GET", path: "/v2/_catalog", status: http.StatusOK, wantBody: `{"repositories":["team/app"]}`},
		{method: "GET", path: "/readyz", status: http.StatusOK},
	})
	// Nothing was written: the refused tag does not exist, v1 still does.
	if _, err := store.GetManifest(context.Background(), "team/app", "v2"); !errors.Is(err, storage.ErrManifestUnknown) {
		t.Fatalf("v2 after a refused push: %v, want ErrManifestUnknown", err)
	}
}
