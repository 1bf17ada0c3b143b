package notify

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-registry/berth/internal/miniotest"
	"github.com/berth-registry/berth/storage/driver"
	"github.com/berth-registry/berth/storage/driver/filesystem"
	"github.com/berth-registry/berth/storage/driver/s3"
)

func newDriver(t *testing.T) driver.Driver {
	t.Helper()
	d, err := filesystem.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// receiver is an endpoint in the test: it records every envelope, or
// answers fail while fail is set.
type receiver struct {
	srv  *httptest.Server
	fail atomic.Bool
	mu   sync.Mutex
	got  []Event
	hits atomic.Int64
	when []time.Time // of every request
	ct   []string
}

func newReceiver(t *testing.T) *receiver {
	r := &receiver{}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.hits.Add(1)
		body, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		r.when = append(r.when, time.Now())
		r.ct = append(r.ct, req.Header.Get("Content-Type"))
		r.mu.Unlock()
		if r.fail.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		var env Envelope
		if err := json.Unmarshal(body, &env); err != nil || len(env.Events) != 1 {
			t.Errorf("envelope %s: %v, want one event", body, err)
		}
		r.mu.Lock()
		r.got = append(r.got, env.Events...)
		r.mu.Unlock()
		w.WriteHeader(http.StatusAccepted)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) events() []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Event(nil), r.got...)
}

// waitFor polls cond for up to 30s: long enough for a loaded machine, and
// only a failing test waits it out.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func pushEvent(repo string, i int) Event {
	dg := digest.FromString(repo + string(rune('a'+i)))
	return Event{Action: ActionPush, Target: Target{
		Descriptor: v1.Descriptor{MediaType: "application/octet-stream", Digest: dg, Size: int64(i)},
		Length:     int64(i), Repository: repo,
	}}
}

// queued returns the events in instance's queue for endpoint, in order.
func queued(t *testing.T, d driver.Driver, instance, endpoint string) []Event {
	t.Helper()
	ctx := context.Background()
	entries, err := d.ListPage(ctx, queueDir(instance, endpoint), "", 0)
	if errors.Is(err, driver.ErrNotFound) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var out []Event
	for _, e := range entries {
		b, err := d.GetContent(ctx, queueDir(instance, endpoint)+"/"+e.Name)
		if err != nil {
			t.Fatal(err)
		}
		var env Envelope
		if err := json.Unmarshal(b, &env); err != nil {
			t.Fatal(err)
		}
		out = append(out, env.Events...)
	}
	return out
}

func TestBreaker(t *testing.T) {
	b := breaker{threshold: 3, backoff: time.Second}
	now := time.Unix(1000, 0)
	for i := 0; i < 3; i++ {
		if d := b.delay(now); d != 0 {
			t.Fatalf("after %d failures: delay %v, want 0 (below the threshold attempts go on at once)", i, d)
		}
		b.failure(now)
	}
	if d := b.delay(now); d != time.Second {
		t.Fatalf("at the threshold: delay %v, want the backoff", d)
	}
	if d := b.delay(now.Add(400 * time.Millisecond)); d != 600*time.Millisecond {
		t.Fatalf("400ms later: delay %v, want 600ms", d)
	}
	if d := b.delay(now.Add(2 * time.Second)); d != 0 {
		t.Fatalf("past the backoff: delay %v, want 0", d)
	}
	b.failure(now.Add(2 * time.Second))
	if d := b.delay(now.Add(2 * time.Second)); d != time.Second {
		t.Fatalf("a further failure: delay %v, want the backoff again", d)
	}
	b.success()
	if d := b.delay(now.Add(2 * time.Second)); d != 0 {
		t.Fatalf("after a success: delay %v, want 0", d)
	}
}

func TestNames(t *testing.T) {
	for in, want := range map[string]string{
		"alistener": "alistener", "my hook/1": "my-hook-1", "..": "-..", "a_b.c@d": "a_b.c@d", "é": "--",
	} {
		if got := queueName(in); got != want {
			t.Errorf("queueName(%q) = %q, want %q", in, got, want)
		}
		if err := driver.CheckPath("t", "/x/"+queueName(in)); err != nil {
			t.Errorf("queueName(%q) is not a storage path component: %v", in, err)
		}
	}
	at := time.Unix(1700000000, 123456789)
	a, b := batchName(at, 9), batchName(at.Add(time.Nanosecond), 10)
	if !(a < b) || batchName(at, 10) <= a {
		t.Fatalf("batch names do not sort in write order: %s %s", a, b)
	}
	if got, ok := batchTime(a); !ok || !got.Equal(at) {
		t.Fatalf("batchTime(%s) = %v %v", a, got, ok)
	}
	if _, err := New(newDriver(t), Options{Endpoints: []Endpoint{{Name: "a b", URL: "http://x"}, {Name: "a/b", URL: "http://x"}}}); err == nil {
		t.Fatal("two endpoints with one queue directory accepted")
	}
	if _, err := New(newDriver(t), Options{Endpoints: []Endpoint{{Name: "a"}}}); err == nil {
		t.Fatal("an endpoint without url accepted")
	}
}

// TestDurableBeforeAnswer: Notify of a push returns only once the event is
// in storage, and a pull's Notify returns at once and is written within
// the flush interval. The receiver fails, so nothing is delivered away.
func TestDurableBeforeAnswer(t *testing.T) {
	d := newDriver(t)
	rc := newReceiver(t)
	rc.fail.Store(true)
	n, err := New(d, Options{Endpoints: []Endpoint{{Name: "hook", URL: rc.srv.URL, Threshold: 1, Backoff: time.Hour}},
		FlushInterval: 200 * time.Millisecond, SourceAddr: "reg:5000"})
	if err != nil {
		t.Fatal(err)
	}
	n.Start()
	defer n.Close(context.Background())
	ev := pushEvent("team/app", 1)
	ev.Request = RequestRecord{ID: "r1", Method: "PUT"}
	if err := n.Notify(context.Background(), ev); err != nil {
		t.Fatal(err)
	}
	got := queued(t, d, n.InstanceID(), "hook")
	if len(got) != 1 {
		t.Fatalf("after Notify returned: %d events in storage, want 1", len(got))
	}
	g := got[0]
	if g.ID == "" || g.Timestamp.IsZero() || g.Source.Addr != "reg:5000" || g.Source.InstanceID != n.InstanceID() ||
		g.Action != "push" || g.Target.Digest != ev.Target.Digest || g.Request.ID != "r1" {
		t.Fatalf("stored event %+v", g)
	}
	pull := pushEvent("team/app", 2)
	pull.Action = ActionPull
	if err := n.Notify(context.Background(), pull); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the pull event in storage", func() bool { return len(queued(t, d, n.InstanceID(), "hook")) == 2 })
}

// TestIgnore: ignore.actions, ignore.mediatypes and ignoredmediatypes
// keep events from an endpoint, and from storage when no endpoint wants
// them.
func TestIgnore(t *testing.T) {
	d := newDriver(t)
	all, noPull, noOctet := newReceiver(t), newReceiver(t), newReceiver(t)
	n, err := New(d, Options{Endpoints: []Endpoint{
		{Name: "all", URL: all.srv.URL},
		{Name: "nopull", URL: noPull.srv.URL, IgnoreActions: []string{"pull"}},
		{Name: "nooctet", URL: noOctet.srv.URL, IgnoreMediaTypes: []string{"application/octet-stream"}, IgnoredMediaTypes: []string{"application/x-other"}},
	}, FlushInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	n.Start()
	defer n.Close(context.Background())
	push, pull, other, manifest := pushEvent("a", 1), pushEvent("a", 2), pushEvent("a", 3), pushEvent("a", 4)
	pull.Action = ActionPull
	other.Target.MediaType = "application/x-other"
	manifest.Target.MediaType = v1.MediaTypeImageManifest
	for _, ev := range []Event{push, pull, other, manifest} {
		if err := n.Notify(context.Background(), ev); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "deliveries", func() bool {
		return len(all.events()) == 4 && len(noPull.events()) == 3 && len(noOctet.events()) == 1
	})
	time.Sleep(100 * time.Millisecond) // anything more would show now
	for _, ev := range noPull.events() {
		if ev.Action == "pull" {
			t.Errorf("ignore.actions [pull]: got %+v", ev)
		}
	}
	if got := noOctet.events(); len(got) != 1 || got[0].Target.MediaType != v1.MediaTypeImageManifest {
		t.Errorf("ignore.mediatypes and ignoredmediatypes: got %+v", got)
	}
	if len(all.events()) != 4 || len(noPull.events()) != 3 {
		t.Errorf("more deliveries than events: %d, %d", len(all.events()), len(noPull.events()))
	}
	// An event no endpoint wants is not even written.
	only, err := New(d, Options{Endpoints: []Endpoint{{Name: "x", URL: all.srv.URL, IgnoreActions: []string{"push"}}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := only.Notify(context.Background(), push); err != nil {
		t.Fatal(err)
	}
	if got := queued(t, d, only.InstanceID(), "x"); len(got) != 0 {
		t.Fatalf("an ignored event was queued: %+v", got)
	}
}

// TestRetryBackoff: a failing endpoint gets threshold attempts at once,
// then one per backoff, and every event once it answers 2xx, in order.
func TestRetryBackoff(t *testing.T) {
	d := newDriver(t)
	rc := newReceiver(t)
	rc.fail.Store(true)
	const backoff = 300 * time.Millisecond
	n, err := New(d, Options{Endpoints: []Endpoint{{Name: "hook", URL: rc.srv.URL, Threshold: 2, Backoff: backoff}}})
	if err != nil {
		t.Fatal(err)
	}
	n.Start()
	defer n.Close(context.Background())
	for i := range 3 {
		if err := n.Notify(context.Background(), pushEvent("a", i)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "four failed attempts", func() bool { return rc.hits.Load() >= 4 })
	rc.fail.Store(false)
	waitFor(t, "delivery", func() bool { return len(rc.events()) == 3 })
	rc.mu.Lock()
	when, ct := rc.when, rc.ct
	rc.mu.Unlock()
	// Attempts 3 and 4 each came at least one backoff after the failure
	// before them (a lower bound holds however loaded the machine is).
	for i := 2; i < 4; i++ {
		if gap := when[i].Sub(when[i-1]); gap < backoff-10*time.Millisecond {
			t.Errorf("attempt %d came %v after the failure before it, want ≥ %v", i+1, gap, backoff)
		}
	}
	for i, ev := range rc.events() {
		if ev.Target.Size != int64(i) {
			t.Errorf("event %d delivered out of order: %+v", i, ev.Target)
		}
	}
	for _, c := range ct {
		if c != EventsMediaType {
			t.Errorf("Content-Type %q", c)
		}
	}
	waitFor(t, "the queue drained", func() bool { return len(queued(t, d, n.InstanceID(), "hook")) == 0 })
}

// TestHangingEndpoint: an endpoint that accepts and never answers does not
// hold up Notify; its events wait in storage.
func TestHangingEndpoint(t *testing.T) {
	d := newDriver(t)
	entered := make(chan struct{}, 1)
	release := make(chan struct{})
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case entered <- struct{}{}:
		default:
		}
		<-release
	}))
	defer hang.Close()
	defer close(release)
	n, err := New(d, Options{Endpoints: []Endpoint{{Name: "hang", URL: hang.URL, Timeout: time.Hour}}})
	if err != nil {
		t.Fatal(err)
	}
	n.Start()
	defer n.Close(context.Background())
	if err := n.Notify(context.Background(), pushEvent("a", 0)); err != nil {
		t.Fatal(err)
	}
	<-entered // the worker is stuck in a request
	var wg sync.WaitGroup
	for i := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := n.Notify(ctx, pushEvent("b", i%26)); err != nil {
				t.Errorf("Notify while the endpoint hangs: %v", err)
			}
		}()
	}
	wg.Wait()
	if got := len(queued(t, d, n.InstanceID(), "hang")); got != 201 {
		t.Fatalf("%d events queued, want 201", got)
	}
}

// TestAdoption: a process that dies with events queued (its heartbeat
// stops) has them delivered by another, with their ids; one that closes
// hands them over at once.
func TestAdoption(t *testing.T) { testAdoption(t, newDriver(t)) }

// TestAdoptionOnS3: the same on a bucket of a real MinIO, where replicas
// share their queues.
func TestAdoptionOnS3(t *testing.T) {
	srv := miniotest.Shared(t)
	secure := false
	d, err := s3.New(context.Background(), s3.Options{
		RegionEndpoint: srv.Endpoint, Bucket: srv.NewBucket(t), ForcePathStyle: true,
		AccessKey: miniotest.AccessKey, SecretKey: miniotest.SecretKey, Secure: &secure,
	})
	if err != nil {
		t.Fatal(err)
	}
	testAdoption(t, d)
}

// testAdoption is TestAdoption on d.
func testAdoption(t *testing.T, d driver.Driver) {
	rc := newReceiver(t)
	rc.fail.Store(true)
	opts := Options{Endpoints: []Endpoint{{Name: "hook", URL: rc.srv.URL, Threshold: 1, Backoff: time.Hour}}, AdoptAfter: 400 * time.Millisecond}
	dead, err := New(d, opts)
	if err != nil {
		t.Fatal(err)
	}
	dead.Start()
	for i := range 5 {
		if err := dead.Notify(context.Background(), pushEvent("a", i)); err != nil {
			t.Fatal(err)
		}
	}
	want := queued(t, d, dead.InstanceID(), "hook")
	dead.cancel() // killed: goroutines stop, the heartbeat stays
	dead.wg.Wait()
	rc.fail.Store(false)
	opts.Endpoints[0].Threshold, opts.Endpoints[0].Backoff = 0, 0
	heir, err := New(d, opts)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	heir.Start()
	defer heir.Close(context.Background())
	waitFor(t, "the dead process's events", func() bool { return len(rc.events()) == 5 })
	if time.Since(start) < 200*time.Millisecond {
		t.Errorf("adopted %v after start: the heartbeat was younger than AdoptAfter", time.Since(start))
	}
	for i, ev := range rc.events() {
		if ev.ID != want[i].ID || ev.Source.InstanceID != dead.InstanceID() {
			t.Errorf("event %d: id %s from %s, want %s from %s", i, ev.ID, ev.Source.InstanceID, want[i].ID, dead.InstanceID())
		}
	}
	// Drained and silent for 10×AdoptAfter: its directory goes.
	waitFor(t, "the dead queue removed", func() bool {
		_, err := d.Stat(context.Background(), instanceDir(dead.InstanceID()))
		return errors.Is(err, driver.ErrNotFound)
	})

	// A clean stop with events queued: the next process takes them at
	// its first scan, without waiting for AdoptAfter.
	rc.fail.Store(true)
	opts.AdoptAfter = time.Hour
	opts.FlushInterval = time.Hour
	stopped, err := New(d, opts)
	if err != nil {
		t.Fatal(err)
	}
	stopped.Start()
	pull := pushEvent("c", 0)
	pull.Action = ActionPull
	if err := stopped.Notify(context.Background(), pushEvent("c", 1), pull); err != nil {
		t.Fatal(err)
	}
	if err := stopped.Notify(context.Background(), pull); err != nil { // written by Close, not before
		t.Fatal(err)
	}
	if err := stopped.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := stopped.Notify(context.Background(), pushEvent("c", 2)); !errors.Is(err, ErrClosed) {
		t.Fatalf("Notify after Close: %v", err)
	}
	if got := queued(t, d, stopped.InstanceID(), "hook"); len(got) != 3 {
		t.Fatalf("after Close: %d events in storage, want 3 (the push, and both pulls written on Close)", len(got))
	}
	rc.fail.Store(false)
	next, err := New(d, opts)
	if err != nil {
		t.Fatal(err)
	}
	next.Start()
	defer next.Close(context.Background())
	waitFor(t, "the stopped process's events", func() bool { return len(rc.events()) == 8 })
}

// TestReferences: includereferences adds a manifest's config and layers.
func TestReferences(t *testing.T) {
	cfg := v1.Descriptor{MediaType: v1.MediaTypeImageConfig, Digest: digest.FromString("c"), Size: 2}
	layer := v1.Descriptor{MediaType: v1.MediaTypeImageLayerGzip, Digest: digest.FromString("l"), Size: 3}
	payload, _ := json.Marshal(v1.Manifest{Config: cfg, Layers: []v1.Descriptor{layer}})
	got := manifestReferences(payload)
	if len(got) != 2 || got[0].Digest != cfg.Digest || got[1].Digest != layer.Digest {
		t.Fatalf("references %+v", got)
	}
	index, _ := json.Marshal(v1.Index{Manifests: []v1.Descriptor{cfg}})
	if got := manifestReferences(index); len(got) != 1 || got[0].Digest != cfg.Digest {
		t.Fatalf("index references %+v", got)
	}
	ev := Event{Target: Target{Manifest: payload}}
	b, _ := json.Marshal(ev)
	if strings.Contains(string(b), "Manifest") || strings.Contains(string(b), "references") {
		t.Fatalf("the payload or unasked references are sent: %s", b)
	}
}

// TestManyBatches: a backlog longer than one listing page is delivered
// whole, each event once.
func TestManyBatches(t *testing.T) {
	d := newDriver(t)
	rc := newReceiver(t)
	rc.fail.Store(true)
	n, err := New(d, Options{Endpoints: []Endpoint{{Name: "hook", URL: rc.srv.URL, Threshold: 1, Backoff: 50 * time.Millisecond}}})
	if err != nil {
		t.Fatal(err)
	}
	n.Start()
	defer n.Close(context.Background())
	const batches = listPage*2 + 7
	for i := range batches {
		if err := n.Notify(context.Background(), pushEvent("a", i%26)); err != nil {
			t.Fatal(err)
		}
	}
	rc.fail.Store(false)
	waitFor(t, "every event", func() bool { return len(rc.events()) >= batches })
	waitFor(t, "the queue drained", func() bool { return len(queued(t, d, n.InstanceID(), "hook")) == 0 })
	ids := map[string]bool{}
	for _, ev := range rc.events() {
		if ids[ev.ID] {
			t.Errorf("event %s delivered twice though nothing failed after its delivery", ev.ID)
		}
		ids[ev.ID] = true
	}
	if len(ids) != batches {
		t.Fatalf("%d events delivered, want %d", len(ids), batches)
	}
}

// TestBusyPullsAreNotDropped: pulls arriving far faster than the flush
// interval are written in batches as they fill, so none reach the cap and
// none are dropped; with an interval of an hour, only the early writes
// can have stored them.
func TestBusyPullsAreNotDropped(t *testing.T) {
	d := newDriver(t)
	rc := newReceiver(t)
	rc.fail.Store(true) // keep everything in the queue, to count it there
	n, err := New(d, Options{Endpoints: []Endpoint{{Name: "hook", URL: rc.srv.URL, Threshold: 1, Backoff: time.Hour}},
		FlushInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	n.Start()
	defer n.Close(context.Background())
	const pulls = maxPendingPulls * 3
	for i := range pulls {
		ev := pushEvent("a", i%26)
		ev.Action = ActionPull
		if err := n.Notify(context.Background(), ev); err != nil {
			t.Fatal(err)
		}
		if i%maxBatch == 0 {
			// Let the writer run, as a registry's own requests would:
			// the test must not outrun storage on a loaded machine.
			waitFor(t, "the writer to keep up", func() bool {
				n.mu.Lock()
				defer n.mu.Unlock()
				return n.pulls < maxPendingPulls/2
			})
		}
	}
	n.mu.Lock()
	dropped := n.dropped
	n.mu.Unlock()
	if dropped != 0 {
		t.Fatalf("%d pull events dropped", dropped)
	}
	waitFor(t, "all but the last partial batch in storage", func() bool {
		return len(queued(t, d, n.InstanceID(), "hook")) >= pulls-maxBatch
	})
}

func TestWants(t *testing.T) {
	n, err := New(newDriver(t), Options{Endpoints: []Endpoint{
		{Name: "a", URL: "http://127.0.0.1:9/", IgnoreActions: []string{"pull"}},
		{Name: "b", URL: "http://127.0.0.1:9/", IgnoreActions: []string{"pull", "delete"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	for action, want := range map[string]bool{"pull": false, "push": true, "delete": true, "mount": true} {
		if got := n.Wants(action); got != want {
			t.Errorf("Wants(%s) = %v, want %v", action, got, want)
		}
	}
}
