package notify

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/berth-registry/berth/storage/driver"
)

// The heartbeat and the scan: how the processes on one storage find the
// queues of those that stopped or died and deliver them (see the package
// documentation).

// heartbeat says this process is alive: its queue is its own to deliver.
func (n *Notifier) heartbeat(ctx context.Context) {
	t := time.Now().UTC().Format(time.RFC3339Nano)
	if err := n.drv.PutContent(ctx, alivePath(n.instance), []byte(t)); err != nil && ctx.Err() == nil {
		n.log.Warn("notifications: writing the heartbeat", "err", err)
	}
}

// scan looks at the other processes' queues. Those whose heartbeat is
// older than AdoptAfter, or gone (a process that stopped), are adopted by
// the live process with the smallest id, so that normally one delivers
// them; a drained queue of a process gone for long is removed.
func (n *Notifier) scan(ctx context.Context) {
	dirs, err := n.drv.List(ctx, eventsRoot)
	if err != nil {
		if !errors.Is(err, driver.ErrNotFound) && ctx.Err() == nil {
			n.log.Warn("notifications: listing the queues", "err", err)
		}
		return
	}
	now := time.Now()
	live := []string{n.instance}
	type stale struct {
		id        string
		deletable bool // once drained, its directory may go
	}
	var stales []stale
	seen := make(map[string]bool)
	for _, d := range dirs {
		id := lastElem(d)
		if id == n.instance {
			continue
		}
		seen[id] = true
		b, err := n.drv.GetContent(ctx, alivePath(id))
		switch {
		case errors.Is(err, driver.ErrNotFound):
			// Stopped (Close removes the heartbeat), or starting: a
			// process writes its heartbeat before any batch, so its
			// queue is empty then; it is removed only once missing
			// for AdoptAfter.
			n.adoptMu.Lock()
			since, ok := n.missing[id]
			if !ok {
				since = now
				n.missing[id] = now
			}
			n.adoptMu.Unlock()
			stales = append(stales, stale{id, now.Sub(since) >= n.adoptAfter})
			continue
		case err != nil:
			if ctx.Err() == nil {
				n.log.Warn("notifications: reading a heartbeat", "instance", id, "err", err)
			}
			continue
		}
		t, err := time.Parse(time.RFC3339Nano, string(b))
		if err != nil || now.Sub(t) > n.adoptAfter {
			// Killed, or cut off from storage. Its directory goes only
			// when it has been silent for ten times as long: a process
			// that still lives writes its heartbeat long before.
			stales = append(stales, stale{id, err != nil || now.Sub(t) > 10*n.adoptAfter})
			continue
		}
		live = append(live, id)
	}
	var adopted []string
	if slices.Min(live) == n.instance {
		for _, s := range stales {
			empty, err := n.queueEmpty(ctx, s.id)
			if err != nil {
				continue
			}
			if !empty {
				adopted = append(adopted, s.id)
				continue
			}
			if s.deletable {
				if err := n.drv.Delete(ctx, instanceDir(s.id)); err != nil && !errors.Is(err, driver.ErrNotFound) {
					n.log.Warn("notifications: removing a drained queue", "instance", s.id, "err", err)
				}
			}
		}
	}
	n.adoptMu.Lock()
	for id := range n.missing {
		if !seen[id] {
			delete(n.missing, id)
		}
	}
	changed := !slices.Equal(adopted, n.adopted)
	n.adopted = adopted
	n.adoptMu.Unlock()
	if changed {
		if len(adopted) > 0 {
			n.log.Info("notifications: delivering the queues of registries that stopped", "instances", adopted)
		}
		for _, ep := range n.eps {
			ep.signal()
		}
	}
}

// queueEmpty reports whether instance has no batch left for any endpoint,
// configured here or not.
func (n *Notifier) queueEmpty(ctx context.Context, instance string) (bool, error) {
	eps, err := n.drv.List(ctx, endpointsDir(instance))
	if errors.Is(err, driver.ErrNotFound) {
		return true, nil
	}
	if err != nil {
		return false, err
	}
	for _, d := range eps {
		names, err := n.drv.ListPage(ctx, d, "", 1)
		if errors.Is(err, driver.ErrNotFound) {
			continue
		}
		if err != nil {
			return false, err
		}
		if len(names) > 0 {
			n.noteUnknown(d)
			return false, nil
		}
	}
	return true, nil
}

// noteUnknown logs, once, a queue of an endpoint this registry does not
// have: it stays in storage until the endpoint is configured again or
// someone removes it.
func (n *Notifier) noteUnknown(dir string) {
	name := lastElem(dir)
	for _, ep := range n.eps {
		if ep.dir == name {
			return
		}
	}
	n.adoptMu.Lock()
	first := !n.unknownSeen[dir]
	n.unknownSeen[dir] = true
	n.adoptMu.Unlock()
	if first {
		n.log.Warn("notifications: undelivered events for an endpoint that is not configured stay in storage", "queue", dir)
	}
}

func lastElem(p string) string {
	for i := len(p) - 1; i >= 0; i-- {
		if p[i] == '/' {
			return p[i+1:]
		}
	}
	return p
}

// sources are the processes whose queues this one delivers: itself first.
func (n *Notifier) sources() []string {
	n.adoptMu.Lock()
	defer n.adoptMu.Unlock()
	return append([]string{n.instance}, n.adopted...)
}
