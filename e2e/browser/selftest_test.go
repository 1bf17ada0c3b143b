package browser

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/berth-registry/berth/tlsutil"
)

// pageServer serves two pages over TLS with the certificate name issues
// from the CA in dir: /clean, which keeps to its CSP, and /inline, which
// breaks it with an inline style.
func pageServer(t *testing.T, dir, name string) (base, pin string) {
	t.Helper()
	return pageServerWith(t, dir, name, map[string]string{
		"/clean":  `<p id="ok">clean</p>`,
		"/inline": `<p id="ok" style="color: red">inline style</p>`,
	})
}

// pageServerWith serves pages (path → body) over TLS on loopback, under
// the CSP "default-src 'none'; style-src 'self'", with a certificate for
// localhost and 127.0.0.1 issued to name by the CA in dir; it returns
// https://localhost:port and the certificate's SPKI pin.
func pageServerWith(t *testing.T, dir, name string, pages map[string]string) (base, pin string) {
	t.Helper()
	files, err := tlsutil.EnsureCertificates(tlsutil.CAConfig{Dir: dir, Name: name, Hosts: []string{"localhost", "127.0.0.1"}}, false)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.LoadX509KeyPair(files.CertFile, files.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	page := func(body string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'self'")
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			fmt.Fprintf(w, "<!doctype html><html><head><title>%s</title></head><body>%s</body></html>", name, body)
		}
	}
	for path, body := range pages {
		pattern := path
		if path == "/" {
			pattern = "/{$}"
		}
		mux.HandleFunc(pattern, page(body))
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mux, TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}}, ReadHeaderTimeout: 5 * time.Second,
		// The unpinned server's refused handshakes are the point, not news.
		ErrorLog: log.New(io.Discard, "", 0)}
	var wg sync.WaitGroup
	wg.Go(func() { _ = srv.ServeTLS(ln, "", "") })
	t.Cleanup(func() { srv.Close(); wg.Wait() })
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	return "https://localhost:" + port, spkiPin(t, files.CertFile)
}

// The harness trusts exactly the pinned key: a server whose certificate
// comes from the same CA but holds another key is refused, so the pin
// does not turn certificate checking off.
func TestHarnessTrustsOnlyThePinnedKey(t *testing.T) {
	chromiumPath(t)
	dir := t.TempDir()
	pinned, pin := pageServer(t, dir, "pinned")
	other, _ := pageServer(t, dir, "other")
	b := newBrowser(t, pinned, pin, 800, 600)

	if status := b.open("/clean"); status != 200 || b.text("#ok") != "clean" {
		t.Fatalf("pinned server: status %d, text %q", status, b.text("#ok"))
	}
	ctx, cancel := context.WithTimeout(b.ctx, actionTimeout)
	defer cancel()
	err := chromedp.Do(ctx, chromedp.Navigate(other+"/clean"))
	if err == nil || !strings.Contains(err.Error(), "ERR_CERT") {
		t.Fatalf("a server with an unpinned key: %v, want a certificate error", err)
	}
	t.Logf("unpinned server refused: %v", err)
}

// The harness hears of CSP violations: a page that breaks its policy is
// reported, one that keeps it is not.
func TestHarnessReportsCSPViolations(t *testing.T) {
	chromiumPath(t)
	base, pin := pageServer(t, t.TempDir(), "csp")
	b := newBrowser(t, base, pin, 800, 600)
	b.open("/clean")
	b.do("wait for the clean page", chromedp.WaitVisible(chromedp.CSS("#ok")))
	if v := b.cspViolations(); len(v) != 0 {
		t.Fatalf("a page within its CSP reported violations: %v", v)
	}
	b.open("/inline")
	b.do("wait for the inline page", chromedp.WaitVisible(chromedp.CSS("#ok")))
	deadline := time.Now().Add(5 * time.Second)
	for len(b.cspViolations()) == 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	v := b.cspViolations()
	if len(v) == 0 {
		t.Fatal("an inline style against style-src 'self' was not reported")
	}
	t.Logf("reported: %v", v)
}
