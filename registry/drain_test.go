package registry

import (
	"bytes"
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// An error answer to an HTTP/2 request whose body the handler did not
// need (here a 416 to a chunk out of order) reads the body to its end
// first, so the stream ends without RST_STREAM, which some clients take
// as a reason to drop the response (curl 7.88: "transfer closed with 104
// bytes remaining"). The client below speaks raw frames to see the reset.
func TestErrorAnswerEndsHTTP2StreamWithoutReset(t *testing.T) {
	h := newTestHandler(t, Config{})
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("POST", "/v2/team/app/blobs/uploads/", nil))
	loc := rec.Header().Get("Location")
	if rec.Code != http.StatusAccepted || !strings.HasPrefix(loc, "/v2/team/app/blobs/uploads/") {
		t.Fatalf("POST: %d, Location %q", rec.Code, loc)
	}

	srv := httptest.NewUnstartedServer(h)
	srv.EnableHTTP2 = true
	srv.StartTLS()
	defer srv.Close()
	conn, err := tls.Dial("tcp", srv.Listener.Addr().String(), &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(http2.ClientPreface)); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(conn, conn)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}

	body := bytes.Repeat([]byte("x"), 60000) // within the initial window
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, f := range [][2]string{
		{":method", "PATCH"}, {":scheme", "https"}, {":authority", "registry"}, {":path", loc},
		{"content-range", "100-60099"}, {"content-length", "60000"}, {"content-type", "application/octet-stream"},
	} {
		enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes(), EndHeaders: true}); err != nil {
		t.Fatal(err)
	}
	// Half the body, a pause in which the handler answers, the rest.
	if err := fr.WriteData(1, false, body[:30000]); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	if err := fr.WriteData(1, true, body[30000:]); err != nil {
		t.Fatal(err)
	}

	var status string
	var ended bool
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			if ended {
				break // the deadline after the response: no reset came
			}
			t.Fatalf("reading frames: %v (status %q)", err, status)
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				fr.WriteSettingsAck()
			}
		case *http2.HeadersFrame:
			dec := hpack.NewDecoder(4096, func(hf hpack.HeaderField) {
				if hf.Name == ":status" {
					status = hf.Value
				}
			})
			dec.Write(f.HeaderBlockFragment())
			ended = ended || f.StreamEnded()
		case *http2.DataFrame:
			if f.StreamEnded() {
				ended = true
				conn.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
			}
		case *http2.RSTStreamFrame:
			t.Fatalf("RST_STREAM %v on stream %d after a %s answer", f.ErrCode, f.StreamID, status)
		case *http2.GoAwayFrame:
			t.Fatalf("GOAWAY %v", f.ErrCode)
		}
	}
	if status != "416" {
		t.Fatalf("status %q, want 416", status)
	}
}
