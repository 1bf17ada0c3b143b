package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"
)

// envList is a repeatable KEY=VALUE flag.
type envList []string

func (l *envList) String() string { return strings.Join(*l, " ") }

func (l *envList) Set(v string) error {
	if k, _, ok := strings.Cut(v, "="); !ok || k == "" {
		return errors.New("want KEY=VALUE")
	}
	*l = append(*l, v)
	return nil
}

// usesSink reports whether a value names the webhook receiver.
func (l envList) usesSink() bool {
	for _, kv := range l {
		if strings.Contains(kv, "{sink}") {
			return true
		}
	}
	return false
}

// with returns the list with {sink} replaced by url.
func (l envList) with(url string) []string {
	out := make([]string, len(l))
	for i, kv := range l {
		out[i] = strings.ReplaceAll(kv, "{sink}", url)
	}
	return out
}

// sink is a webhook receiver on loopback that answers 200 to every POST
// and counts the POSTs and the events in their envelopes.
type sink struct {
	url           string
	srv           *http.Server
	posts, events atomic.Int64
}

func startSink() (*sink, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &sink{url: "http://" + ln.Addr().String() + "/events"}
	s.srv = &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			http.Error(w, "POST only", http.StatusMethodNotAllowed)
			return
		}
		var env struct {
			Events []json.RawMessage `json:"events"`
		}
		err := json.NewDecoder(io.LimitReader(r.Body, 64<<20)).Decode(&env)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		s.posts.Add(1)
		s.events.Add(int64(len(env.Events)))
	})}
	go func() { _ = s.srv.Serve(ln) }()
	return s, nil
}

func (s *sink) close() { _ = s.srv.Close() }

// waitIdle returns once no POST has arrived for quiet, or after max, and
// says how long it waited.
func (s *sink) waitIdle(ctx context.Context, quiet, max time.Duration) time.Duration {
	start := time.Now()
	last, since := s.posts.Load(), start
	for time.Since(start) < max && ctx.Err() == nil {
		time.Sleep(quiet / 10)
		if n := s.posts.Load(); n != last {
			last, since = n, time.Now()
		} else if time.Since(since) >= quiet {
			break
		}
	}
	return time.Since(start)
}
