package notify

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	v1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/berth-registry/berth/storage/driver"
)

// Sink receives the registry's events. The registry calls it from its
// handlers; what happens next is the Sink's business.
type Sink interface {
	// Notify records events that one request caused. It returns once
	// they are as safe as the Sink promises (Notifier: in storage, for
	// every action but pull), or with an error when they could not be
	// made so; ctx bounds the wait. Notify may be called concurrently.
	Notify(ctx context.Context, events ...Event) error
}

// Defaults of Options.
const (
	DefaultFlushInterval = time.Second
	DefaultAdoptAfter    = time.Minute
	DefaultMaxAge        = 7 * 24 * time.Hour
)

// Bounds of what the writer holds and writes.
const (
	// maxPendingPulls is how many pull events wait in memory for the
	// writer; beyond it pull events are dropped (and counted in the log)
	// while storage is too slow or failing. Other events always wait.
	// The writer is woken as soon as maxBatch pull events wait, so only
	// a store that cannot keep up leads here.
	maxPendingPulls = 10000
	// maxBatch is the most events one batch file holds.
	maxBatch = 1000
	// writeTimeout bounds one flush's writes.
	writeTimeout = time.Minute
	// listPage is how many batch names a worker lists at a time.
	listPage = 100
)

// ErrClosed is returned by Notify after Close.
var ErrClosed = errors.New("notify: closed")

// Options configure a Notifier.
type Options struct {
	// Endpoints receive the events. At least one.
	Endpoints []Endpoint
	// IncludeReferences adds a manifest's references to its push and pull
	// events (Distribution's notifications.events.includereferences).
	IncludeReferences bool
	// SourceAddr is the source.addr of every event: this registry's host
	// name and port.
	SourceAddr string
	// FlushInterval is how long pull events may wait in memory before
	// they are written (zero: DefaultFlushInterval). Other events are
	// written at once, in the next batch.
	FlushInterval time.Duration
	// AdoptAfter: another process's queue is delivered by this one once
	// that process has not shown it is alive for this long (zero:
	// DefaultAdoptAfter). Clocks of all registries on one storage must
	// agree to well within it.
	AdoptAfter time.Duration
	// MaxAge: batches older than this that are still not delivered are
	// dropped, with a warning in the log (zero: DefaultMaxAge; negative:
	// never).
	MaxAge time.Duration
	// Logger receives failures and the queue's warnings. Nil discards.
	Logger *slog.Logger
}

// Notifier is a Sink that queues events durably in storage and delivers
// them to HTTP endpoints (see the package documentation). Create it with
// New, then Start it; Close it on shutdown.
type Notifier struct {
	drv         driver.Driver
	log         *slog.Logger
	eps         []*endpoint
	includeRefs bool
	flushEvery  time.Duration
	adoptAfter  time.Duration
	maxAge      time.Duration
	instance    string
	source      SourceRecord

	mu      sync.Mutex
	pending []Event
	pulls   int // pull events in pending
	waiters []chan error
	closed  bool
	dropped int // pull events dropped since the last flush
	seq     uint64

	flushKick  chan struct{}
	stopWriter chan struct{}
	writerDone chan struct{}

	adoptMu     sync.Mutex
	adopted     []string             // other processes' queues this one delivers
	missing     map[string]time.Time // processes seen without a heartbeat, since when
	unknownSeen map[string]bool      // queues of endpoints not configured here, logged once

	startOnce sync.Once
	cancel    context.CancelFunc
	wg        sync.WaitGroup
}

// New returns a Notifier on drv; it writes and delivers nothing until
// Start.
func New(drv driver.Driver, opts Options) (*Notifier, error) {
	if len(opts.Endpoints) == 0 {
		return nil, errors.New("notify: no endpoints")
	}
	n := &Notifier{
		drv:         drv,
		log:         opts.Logger,
		includeRefs: opts.IncludeReferences,
		flushEvery:  opts.FlushInterval,
		adoptAfter:  opts.AdoptAfter,
		maxAge:      opts.MaxAge,
		instance:    NewID(),
		flushKick:   make(chan struct{}, 1),
		stopWriter:  make(chan struct{}),
		writerDone:  make(chan struct{}),
		missing:     make(map[string]time.Time),
		unknownSeen: make(map[string]bool),
	}
	if n.log == nil {
		n.log = slog.New(slog.DiscardHandler)
	}
	if n.flushEvery <= 0 {
		n.flushEvery = DefaultFlushInterval
	}
	if n.adoptAfter <= 0 {
		n.adoptAfter = DefaultAdoptAfter
	}
	if n.maxAge == 0 {
		n.maxAge = DefaultMaxAge
	}
	n.source = SourceRecord{Addr: opts.SourceAddr, InstanceID: n.instance}
	dirs := make(map[string]string)
	for _, e := range opts.Endpoints {
		ep, err := newEndpoint(e)
		if err != nil {
			return nil, err
		}
		if other, ok := dirs[ep.dir]; ok {
			return nil, fmt.Errorf("notify: endpoints %q and %q would share a queue: give them names that differ in letters or digits", other, e.Name)
		}
		dirs[ep.dir] = e.Name
		n.eps = append(n.eps, ep)
	}
	return n, nil
}

// InstanceID is this process's id: source.instanceID of its events, and
// the name of its queue in storage.
func (n *Notifier) InstanceID() string { return n.instance }

// heartbeatEvery is how often the process says it is alive.
func (n *Notifier) heartbeatEvery() time.Duration { return max(n.adoptAfter/4, 10*time.Millisecond) }

// Start writes the first heartbeat and starts the writer, the delivery
// workers and the scan for other processes' queues.
func (n *Notifier) Start() {
	n.startOnce.Do(func() {
		ctx, cancel := context.WithCancel(context.Background())
		n.cancel = cancel
		n.heartbeat(ctx)
		go n.writer()
		n.wg.Add(2 + len(n.eps))
		go func() { defer n.wg.Done(); n.every(ctx, n.heartbeatEvery(), n.heartbeat) }()
		go func() { defer n.wg.Done(); n.scan(ctx); n.every(ctx, n.heartbeatEvery(), n.scan) }()
		for _, ep := range n.eps {
			go func() { defer n.wg.Done(); n.deliver(ctx, ep) }()
		}
	})
}

func (n *Notifier) every(ctx context.Context, d time.Duration, f func(context.Context)) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			f(ctx)
		}
	}
}

// Close writes the events still in memory, stops delivery, and leaves
// what is not delivered in storage for the next process to adopt at once
// (it removes its heartbeat). Events notified after Close are refused.
func (n *Notifier) Close(ctx context.Context) error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil
	}
	n.closed = true
	n.mu.Unlock()
	n.Start() // a Notifier never started still writes what it was given
	close(n.stopWriter)
	select {
	case <-n.writerDone:
	case <-ctx.Done():
		n.cancel()
		return fmt.Errorf("notify: events not written before shutdown: %w", ctx.Err())
	}
	n.cancel()
	n.wg.Wait()
	empty, err := n.queueEmpty(ctx, n.instance)
	if err == nil && empty {
		err = n.drv.Delete(ctx, instanceDir(n.instance))
	} else {
		err = errors.Join(err, n.drv.Delete(ctx, alivePath(n.instance)))
	}
	if errors.Is(err, driver.ErrNotFound) {
		err = nil
	}
	return err
}

// Notify implements Sink: it fills in each event's timestamp and source
// (its id when it is written), drops what no endpoint wants, and waits
// until the batch holding the rest is in storage, unless all of them are
// pulls (which are written within FlushInterval, without waiting).
func (n *Notifier) Notify(ctx context.Context, events ...Event) error {
	wanted, durable := 0, false
	for i := range events {
		if n.wanted(&events[i]) {
			wanted++
			durable = durable || events[i].durable()
		}
	}
	if wanted == 0 {
		return nil
	}
	now := time.Now()
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return ErrClosed
	}
	if !durable {
		if n.pulls+wanted > maxPendingPulls {
			n.dropped += wanted
			n.mu.Unlock()
			return nil
		}
		n.pulls += wanted
		n.queue(events, now)
		full := n.pulls >= maxBatch
		n.mu.Unlock()
		if full {
			// A batch's worth waits: write it now rather than at the
			// interval, so a busy registry does not reach the cap.
			n.kick()
		}
		return nil
	}
	done := make(chan error, 1)
	n.queue(events, now)
	n.waiters = append(n.waiters, done)
	n.mu.Unlock()
	n.kick()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// queue appends the wanted events to pending, with their timestamp (now,
// unless set) and source; n.mu is held.
func (n *Notifier) queue(events []Event, now time.Time) {
	for _, ev := range events {
		if !n.wanted(&ev) {
			continue
		}
		if ev.Timestamp.IsZero() {
			ev.Timestamp = now
		}
		ev.Source = n.source
		n.pending = append(n.pending, ev)
	}
}

// kick wakes the writer, if it is not already awake.
func (n *Notifier) kick() {
	select {
	case n.flushKick <- struct{}{}:
	default:
	}
}

// Wants reports whether some endpoint takes events of this action at all,
// so that the registry need not make events nobody wants (pulls, most
// often).
func (n *Notifier) Wants(action string) bool {
	for _, ep := range n.eps {
		if !ep.ignoreActions[action] {
			return true
		}
	}
	return false
}

func (n *Notifier) wanted(ev *Event) bool {
	for _, ep := range n.eps {
		if ep.wants(ev) {
			return true
		}
	}
	return false
}

// writer is the group commit: whatever arrived while a batch was being
// written goes into the next one, so concurrent pushes share writes. It
// writes at once when an event waits, and every FlushInterval otherwise.
func (n *Notifier) writer() {
	defer close(n.writerDone)
	t := time.NewTicker(n.flushEvery)
	defer t.Stop()
	for {
		select {
		case <-n.flushKick:
		case <-t.C:
		case <-n.stopWriter:
			n.flush()
			return
		}
		n.flush()
	}
}

func (n *Notifier) flush() {
	n.mu.Lock()
	events, waiters, dropped := n.pending, n.waiters, n.dropped
	// The next batch is likely as large as this one: room for it at
	// once, rather than growing (and copying) it event by event.
	n.pending, n.waiters, n.pulls, n.dropped = make([]Event, 0, len(events)), nil, 0, 0
	n.mu.Unlock()
	if dropped > 0 {
		n.log.Warn("notifications: pull events dropped: storage is not taking the queue's writes fast enough", "dropped", dropped)
	}
	if len(events) == 0 {
		return
	}
	err := n.write(events)
	for _, w := range waiters {
		w <- err
	}
	if err != nil {
		n.log.Error("notifications: writing events to the queue", "events", len(events), "err", err)
		n.requeuePulls(events)
		return
	}
	for _, ep := range n.eps {
		ep.signal()
	}
}

// requeuePulls puts the pull events of a batch that failed back, for the
// next flush; the other events' requests got the error.
func (n *Notifier) requeuePulls(events []Event) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, ev := range events {
		if ev.durable() {
			continue
		}
		if n.pulls >= maxPendingPulls {
			n.dropped++
			continue
		}
		n.pulls++
		n.pending = append(n.pending, ev)
	}
}

// write stores events as batches, one file per endpoint (per maxBatch
// events), written concurrently.
func (n *Notifier) write(events []Event) error {
	raw := make([][]byte, len(events))
	for i := range events {
		ev := &events[i]
		if ev.ID == "" {
			// Here rather than in Notify, off the request path; a
			// batch written again (requeued pulls) keeps its ids.
			ev.ID = NewID()
		}
		if n.includeRefs && ev.Target.Manifest != nil {
			ev.Target.References = manifestReferences(ev.Target.Manifest)
		}
		b, err := json.Marshal(ev)
		if err != nil {
			return err
		}
		raw[i] = b
	}
	type file struct {
		path string
		body []byte
	}
	var files []file
	now := time.Now()
	for _, ep := range n.eps {
		var wanted []int
		for i := range events {
			if ep.wants(&events[i]) {
				wanted = append(wanted, i)
			}
		}
		for len(wanted) > 0 {
			chunk := wanted[:min(len(wanted), maxBatch)]
			wanted = wanted[len(chunk):]
			size := len(`{"events":[]}`)
			for _, i := range chunk {
				size += len(raw[i]) + 1
			}
			body := make([]byte, 0, size)
			body = append(body, `{"events":[`...)
			for k, i := range chunk {
				if k > 0 {
					body = append(body, ',')
				}
				body = append(body, raw[i]...)
			}
			body = append(body, "]}"...)
			n.seq++
			files = append(files, file{queueDir(n.instance, ep.dir) + "/" + batchName(now, n.seq), body})
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), writeTimeout)
	defer cancel()
	errs := make([]error, len(files))
	var wg sync.WaitGroup
	for i, f := range files {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = n.drv.PutContent(ctx, f.path, f.body)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// manifestReferences are Distribution's references of a manifest: an
// image manifest's config and layers, an index's manifests.
func manifestReferences(payload []byte) []v1.Descriptor {
	var m struct {
		Config    *v1.Descriptor  `json:"config"`
		Layers    []v1.Descriptor `json:"layers"`
		Manifests []v1.Descriptor `json:"manifests"`
	}
	if json.Unmarshal(payload, &m) != nil {
		return nil
	}
	if m.Config != nil {
		return append([]v1.Descriptor{*m.Config}, m.Layers...)
	}
	return m.Manifests
}
