package registry

import (
	"io"
	"net/http"
	"sync"
	"time"
)

// DefaultBodyIdleTimeout is how long a request body may deliver nothing
// while the registry waits for it, when Config.BodyIdleTimeout is zero.
const DefaultBodyIdleTimeout = 60 * time.Second

// idleBody is a request body that is cut when it delivers nothing for idle
// while the handler waits for it. A client that stops sending in the middle
// of a body (its network gone, its process stopped) would otherwise keep
// the request, and the upload session it holds, for as long as the
// connection lives: minutes, or hours with TCP keepalives alone.
//
// Only time spent waiting in Read counts: a handler that stops reading for
// a while (its disk busy) is not the client's stall. The cut is a read
// deadline in the past (http.ResponseController), which fails the pending
// Read with os.ErrDeadlineExceeded; on HTTP/1 the connection is closed after
// the response, on HTTP/2 only the stream's body ends. With a
// ResponseWriter that has no read deadline (a test recorder) nothing is cut.
type idleBody struct {
	io.ReadCloser
	idle  time.Duration
	cut   func() // sets the read deadline in the past, and logs
	mu    sync.Mutex
	timer *time.Timer // watches while the request runs; nil before a Read
	wait  time.Time   // when the pending Read began; zero when none is
	done  bool        // the request ended, or the body was cut
	n     int64       // bytes read, for the metrics
}

// watchBody returns r's body under watch; finish must be called when the
// handler returns.
func (h *Handler) watchBody(w http.ResponseWriter, r *http.Request) *idleBody {
	rc := http.NewResponseController(w)
	b := &idleBody{ReadCloser: r.Body, idle: h.bodyIdle}
	b.cut = func() {
		if err := rc.SetReadDeadline(time.Now()); err != nil {
			return // not supported: nothing to cut with
		}
		h.log.Warn("request body stalled: cut", "method", r.Method, "path", r.URL.Path,
			"idle", b.idle, "remote", r.RemoteAddr)
	}
	return b
}

func (b *idleBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	if !b.done {
		b.wait = time.Now()
		if b.timer == nil {
			b.timer = time.AfterFunc(b.idle, b.watch)
		}
	}
	b.mu.Unlock()
	n, err := b.ReadCloser.Read(p)
	b.mu.Lock()
	b.wait = time.Time{}
	b.n += int64(n)
	b.mu.Unlock()
	return n, err
}

// received is how many bytes were read.
func (b *idleBody) received() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.n
}

// watch runs every idle at most: it cuts the body when the pending Read
// has waited idle, and otherwise looks again when it could have.
func (b *idleBody) watch() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.done {
		return
	}
	next := b.idle
	if !b.wait.IsZero() {
		waited := time.Since(b.wait)
		if waited >= b.idle {
			b.done = true
			b.cut()
			return
		}
		next = b.idle - waited
	}
	b.timer.Reset(next)
}

// finish stops the watch: after the handler returns, the connection may
// serve another request, whose reads are none of this body's business.
func (b *idleBody) finish() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.done = true
	if b.timer != nil {
		b.timer.Stop()
	}
}
