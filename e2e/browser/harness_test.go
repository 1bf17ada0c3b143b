// Package browser tests the web UI (package ui) in a real browser: Debian's
// chromium, headless, driven over the DevTools protocol by chromedp, against
// the registry program (built from ./cmd/registry) behind the real token
// server, both over TLS.
//
// Without chromium the tests are skipped, except in CI (CI=true), where they
// fail. Screenshots of the main pages go to $BERTH_SCREENSHOTS (else a
// temporary directory, left in place), and each path is logged.
package browser

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/audits"
	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

// Install is how a Debian machine (and CI, in .ci/run) gets the browser.
const Install = "apt-get install chromium"

const (
	// actionTimeout bounds every browser action (a navigation, a click, a
	// query): a page that never loads or an element that never comes
	// fails the test in seconds instead of hanging it.
	actionTimeout = 20 * time.Second
	// startTimeout bounds the browser's start.
	startTimeout = 60 * time.Second
)

// chromiumPath finds the browser: $BERTH_CHROMIUM, or chromium on PATH.
// Without it the test is skipped, or fails when CI=true.
func chromiumPath(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("BERTH_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	msg := "Chromium not found ($BERTH_CHROMIUM, chromium on PATH); install it with: " + Install
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// spkiPin is the base64 SHA-256 of the public key (SubjectPublicKeyInfo)
// of the PEM certificate in certFile, the form Chromium's
// --ignore-certificate-errors-spki-list takes.
func spkiPin(t testing.TB, certFile string) string {
	t.Helper()
	data, err := os.ReadFile(certFile)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		t.Fatalf("%s holds no PEM certificate", certFile)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return base64.StdEncoding.EncodeToString(sum[:])
}

// browser is one headless Chromium process with one tab.
type browser struct {
	t    testing.TB
	ctx  context.Context // the tab; actions derive a timeout from it
	base string          // https://host:port every path is relative to

	mu         sync.Mutex
	violations []string // Content-Security-Policy violations the browser reported
	errors     []string // other errors: uncaught exceptions, console errors, failed loads
}

// newBrowser starts Chromium with a window of width×height, trusting the
// server certificate whose key is pin (see spkiPin) and no other one
// outside the system's roots.
//
// Trust: the registry's certificate comes from the test's own private CA.
// Rather than --ignore-certificate-errors (which would accept any
// certificate, and so test nothing about TLS), the browser gets
// --ignore-certificate-errors-spki-list with the SHA-256 of exactly the
// registry certificate's public key: a certificate error is overlooked
// only on a chain that holds that key, so a server with any other key is
// still refused (TestHarnessTrustsOnlyThePinnedKey shows it). Adding the
// CA to an NSS database would need certutil (libnss3-tools), one more
// package; the pin needs nothing, and trusts less than the CA would.
func newBrowser(t testing.TB, base, pin string, width, height int) *browser {
	t.Helper()
	exe := chromiumPath(t)
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(exe),
		// Chromium's sandbox refuses to run as root, which tests in CI
		// containers are.
		chromedp.NoSandbox,
		chromedp.WindowSize(width, height),
		chromedp.Flag("ignore-certificate-errors-spki-list", pin),
		// Nothing but the servers under test: no component updates, no
		// Google services reached on start.
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("no-pings", true),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(actx)
	t.Cleanup(func() { cancelTab(); cancelAlloc() })
	b := &browser{t: t, ctx: ctx, base: base}

	// The first action starts the browser and must run on the tab's own
	// context (a timeout on it would stop the browser when it ends), so
	// the start is bounded from outside.
	started := make(chan error, 1)
	go func() {
		started <- chromedp.Do(ctx, chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
			// The Audits domain reports CSP violations as issues, beside
			// the console messages the Log domain (enabled by chromedp)
			// carries.
			_, err := cdp.Call(ctx, t, audits.Enable, cdp.Empty{})
			return err
		}))
	}()
	select {
	case err := <-started:
		if err != nil {
			t.Fatalf("starting %s: %v", exe, err)
		}
	case <-time.After(startTimeout):
		cancelAlloc()
		t.Fatalf("%s did not start within %s", exe, startTimeout)
	}
	if err := chromedp.Listen(ctx, b.record); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		if len(b.errors) > 0 {
			t.Logf("the browser reported:\n  %s", strings.Join(b.errors, "\n  "))
		}
	})
	return b
}

// record keeps what the browser reports about the pages: it runs on the
// tab's reading goroutine, so it only appends.
func (b *browser) record(ev any) {
	var violation, other string
	switch e := ev.(type) {
	case *audits.EventIssueAdded:
		if e.Issue != nil && e.Issue.Code == audits.InspectorIssueCodeContentSecurityPolicyIssue {
			d := "?"
			if e.Issue.Details != nil && e.Issue.Details.ContentSecurityPolicyIssueDetails != nil {
				c := e.Issue.Details.ContentSecurityPolicyIssueDetails
				d = fmt.Sprintf("%s blocked %q (%s)", c.ViolatedDirective, c.BlockedURL, c.ContentSecurityPolicyViolationType)
			}
			violation = "CSP issue: " + d
		}
	case *log.EventEntryAdded:
		en := e.Entry
		if en == nil {
			return
		}
		if strings.Contains(en.Text, "Content Security Policy") {
			violation = fmt.Sprintf("console (%s): %s", en.Source, en.Text)
		} else if en.Level == log.EntryLevelError {
			other = fmt.Sprintf("console %s error at %s: %s", en.Source, en.URL, en.Text)
		}
	case *runtime.EventConsoleAPICalled:
		if e.Type == runtime.ConsoleAPICalledTypeError {
			other = "console.error called"
		}
	case *runtime.EventExceptionThrown:
		if e.ExceptionDetails != nil {
			other = "uncaught exception: " + e.ExceptionDetails.Text
		}
	}
	if violation == "" && other == "" {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if violation != "" {
		b.violations = append(b.violations, violation)
	}
	if other != "" {
		b.errors = append(b.errors, other)
	}
}

// cspViolations returns the CSP violations reported so far.
func (b *browser) cspViolations() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.violations...)
}

// run runs one action on the tab with actionTimeout, failing the test
// with what when it fails.
func run[T any](b *browser, what string, a chromedp.Action[T]) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, actionTimeout)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		b.t.Fatalf("%s: %v", what, err)
	}
	return v
}

// do runs steps as one action (see run).
func (b *browser) do(what string, steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	run(b, what, chromedp.Steps(steps...))
}

// open loads path (relative to the site) and returns the HTTP status of
// the document.
func (b *browser) open(path string) int {
	b.t.Helper()
	resp := run(b, "open "+path, chromedp.NavigateResponse(b.base+path))
	if resp == nil {
		b.t.Fatalf("open %s: no response", path)
	}
	return int(resp.Status)
}

// clickAndLoad clicks the element sel selects and waits for the page the
// click loads.
func (b *browser) clickAndLoad(sel string) {
	b.t.Helper()
	run(b, "click "+sel, chromedp.WaitEvent(page.LoadEventFired, nil,
		chromedp.Click(chromedp.CSS(sel), chromedp.NodeVisible)))
}

// keysAndLoad types keys into the focused element and waits for the page
// they load (keys end with Enter).
func (b *browser) keysAndLoad(keys string) {
	b.t.Helper()
	run(b, fmt.Sprintf("type %q", keys), chromedp.WaitEvent(page.LoadEventFired, nil, chromedp.KeyEvent(keys)))
}

// eval evaluates a JavaScript expression in the page.
func eval[T any](b *browser, expr string) T {
	b.t.Helper()
	return run(b, "evaluate "+expr, chromedp.Evaluate[T](expr))
}

// jsString quotes s as a JavaScript string literal.
func jsString(s string) string {
	q, _ := json.Marshal(s)
	return string(q)
}

// attrs returns attribute attr of every element sel selects, in document
// order (it does not wait: an absent element gives an empty list).
func (b *browser) attrs(sel, attr string) []string {
	b.t.Helper()
	return eval[[]string](b, fmt.Sprintf("Array.from(document.querySelectorAll(%s), e => e.getAttribute(%s) || '')", jsString(sel), jsString(attr)))
}

// exists reports whether sel selects an element now.
func (b *browser) exists(sel string) bool {
	b.t.Helper()
	return eval[bool](b, fmt.Sprintf("document.querySelector(%s) !== null", jsString(sel)))
}

// text returns the text of the first element sel selects, trimmed, and ""
// when there is none.
func (b *browser) text(sel string) string {
	b.t.Helper()
	return eval[string](b, fmt.Sprintf("((document.querySelector(%s) || {}).textContent || '').trim()", jsString(sel)))
}

// location is the URL the tab shows.
func (b *browser) location() string {
	b.t.Helper()
	return run(b, "location", chromedp.Location())
}

var (
	shotsOnce sync.Once
	shotsDir  string
	shotsErr  error
)

// screenshot saves a PNG of the whole page as <name>.png in the
// screenshot directory and logs its path.
func (b *browser) screenshot(name string) {
	b.t.Helper()
	shotsOnce.Do(func() {
		if shotsDir = os.Getenv("BERTH_SCREENSHOTS"); shotsDir != "" {
			shotsErr = os.MkdirAll(shotsDir, 0o755)
			return
		}
		shotsDir, shotsErr = os.MkdirTemp("", "berth-ui-screenshots-")
	})
	if shotsErr != nil {
		b.t.Fatalf("screenshot directory: %v", shotsErr)
	}
	png := run(b, "screenshot "+name, chromedp.FullScreenshot(100))
	file := filepath.Join(shotsDir, name+".png")
	if err := os.WriteFile(file, png, 0o644); err != nil {
		b.t.Fatal(err)
	}
	b.t.Logf("screenshot %s: %s", name, file)
}

// navigationTiming returns the page's PerformanceNavigationTiming entry.
func (b *browser) navigationTiming() map[string]any {
	b.t.Helper()
	return eval[map[string]any](b, "performance.getEntriesByType('navigation')[0].toJSON()")
}

// logTiming logs how long the document took: to the first byte, to
// DOMContentLoaded and to the load event, in milliseconds from the start
// of the navigation.
func (b *browser) logTiming(what string) map[string]float64 {
	b.t.Helper()
	nt := b.navigationTiming()
	ms := map[string]float64{}
	for _, k := range []string{"requestStart", "responseStart", "responseEnd", "domInteractive", "domContentLoadedEventEnd", "loadEventEnd", "transferSize", "decodedBodySize"} {
		if v, ok := nt[k].(float64); ok {
			ms[k] = v
		}
	}
	b.t.Logf("%s: first byte %.1f ms, response end %.1f ms, DOMContentLoaded %.1f ms, load %.1f ms, %.0f bytes of HTML",
		what, ms["responseStart"], ms["responseEnd"], ms["domContentLoadedEventEnd"], ms["loadEventEnd"], ms["decodedBodySize"])
	return ms
}
