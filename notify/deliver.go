package notify

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/berth-registry/berth/storage/driver"
)

// failureLogEvery is how often a failing endpoint is logged again.
const failureLogEvery = time.Minute

// deliverer is one endpoint's delivery worker.
type deliverer struct {
	n       *Notifier
	ep      *endpoint
	br      breaker
	failing bool
	logged  time.Time // when the failure was last logged
}

// deliver is the worker of ep: it sends the batches of this process's
// queue, then those of the queues it adopted, each in name order, and
// waits for the writer or the scan to say there is more.
func (n *Notifier) deliver(ctx context.Context, ep *endpoint) {
	d := &deliverer{n: n, ep: ep, br: breaker{threshold: ep.Threshold, backoff: ep.Backoff}}
	poll := time.NewTicker(n.heartbeatEvery())
	defer poll.Stop()
	for {
		for _, src := range n.sources() {
			if !d.drain(ctx, queueDir(src, ep.dir)) {
				return
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-ep.kick:
		case <-poll.C:
		}
	}
}

// drain delivers every batch in dir. It returns false when ctx ended.
// The listing moves on past each page, so batches that cannot be removed
// are not sent over and over in one pass.
func (d *deliverer) drain(ctx context.Context, dir string) bool {
	after := ""
	for {
		entries, err := d.n.drv.ListPage(ctx, dir, after, listPage)
		if ctx.Err() != nil {
			return false
		}
		if errors.Is(err, driver.ErrNotFound) {
			return true
		}
		if err != nil {
			d.n.log.Warn("notifications: listing a queue", "endpoint", d.ep.Name, "queue", dir, "err", err)
			return true
		}
		for _, e := range entries {
			if e.IsDir {
				continue
			}
			if !d.batch(ctx, dir+"/"+e.Name, e.Name) {
				return false
			}
		}
		if len(entries) < listPage {
			return true
		}
		after = entries[len(entries)-1].Key()
	}
}

// batch delivers the events of one batch file, one request each, retrying
// each until it is delivered, then removes the file. It returns false
// when ctx ended first: the file stays, and its events are sent again
// later (delivery is at least once; a receiver tells repeats by id).
func (d *deliverer) batch(ctx context.Context, p, name string) bool {
	written, _ := batchTime(name)
	data, err := d.n.drv.GetContent(ctx, p)
	if errors.Is(err, driver.ErrNotFound) {
		return true // another process delivered it
	}
	if err != nil {
		if ctx.Err() == nil {
			d.n.log.Warn("notifications: reading a batch", "endpoint", d.ep.Name, "batch", p, "err", err)
		}
		return ctx.Err() == nil
	}
	var env struct {
		Events []json.RawMessage `json:"events"`
	}
	if err := json.Unmarshal(data, &env); err != nil {
		d.n.log.Error("notifications: a batch that is not an envelope is dropped", "endpoint", d.ep.Name, "batch", p, "err", err)
		return d.remove(ctx, p)
	}
	for _, ev := range env.Events {
		for {
			if d.n.maxAge > 0 && !written.IsZero() && time.Since(written) > d.n.maxAge {
				d.n.log.Warn("notifications: undelivered events older than maxage are dropped", "endpoint", d.ep.Name,
					"batch", p, "events", len(env.Events), "written", written)
				return d.remove(ctx, p)
			}
			if wait := d.br.delay(time.Now()); wait > 0 {
				t := time.NewTimer(wait)
				select {
				case <-ctx.Done():
					t.Stop()
					return false
				case <-t.C:
				}
			}
			err := d.ep.post(ctx, ev)
			if ctx.Err() != nil {
				return false
			}
			if err == nil {
				d.succeeded()
				break
			}
			d.failed(err, written)
		}
	}
	return d.remove(ctx, p)
}

func (d *deliverer) remove(ctx context.Context, p string) bool {
	if err := d.n.drv.Delete(ctx, p); err != nil && !errors.Is(err, driver.ErrNotFound) && ctx.Err() == nil {
		// Delivered again later: at least once.
		d.n.log.Warn("notifications: removing a delivered batch", "endpoint", d.ep.Name, "batch", p, "err", err)
	}
	return ctx.Err() == nil
}

func (d *deliverer) succeeded() {
	if d.failing {
		d.n.log.Info("notifications: endpoint takes events again", "endpoint", d.ep.Name, "failures", d.br.failures)
	}
	d.failing = false
	d.br.success()
}

// failed counts a failed attempt; the endpoint's failures are logged
// when they begin and every failureLogEvery while they last, with the
// age of the oldest event waiting, so a growing queue is never silent.
func (d *deliverer) failed(err error, written time.Time) {
	now := time.Now()
	d.br.failure(now)
	if !d.failing || now.Sub(d.logged) >= failureLogEvery {
		d.n.log.Warn("notifications: endpoint failing; events wait in the queue", "endpoint", d.ep.Name, "url", d.ep.URL,
			"failures", d.br.failures, "oldest", now.Sub(written).Round(time.Second), "err", err)
		d.logged = now
	}
	d.failing = true
}
