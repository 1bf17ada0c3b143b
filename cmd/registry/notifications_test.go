package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/berth-registry/berth/notify"
)

// hook is a webhook receiver in the test: it keeps every event it gets,
// as decoded and as raw JSON, with the request's headers.
type hook struct {
	srv *httptest.Server
	mu  sync.Mutex
	evs []notify.Event
	raw []map[string]any
	hdr []http.Header
}

func newHook(t *testing.T) *hook {
	h := &hook{}
	h.srv = httptest.NewUnstartedServer(h)
	h.srv.Start()
	t.Cleanup(h.srv.Close)
	return h
}

func (h *hook) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	var env notify.Envelope
	var raw struct {
		Events []map[string]any `json:"events"`
	}
	if json.Unmarshal(body, &env) != nil || json.Unmarshal(body, &raw) != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	h.mu.Lock()
	h.evs = append(h.evs, env.Events...)
	h.raw = append(h.raw, raw.Events...)
	for range env.Events {
		h.hdr = append(h.hdr, r.Header.Clone())
	}
	h.mu.Unlock()
	w.WriteHeader(http.StatusOK)
}

func (h *hook) events() []notify.Event {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]notify.Event(nil), h.evs...)
}

// waitEvents waits until cond holds for what h got (30s at most: only a
// failing test waits that long).
func waitEvents(t *testing.T, h *hook, what string, cond func([]notify.Event) bool) []notify.Event {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		evs := h.events()
		if cond(evs) {
			return evs
		}
		if time.Now().After(deadline) {
			for _, ev := range evs {
				t.Logf("got %s %s %s %s", ev.Action, ev.Target.Repository, ev.Target.Digest, ev.Target.Tag)
			}
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestNotificationsDistributionFormat pushes, pulls, mounts and deletes
// with go-containerregistry and checks every event a receiver gets, field
// by field, against what Distribution v3 sends; a second endpoint that
// ignores pulls and blobs gets only the manifest events.
func TestNotificationsDistributionFormat(t *testing.T) {
	all, filtered := newHook(t), newHook(t)
	s := startServerWith(t, t.TempDir(), func(c *Config) {
		c.Notifications.Endpoints = []EndpointConfig{
			{Name: "all", URL: all.srv.URL, Headers: http.Header{"Authorization": {"Bearer hook-secret"}}},
			{Name: "filtered", URL: filtered.srv.URL},
			{Name: "off", URL: "http://127.0.0.1:1/never", Disabled: true},
		}
		c.Notifications.Endpoints[1].Ignore.Actions = []string{"pull"}
		c.Notifications.Endpoints[1].Ignore.MediaTypes = []string{"application/octet-stream"}
		c.Notifications.Queue.FlushInterval = 50 * time.Millisecond
	}, nil)
	opts := s.opts(t)
	repo := s.repo(t, "team/app")
	img := randomImage(t, 1)
	if err := remote.Write(repo.Tag("v1"), img, opts...); err != nil {
		t.Fatal(err)
	}
	mdg := imageDigest(t, img)
	rawManifest, _ := img.RawManifest()
	mt, _ := img.MediaType()
	cfgName, _ := img.ConfigName()
	cfgBytes, _ := img.RawConfigFile()
	layers, _ := img.Layers()
	ldg, _ := layers[0].Digest()
	lsize, _ := layers[0].Size()
	blobSize := map[v1.Hash]int64{cfgName: int64(len(cfgBytes)), ldg: lsize}

	// The push: two blob pushes and the manifest's, nothing else.
	pushed := waitEvents(t, all, "the push's events", func(evs []notify.Event) bool { return len(evs) >= 3 })
	// The pull: a HEAD sends nothing; GETs of manifest, config and layer do.
	if _, err := remote.Head(repo.Tag("v1"), opts...); err != nil {
		t.Fatal(err)
	}
	pulled, err := remote.Image(repo.Tag("v1"), opts...)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pulled.RawConfigFile(); err != nil {
		t.Fatal(err)
	}
	pls, _ := pulled.Layers()
	rc, err := pls[0].Compressed()
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, rc)
	rc.Close()
	waitEvents(t, all, "the pull's events", func(evs []notify.Event) bool { return len(evs) >= 6 })
	// A mount, then deletions: the layer in the other repository, the
	// manifest by digest (which removes tag v1 too).
	resp, _ := s.do(t, http.MethodPost, s.url("/v2/team/other/blobs/uploads/?mount="+ldg.String()+"&from=team/app"), nil, nil)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("mount: %d", resp.StatusCode)
	}
	resp, _ = s.do(t, http.MethodDelete, s.url("/v2/team/other/blobs/"+ldg.String()), nil, nil)
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("blob delete: %d", resp.StatusCode)
	}
	if err := remote.Delete(repo.Digest(mdg.String()), opts...); err != nil {
		t.Fatal(err)
	}
	waitEvents(t, all, "every event", func(evs []notify.Event) bool { return len(evs) >= 10 })
	time.Sleep(300 * time.Millisecond) // more would show now
	evs := all.events()
	if len(evs) != 10 {
		t.Fatalf("%d events, want 10 (3 push, 3 pull, mount, blob delete, manifest delete, tag delete)", len(evs))
	}

	hostname, _ := os.Hostname()
	base := "https://" + s.addr + "/v2/"
	instance := evs[0].Source.InstanceID
	ids := map[string]bool{}
	requests := map[string]string{} // request id → method
	for i, ev := range evs {
		raw := all.raw[i]
		if ev.ID == "" || ids[ev.ID] {
			t.Errorf("event %d: id %q empty or repeated", i, ev.ID)
		}
		ids[ev.ID] = true
		if time.Since(ev.Timestamp) > time.Minute || time.Since(ev.Timestamp) < 0 {
			t.Errorf("event %d: timestamp %v", i, ev.Timestamp)
		}
		if ev.Source.Addr != net.JoinHostPort(hostname, "0") || ev.Source.InstanceID != instance || instance == "" {
			t.Errorf("event %d: source %+v", i, ev.Source)
		}
		rq := ev.Request
		if rq.ID == "" || !strings.HasPrefix(rq.Addr, "127.0.0.1:") || rq.Host != s.addr ||
			!strings.Contains(rq.UserAgent, "go-containerregistry") && !strings.HasPrefix(rq.UserAgent, "Go-http-client") {
			t.Errorf("event %d: request %+v", i, rq)
		}
		if m, ok := requests[rq.ID]; ok && m != rq.Method {
			t.Errorf("event %d: request id %s shared by %s and %s", i, rq.ID, m, rq.Method)
		}
		requests[rq.ID] = rq.Method
		if ev.Actor.Name != "" {
			t.Errorf("event %d: actor %q without authentication", i, ev.Actor.Name)
		}
		// Distribution v3's JSON: mediaType, digest and size are always
		// there (its target embeds an OCI descriptor); these keys and no
		// others.
		target := raw["target"].(map[string]any)
		for _, k := range []string{"mediaType", "digest", "size"} {
			if _, ok := target[k]; !ok {
				t.Errorf("event %d: target without %s: %v", i, k, target)
			}
		}
		for k := range raw {
			switch k {
			case "id", "timestamp", "action", "target", "request", "actor", "source":
			default:
				t.Errorf("event %d: key %q Distribution does not send", i, k)
			}
		}
		if h := all.hdr[i]; h.Get("Content-Type") != "application/vnd.docker.distribution.events.v2+json" || h.Get("Authorization") != "Bearer hook-secret" {
			t.Errorf("event %d: headers %v", i, h)
		}
	}

	checkBlob := func(ev notify.Event, action, repo, method string) {
		t.Helper()
		tg := ev.Target
		size, known := blobSize[v1.Hash{Algorithm: tg.Digest.Algorithm().String(), Hex: tg.Digest.Encoded()}]
		if ev.Action != action || ev.Request.Method != method || !known || tg.MediaType != "application/octet-stream" ||
			tg.Size != size || tg.Length != size || tg.Repository != repo || tg.Tag != "" ||
			tg.URL != base+repo+"/blobs/"+tg.Digest.String() {
			t.Errorf("blob %s event: %+v (request %s)", action, tg, ev.Request.Method)
		}
	}
	checkManifest := func(ev notify.Event, action, method string) {
		t.Helper()
		tg := ev.Target
		if ev.Action != action || ev.Request.Method != method || tg.MediaType != string(mt) || tg.Digest.String() != mdg.String() ||
			tg.Size != int64(len(rawManifest)) || tg.Length != tg.Size || tg.Repository != "team/app" || tg.Tag != "v1" ||
			tg.URL != base+"team/app/manifests/"+mdg.String() || len(tg.References) != 0 {
			t.Errorf("manifest %s event: %+v (request %s)", action, tg, ev.Request.Method)
		}
	}
	for _, ev := range pushed[:2] {
		checkBlob(ev, "push", "team/app", http.MethodPut)
	}
	if pushed[0].Target.Digest == pushed[1].Target.Digest {
		t.Errorf("one blob pushed twice: %s", pushed[0].Target.Digest)
	}
	checkManifest(evs[2], "push", http.MethodPut)
	checkManifest(evs[3], "pull", http.MethodGet)
	checkBlob(evs[4], "pull", "team/app", http.MethodGet)
	checkBlob(evs[5], "pull", "team/app", http.MethodGet)
	mount := evs[6]
	checkBlob(mount, "mount", "team/other", http.MethodPost)
	if mount.Target.FromRepository != "team/app" || mount.Target.Digest.String() != ldg.String() || all.raw[6]["target"].(map[string]any)["fromRepository"] != "team/app" {
		t.Errorf("mount event: %+v", mount.Target)
	}
	deletes := []struct {
		repo, digest, tag string
	}{
		{"team/other", ldg.String(), ""},
		{"team/app", mdg.String(), ""},
		{"team/app", "", "v1"},
	}
	for i, want := range deletes {
		ev := evs[7+i]
		tg := ev.Target
		if ev.Action != "delete" || ev.Request.Method != http.MethodDelete || tg.Repository != want.repo || tg.Digest.String() != want.digest ||
			tg.Tag != want.tag || tg.MediaType != "" || tg.Size != 0 || tg.Length != 0 || tg.URL != "" {
			t.Errorf("delete event %d: %+v, want %+v", i, tg, want)
		}
	}
	if evs[8].Request.ID != evs[9].Request.ID {
		t.Errorf("the manifest deletion and the tag it removed have different request ids")
	}

	// The filtered endpoint ignores pulls and application/octet-stream
	// (blobs): it gets the manifest push and the three deletes, whose
	// mediaType is "" (Distribution's filter lets them through too).
	waitEvents(t, filtered, "the filtered endpoint's events", func(evs []notify.Event) bool { return len(evs) >= 4 })
	time.Sleep(200 * time.Millisecond)
	got := filtered.events()
	if len(got) != 4 || got[0].Action != "push" || got[0].Target.MediaType != string(mt) {
		t.Fatalf("filtered endpoint: %d events, want the manifest push and 3 deletes: %+v", len(got), got)
	}
	for i, ev := range got[1:] {
		if ev.Action != "delete" || ev.ID != evs[7+i].ID {
			t.Errorf("filtered endpoint, event %d: %s %+v, want the same event (same id) as the other endpoint's", i+1, ev.Action, ev.Target)
		}
	}
}

// TestNotificationsDeadEndpoint: an endpoint that accepts connections and
// never answers does not hold up pushes and pulls; their events wait in
// storage.
func TestNotificationsDeadEndpoint(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	accepted := make(chan net.Conn, 100)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c // held open, never answered
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		close(accepted)
		for c := range accepted {
			c.Close()
		}
	})
	root := t.TempDir()
	s := startServerWith(t, root, func(c *Config) {
		c.Notifications.Endpoints = []EndpointConfig{{Name: "dead", URL: "http://" + ln.Addr().String() + "/hook", Timeout: time.Hour}}
	}, nil)
	opts := s.opts(t)
	if err := remote.Write(s.repo(t, "first").Tag("v1"), randomImage(t, 1), opts...); err != nil {
		t.Fatal(err)
	}
	select {
	case <-accepted:
	case <-time.After(30 * time.Second):
		t.Fatal("the endpoint was never called")
	}
	// The worker is now stuck in a request that will not end for an
	// hour. Pushes and pulls go on.
	const pushes = 20
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	opts = append(opts, remote.WithContext(ctx))
	for i := range pushes {
		ref := s.repo(t, fmt.Sprintf("team/app%d", i)).Tag("v1")
		if err := remote.Write(ref, randomImage(t, 1), opts...); err != nil {
			t.Fatalf("push %d while the endpoint hangs: %v", i, err)
		}
		if _, err := remote.Image(ref, opts...); err != nil {
			t.Fatalf("pull %d while the endpoint hangs: %v", i, err)
		}
	}
	// Every push's three events are in the queue (the first push's first
	// event is in the request that hangs, and still queued too).
	files, _ := filepath.Glob(filepath.Join(root, "docker/registry/v2/_berth/events/*/endpoints/dead/*"))
	pushesQueued := 0
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		var env notify.Envelope
		if err := json.Unmarshal(b, &env); err != nil {
			t.Fatalf("batch %s: %v", f, err)
		}
		for _, ev := range env.Events {
			if ev.Action == "push" {
				pushesQueued++
			}
		}
	}
	if pushesQueued != 3*(pushes+1) {
		t.Fatalf("%d push events queued in %d batches, want %d", pushesQueued, len(files), 3*(pushes+1))
	}
}

// notifyChildEnv, when set, makes TestNotificationsKilledRegistry a
// registry: it serves the data directory and endpoint URL the variable
// holds (JSON) over plain HTTP and prints its address.
const notifyChildEnv = "BERTH_TEST_NOTIFY_CHILD"

type notifyChildConfig struct {
	Root, URL string
}

// TestNotificationsKilledRegistry: 100 pushes while the receiver is down,
// to a registry that is killed (SIGKILL) after 50 and started again;
// once the receiver is back every push event arrives.
func TestNotificationsKilledRegistry(t *testing.T) {
	if v := os.Getenv(notifyChildEnv); v != "" {
		runNotifyChild(t, v)
		return
	}
	// The receiver's address, down until the end.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	child := notifyChildConfig{Root: t.TempDir(), URL: "http://" + addr + "/hook"}

	type pushed struct{ manifest, config, layer string }
	var want []pushed
	push := func(c *childRegistry, from, to int) {
		for i := from; i < to; i++ {
			img := randomImage(t, 1)
			ref, err := name.ParseReference(fmt.Sprintf("%s/team/app%d:v%d", c.addr, i%7, i))
			if err != nil {
				t.Fatal(err)
			}
			if err := remote.Write(ref, img, remote.WithContext(t.Context())); err != nil {
				t.Fatalf("push %d: %v", i, err)
			}
			cfg, _ := img.ConfigName()
			ls, _ := img.Layers()
			ldg, _ := ls[0].Digest()
			want = append(want, pushed{imageDigest(t, img).String(), cfg.String(), ldg.String()})
		}
	}
	first := startNotifyChild(t, child)
	push(first, 0, 50)
	first.kill(t)
	second := startNotifyChild(t, child)
	push(second, 50, 100)

	h := &hook{}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	ln, err = net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("the receiver's port was taken meanwhile: %v", err)
	}
	go srv.Serve(ln)
	defer srv.Close()
	key := func(action, repo, dg, tag string) string { return action + " " + repo + " " + dg + " " + tag }
	waitEvents(t, h, "every push event", func(evs []notify.Event) bool {
		got := map[string]bool{}
		for _, ev := range evs {
			got[key(ev.Action, ev.Target.Repository, ev.Target.Digest.String(), ev.Target.Tag)] = true
		}
		for i, p := range want {
			repo := fmt.Sprintf("team/app%d", i%7)
			for _, k := range []string{
				key("push", repo, p.manifest, fmt.Sprintf("v%d", i)),
				key("push", repo, p.config, ""),
				key("push", repo, p.layer, ""),
			} {
				if !got[k] {
					return false
				}
			}
		}
		return true
	})
	// Each event keeps its id however often it is sent, and the killed
	// registry's events came with its instance id (delivered by the
	// second, which adopted its queue).
	byID := map[string]string{}
	instances := map[string]bool{}
	for _, ev := range h.events() {
		k := key(ev.Action, ev.Target.Repository, ev.Target.Digest.String(), ev.Target.Tag)
		if prev, ok := byID[ev.ID]; ok && prev != k {
			t.Errorf("id %s names two events: %s and %s", ev.ID, prev, k)
		}
		byID[ev.ID] = k
		instances[ev.Source.InstanceID] = true
	}
	if len(instances) != 2 {
		t.Errorf("events came from %d registry instances, want 2 (the killed one and its successor)", len(instances))
	}
}

func runNotifyChild(t *testing.T, v string) {
	var c notifyChildConfig
	if err := json.Unmarshal([]byte(v), &c); err != nil {
		t.Fatal(err)
	}
	cfg := defaultConfig()
	cfg.Storage.Filesystem.RootDirectory = c.Root
	cfg.Notifications.Endpoints = []EndpointConfig{{Name: "hook", URL: c.URL, Backoff: 100 * time.Millisecond}}
	cfg.Notifications.Queue.AdoptAfter = time.Second
	serveChild(t, cfg)
}

// startNotifyChild starts a registry in a child process (this test binary)
// and waits until it listens.
func startNotifyChild(t *testing.T, c notifyChildConfig) *childRegistry {
	t.Helper()
	js, _ := json.Marshal(c)
	return startChild(t, "TestNotificationsKilledRegistry", notifyChildEnv, string(js))
}

func TestConfigNotifications(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.yml")
	os.WriteFile(path, []byte(`version: 0.1
notifications:
  events:
    includereferences: true
  endpoints:
    - name: alistener
      disabled: false
      url: https://my.listener.example/event
      headers:
        Authorization: [Bearer token]
      timeout: 500ms
      threshold: 5
      backoff: 2s
      ignoredmediatypes:
        - application/octet-stream
      ignore:
        mediatypes: [application/x-other]
        actions: [pull, mount]
    - name: off
      disabled: true
      url: http://off.example/
  queue:
    flushinterval: 250ms
    adoptafter: 30s
    maxage: -1s
`), 0o600)
	c, err := loadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	n := c.Notifications
	e := n.Endpoints[0]
	if !n.Events.IncludeReferences || len(n.Endpoints) != 2 || e.Name != "alistener" || e.URL != "https://my.listener.example/event" ||
		e.Headers.Get("Authorization") != "Bearer token" || e.Timeout != 500*time.Millisecond || e.Threshold != 5 ||
		e.Backoff != 2*time.Second || e.IgnoredMediaTypes[0] != "application/octet-stream" ||
		e.Ignore.MediaTypes[0] != "application/x-other" || strings.Join(e.Ignore.Actions, ",") != "pull,mount" || !n.Endpoints[1].Disabled {
		t.Fatalf("endpoints not read: %+v", n)
	}
	if n.Queue.FlushInterval != 250*time.Millisecond || n.Queue.AdoptAfter != 30*time.Second || n.Queue.MaxAge != -time.Second {
		t.Fatalf("queue not read: %+v", n.Queue)
	}

	// From the environment: the list as one YAML value, the queue's keys
	// one by one.
	t.Setenv("REGISTRY_NOTIFICATIONS_ENDPOINTS", `[{name: env, url: "http://hook.internal:8080/x", threshold: 3, ignore: {actions: [pull]}}]`)
	t.Setenv("REGISTRY_NOTIFICATIONS_QUEUE_ADOPTAFTER", "2m")
	t.Setenv("REGISTRY_NOTIFICATIONS_EVENTS_INCLUDEREFERENCES", "false")
	c, err = loadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	n = c.Notifications
	if len(n.Endpoints) != 1 || n.Endpoints[0].Name != "env" || n.Endpoints[0].Threshold != 3 || n.Endpoints[0].Ignore.Actions[0] != "pull" ||
		n.Queue.AdoptAfter != 2*time.Minute || n.Events.IncludeReferences {
		t.Fatalf("environment not applied: %+v", n)
	}
	t.Setenv("REGISTRY_NOTIFICATIONS_ENDPOINTS", `[{name: env, url: "http://hook/", treshold: 3}]`)
	if _, err := loadConfig(path); err == nil || !strings.Contains(err.Error(), "treshold") {
		t.Fatalf("a mistyped key in the environment's list not named: %v", err)
	}

	for _, bad := range []string{
		`[{url: "http://hook/"}]`,
		`[{name: a, url: "ftp://hook/"}]`,
		`[{name: a, url: "hook"}]`,
		`[{name: a, url: "http://hook/"}, {name: a, url: "http://hook2/"}]`,
		`[{name: a, url: "http://hook/", ignore: {actions: [pul]}}]`,
		`[{name: a, url: "http://hook/", timeout: -1s}]`,
		`[{name: a, url: "http://hook/", headers: {Authorization: "not a list"}}]`,
	} {
		t.Setenv("REGISTRY_NOTIFICATIONS_ENDPOINTS", bad)
		if _, err := loadConfig(""); err == nil {
			t.Errorf("notifications.endpoints %s accepted", bad)
		}
	}

	// Disabled endpoints only: no notifier at all.
	t.Setenv("REGISTRY_NOTIFICATIONS_ENDPOINTS", `[{name: a, url: "http://hook/", disabled: true}]`)
	c, err = loadConfig("")
	if err != nil {
		t.Fatal(err)
	}
	if n, err := newNotifier(c, nil, slog.New(slog.DiscardHandler)); n != nil || err != nil {
		t.Fatalf("disabled endpoints only: notifier %v, %v", n, err)
	}
}
