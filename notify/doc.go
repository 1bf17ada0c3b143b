// Package notify sends the registry's events (pushes, pulls, mounts,
// deletions) to HTTP endpoints as CNCF Distribution's notifications do:
// the same configuration keys, the same envelope
// (application/vnd.docker.distribution.events.v2+json, one event per
// request, any 2xx or 3xx answer is delivery), the same retry rule
// (threshold attempts at once, then one per backoff). Unlike
// Distribution, whose queue is in memory, events wait in storage, so a
// registry that is killed or restarted loses none, and a receiver that is
// down for hours gets everything when it is back.
//
// The request path only hands events to a Sink. Notifier, the Sink, works
// in three parts:
//
//   - A writer (group commit). Notify puts events in memory; for any
//     action but pull it then waits until the batch holding them is in
//     storage, so such a request is answered only once its events are
//     durable (if the write fails, so does the request). The writer writes
//     at once when an event waits, and what arrives meanwhile goes into
//     the next batch, so concurrent pushes share writes. Pull events are
//     not waited for: they are written with the next batch, at most
//     FlushInterval (1s) plus one storage write after the request was
//     answered; a registry killed in that window loses them, and while
//     storage writes fail more than 10,000 of them are dropped (logged).
//     A batch is one small file per endpoint, holding the events that
//     endpoint does not ignore; events no endpoint wants are never
//     written.
//   - A delivery worker per endpoint. It lists the queue in name (= write)
//     order, POSTs each event of a batch, retries a failed one by the
//     endpoint's threshold and backoff, and removes the batch once all its
//     events were answered 2xx or 3xx. It never holds up the writer: a
//     dead endpoint lets batches pile up in storage, logged when failures
//     begin and every minute after with the age of the oldest waiting
//     event. Batches older than MaxAge (a week) are dropped, logged.
//   - A heartbeat and a scan, for replicas. Each process has its own
//     queue, named by its instance id (new at every start), and rewrites
//     its heartbeat every AdoptAfter/4. A queue whose process has not
//     written its heartbeat for AdoptAfter (1m), or removed it (a clean
//     stop removes it), is adopted: delivered by the live process with the
//     smallest id. So a killed registry's events go out AdoptAfter after
//     its last heartbeat, whichever replica, or its own restart, is
//     running, and a stopped one's at the next scan.
//
// Delivery is at least once: an event is sent again when the process
// stops or dies between the answer and the removal of its batch, or when
// two processes deliver one queue (a replica judged dead that was only
// slow). Repeats carry the same event id. Order is not guaranteed across
// batches of different processes, as in Distribution.
//
// The queue is in storage beside Distribution's tree, where Distribution
// never looks:
//
//	/docker/registry/v2/_berth/events/
//	└── <instance>/                                  one registry process
//	    ├── alive                                    its heartbeat (RFC 3339 time)
//	    └── endpoints/<endpoint>/<unixnano>-<seq>    a batch, {"events":[…]}, write-once
//
// The endpoint directory is the endpoint's name with bytes a storage path
// cannot hold replaced by '-'. A drained queue of a process gone for ten
// times AdoptAfter is removed; a queue of an endpoint removed from the
// configuration stays (logged) until someone deletes it.
package notify
