package main

import (
	"net"
	"sync"
	"time"
)

// rateLink is a TCP relay to one address whose downstream direction (what
// the target sends back) shares one rate limit across all connections: a
// network link of that bandwidth between the clients and the target, such
// as the internet between a mirror and its upstream. The upstream direction
// (requests) is not limited.
type rateLink struct {
	ln     net.Listener
	target string
	rate   float64 // bytes per second

	mu    sync.Mutex
	next  time.Time // when the link is free again
	conns map[net.Conn]bool
	shut  bool // Close was called
	wg    sync.WaitGroup
}

// newRateLink listens on a free loopback port and relays to target.
func newRateLink(target string, bytesPerSecond int64) (*rateLink, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	l := &rateLink{ln: ln, target: target, rate: float64(bytesPerSecond), conns: map[net.Conn]bool{}}
	l.wg.Add(1)
	go l.accept()
	return l, nil
}

// Addr is the host:port clients connect to.
func (l *rateLink) Addr() string { return l.ln.Addr().String() }

// Close stops accepting, closes the connections (idle keep-alive ones
// would otherwise last) and waits for the relays to end.
func (l *rateLink) Close() error {
	err := l.ln.Close()
	l.mu.Lock()
	l.shut = true
	for c := range l.conns {
		c.Close()
	}
	l.mu.Unlock()
	l.wg.Wait()
	return err
}

func (l *rateLink) accept() {
	defer l.wg.Done()
	for {
		c, err := l.ln.Accept()
		if err != nil {
			return
		}
		t, err := net.Dial("tcp", l.target)
		if err != nil {
			c.Close()
			continue
		}
		l.mu.Lock()
		if l.shut {
			l.mu.Unlock()
			c.Close()
			t.Close()
			return
		}
		l.conns[c], l.conns[t] = true, true
		l.mu.Unlock()
		l.wg.Add(2)
		go func() { defer l.wg.Done(); l.relay(t, c, false) }()
		go func() { defer l.wg.Done(); l.relay(c, t, true) }()
	}
}

// relay copies from src to dst, through the shared limit when limited,
// and closes both when src ends.
func (l *rateLink) relay(dst, src net.Conn, limited bool) {
	defer func() {
		dst.Close()
		src.Close()
		l.mu.Lock()
		delete(l.conns, dst)
		delete(l.conns, src)
		l.mu.Unlock()
	}()
	buf := make([]byte, 16<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if limited {
				l.take(n)
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// linkBurst is how far the link may lag behind its schedule and catch up:
// sleeps overshoot by up to a millisecond or so, and without this credit
// each overshoot would be bandwidth lost.
const linkBurst = 20 * time.Millisecond

// take waits until the link has carried n more bytes at its rate.
func (l *rateLink) take(n int) {
	l.mu.Lock()
	now := time.Now()
	if earliest := now.Add(-linkBurst); l.next.Before(earliest) {
		l.next = earliest
	}
	l.next = l.next.Add(time.Duration(float64(n) / l.rate * float64(time.Second)))
	wait := l.next.Sub(now)
	l.mu.Unlock()
	if wait > 0 {
		time.Sleep(wait)
	}
}
