package tlsutil

import (
	"crypto/tls"
	"net"
	"sync"
	"time"
)

// Listener returns a TLS listener on inner with the server's configuration.
// Serve HTTP with it (http.Server.Serve; keep TLSConfig set to TLSConfig()
// so HTTP/2 is offered). Its connections write behind: see writeBehind.
func (s *Server) Listener(inner net.Listener) net.Listener {
	return tls.NewListener(writeBehindListener{inner}, s.tlsConfig)
}

type writeBehindListener struct{ net.Listener }

func (l writeBehindListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	wb := &writeBehind{Conn: c}
	wb.cond.L = &wb.mu
	return wb, nil
}

// Sizes of the write-behind buffer.
const (
	// bulkWrite: a write at least this long is part of a stream (TLS
	// writes full records of 16 KiB plus overhead) and may go behind.
	bulkWrite = 16 << 10
	// maxBehind bounds what a connection holds unsent; a write that would
	// pass it waits.
	maxBehind = 256 << 10
	// closeDrain is how long Close waits for held bytes to leave.
	closeDrain = 5 * time.Second
)

// writeBehind is the TCP connection under a TLS server connection. A write
// that finds the connection idle and is small (a whole small response) is
// written at once. A bulk write, or any write while a write is in flight,
// is copied into a buffer and returns; one goroutine sends the buffer, so
// the records that pile up while it is in write(2) leave in one call.
//
// That is what makes HTTP/2 downloads fast: Go's HTTP/2 server writes one
// frame at a time, each as two TLS records with a write(2) each, and waits
// for each before it schedules the next; here the next frame is encrypted
// while the previous one is in the kernel. A write error is returned by the
// next Write, and by Close.
type writeBehind struct {
	net.Conn
	mu      sync.Mutex
	cond    sync.Cond // signalled when the sender drains the buffer or fails
	buf     []byte    // bytes accepted and not yet handed to the kernel
	spare   []byte    // the sender's previous buffer, for reuse
	sending bool      // a write to Conn is in flight
	err     error     // the first failed write, sticky
}

func (w *writeBehind) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for len(w.buf) > 0 && len(w.buf)+len(b) > maxBehind && w.err == nil {
		w.cond.Wait()
	}
	if w.err != nil {
		return 0, w.err
	}
	if !w.sending && len(w.buf) == 0 && (len(b) < bulkWrite || len(b) > maxBehind) {
		w.sending = true
		w.mu.Unlock()
		n, err := w.Conn.Write(b)
		w.mu.Lock()
		if err != nil && w.err == nil {
			w.err = err
		}
		if len(w.buf) > 0 && w.err == nil {
			go w.send() // written behind this one meanwhile
		} else {
			w.sending = false
		}
		w.cond.Broadcast()
		return n, err
	}
	if w.buf == nil {
		w.buf = getBehindBuffer()
	}
	w.buf = append(w.buf, b...)
	if !w.sending {
		w.sending = true
		go w.send()
	}
	return len(b), nil
}

// send writes the buffer until it is empty.
func (w *writeBehind) send() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for len(w.buf) > 0 && w.err == nil {
		out := w.buf
		w.buf = w.spare
		if w.buf == nil {
			w.buf = getBehindBuffer()
		}
		w.mu.Unlock()
		_, err := w.Conn.Write(out)
		w.mu.Lock()
		w.spare = out[:0]
		if err != nil && w.err == nil {
			w.err = err
		}
		w.cond.Broadcast()
	}
	w.sending = false
	putBehindBuffer(w.buf) // an idle connection holds no buffer
	putBehindBuffer(w.spare)
	w.buf, w.spare = nil, nil
	w.cond.Broadcast()
}

// behindBuffers are write-behind buffers: two per connection while it
// streams, none while it is idle.
var behindBuffers sync.Pool

func getBehindBuffer() []byte {
	if b, ok := behindBuffers.Get().(*[]byte); ok {
		return (*b)[:0]
	}
	return make([]byte, 0, maxBehind+bulkWrite)
}

func putBehindBuffer(b []byte) {
	if cap(b) == maxBehind+bulkWrite {
		behindBuffers.Put(&b)
	}
}

// Close sends what is held (waiting at most closeDrain for a peer that
// does not read) and closes the connection.
func (w *writeBehind) Close() error {
	w.mu.Lock()
	if w.sending || len(w.buf) > 0 {
		_ = w.Conn.SetWriteDeadline(time.Now().Add(closeDrain))
		for (w.sending || len(w.buf) > 0) && w.err == nil {
			w.cond.Wait()
		}
	}
	w.mu.Unlock()
	return w.Conn.Close()
}
