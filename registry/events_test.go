package registry

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/berth-registry/berth/notify"
)

// failingSink refuses every event that is not a pull, as a Notifier does
// whose queue cannot be written; it records what it was given.
type failingSink struct {
	mu  sync.Mutex
	got []notify.Event
}

func (s *failingSink) Notify(ctx context.Context, evs ...notify.Event) error {
	s.mu.Lock()
	s.got = append(s.got, evs...)
	s.mu.Unlock()
	for _, ev := range evs {
		if ev.Action != notify.ActionPull {
			return errors.New("queue not writable")
		}
	}
	return nil
}

// TestUnqueuedEventFailsRequest: a push whose event cannot be queued is
// not answered as a success (the client retries, which sends it again),
// while a pull is served whatever the sink says.
func TestUnqueuedEventFailsRequest(t *testing.T) {
	sink := &failingSink{}
	h := newTestHandler(t, Config{Notify: sink})
	blob := "hello"
	dg := digest.FromString(blob)
	run(t, h, []step{
		{method: http.MethodPost, path: "/v2/team/app/blobs/uploads/?digest=" + dg.String(), body: blob, status: http.StatusInternalServerError, code: "UNKNOWN"},
		// The blob is stored all the same: a pull works and is notified.
		{method: http.MethodGet, path: "/v2/team/app/blobs/" + dg.String(), status: http.StatusOK, wantBody: blob},
		{method: http.MethodHead, path: "/v2/team/app/blobs/" + dg.String(), status: http.StatusOK},
	})
	if len(sink.got) != 2 || sink.got[0].Action != "push" || sink.got[1].Action != "pull" || sink.got[1].Target.Digest != dg ||
		sink.got[1].Target.Size != int64(len(blob)) || sink.got[1].Request.Method != http.MethodGet {
		t.Fatalf("events %+v, want the push and the GET's pull (no event for HEAD)", sink.got)
	}
}

// pushOnlySink takes every event but says it wants no pulls.
type pushOnlySink struct{ failingSink }

func (s *pushOnlySink) Notify(ctx context.Context, evs ...notify.Event) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.got = append(s.got, evs...)
	return nil
}

func (s *pushOnlySink) Wants(action string) bool { return action != notify.ActionPull }

// TestNoPullEventsForASinkThatWantsNone: GETs make no event for a sink
// that says it takes no pulls, and pushes still do.
func TestNoPullEventsForASinkThatWantsNone(t *testing.T) {
	sink := &pushOnlySink{}
	h := newTestHandler(t, Config{Notify: sink})
	blob := "hello"
	dg := digest.FromString(blob)
	run(t, h, []step{
		{method: http.MethodPost, path: "/v2/team/app/blobs/uploads/?digest=" + dg.String(), body: blob, status: http.StatusCreated},
		{method: http.MethodGet, path: "/v2/team/app/blobs/" + dg.String(), status: http.StatusOK, wantBody: blob},
	})
	if len(sink.got) != 1 || sink.got[0].Action != notify.ActionPush {
		t.Fatalf("events %+v, want only the push", sink.got)
	}
}
