package storage

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/berth-registry/berth/internal/osfile"
	"github.com/berth-registry/berth/storage/driver"
)

// The collection lock keeps two collections (two replicas' schedules, a
// registry and the garbage-collect command) from running at once on one
// store, with nothing but the driver's reads and writes: a collection
// reads the lock, writes its own when there is none (or it expired, or
// names a dead process of this machine: same host name and PID namespace,
// so a container that shares the host's name is not mistaken for it),
// waits lockSettle, and reads it
// back. Of collections that raced, the last writer finds its own lock and
// runs; the others find another's and give up. A writer whose read was
// more than lockSettle/2 before its write starts over, so a writer that
// comes after a winner's read-back always finds the winner's lock. The
// holder renews the lock every lockTTL/4 and stops if it finds another's.
const (
	lockTTL    = time.Minute
	lockSettle = time.Second
)

type gcLock struct {
	ID      string    `json:"id"`
	Host    string    `json:"host"`
	PID     int       `json:"pid"`
	PIDNS   string    `json:"pidns,omitempty"`
	Expires time.Time `json:"expires"`
}

func gcLockPath() string { return berthPath("gc", "lock") }

// lockGC takes the collection lock for the returned context's lifetime;
// unlock releases it. The context ends if the lock is lost.
func (s *Store) lockGC(ctx context.Context) (context.Context, func(), error) {
	var b [16]byte
	_, _ = rand.Read(b[:])
	host, _ := os.Hostname()
	mine := gcLock{ID: hex.EncodeToString(b[:]), Host: host, PID: os.Getpid(), PIDNS: osfile.PIDNamespace()}
	for attempt := 0; ; attempt++ {
		if attempt == 5 {
			return nil, nil, errors.New("storage: the store is too slow to take the collection lock")
		}
		readAt := time.Now()
		cur, err := s.readGCLock(ctx)
		if err != nil {
			return nil, nil, err
		}
		dead := cur != nil && cur.Host == mine.Host && cur.PIDNS == mine.PIDNS && !osfile.ProcessAlive(cur.PID)
		if cur != nil && time.Now().Before(cur.Expires) && !dead {
			return nil, nil, fmt.Errorf("%w (process %d on %s, until %s)", ErrGCRunning, cur.PID, cur.Host, cur.Expires.Format(time.RFC3339))
		}
		mine.Expires = time.Now().Add(lockTTL)
		if time.Since(readAt) > lockSettle/2 {
			continue
		}
		if err := s.writeGCLock(ctx, mine); err != nil {
			return nil, nil, err
		}
		if err := sleep(ctx, lockSettle); err != nil {
			return nil, nil, err
		}
		cur, err = s.readGCLock(ctx)
		if err != nil {
			return nil, nil, err
		}
		if cur == nil || cur.ID != mine.ID {
			return nil, nil, ErrGCRunning
		}
		break
	}
	ctx, cancel := context.WithCancelCause(ctx)
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		t := time.NewTicker(lockTTL / 4)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			cur, err := s.readGCLock(ctx)
			if err == nil && (cur == nil || cur.ID != mine.ID) {
				err = errors.New("storage: the collection lock was taken over")
			}
			if err == nil {
				mine.Expires = time.Now().Add(lockTTL)
				err = s.writeGCLock(ctx, mine)
			}
			if err != nil {
				cancel(err)
				return
			}
		}
	}()
	unlock := func() {
		cancel(nil)
		<-stopped
		if cur, err := s.readGCLock(context.Background()); err == nil && cur != nil && cur.ID == mine.ID {
			_ = s.d.Delete(context.Background(), gcLockPath())
		}
	}
	return ctx, unlock, nil
}

func (s *Store) readGCLock(ctx context.Context) (*gcLock, error) {
	b, err := s.d.GetContent(ctx, gcLockPath())
	if errors.Is(err, driver.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var l gcLock
	if json.Unmarshal(b, &l) != nil {
		return nil, nil // a torn or foreign file: treat as no lock
	}
	return &l, nil
}

func (s *Store) writeGCLock(ctx context.Context, l gcLock) error {
	b, _ := json.Marshal(l)
	return s.d.PutContent(ctx, gcLockPath(), b)
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return context.Cause(ctx)
	case <-t.C:
		return nil
	}
}
