// Package pebbletest runs Pebble, the offline ACME test CA, for tests: with
// real validation, its VA resolving every name to 127.0.0.1 through a DNS
// server of the test's own and connecting to the ports the test serves on.
package pebbletest

import (
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/berth-registry/berth/internal/testutil"
	"github.com/berth-registry/berth/tlsutil"
)

// Install is how CI gets Pebble.
const Install = "go install github.com/letsencrypt/pebble/v2/cmd/pebble@v2.10.1"

// Pebble is a running Pebble.
type Pebble struct {
	// Directory is the ACME directory URL.
	Directory string
	// HTTPSCA is the CA file of Pebble's own HTTPS certificate: what an
	// ACME client must trust to talk to it (tlsutil's ACMEConfig.RootCAs).
	HTTPSCA string
	// Roots holds the root Pebble issues certificates under.
	Roots *x509.CertPool
	// Log is what Pebble printed.
	Log *testutil.Buffer

	stop func()
}

// Stop ends Pebble (tests restart servers with Pebble gone, to show they
// use their cache). It is also done when the test ends.
func (p *Pebble) Stop() { p.stop() }

// Start runs Pebble until the test ends. Its VA validates tls-alpn-01 on
// 127.0.0.1:tlsPort and http-01 on 127.0.0.1:httpPort. Without the pebble
// binary the test is skipped, except in CI (CI=true), where it fails.
func Start(t testing.TB, tlsPort, httpPort int) *Pebble {
	t.Helper()
	bin := findBinary(t)
	dir := t.TempDir()
	certs, err := tlsutil.EnsureCertificates(tlsutil.CAConfig{
		Dir: filepath.Join(dir, "pebble-https"), Name: "pebble", Hosts: []string{"127.0.0.1"}}, false)
	if err != nil {
		t.Fatal(err)
	}
	acmePort, mgmtPort := freePort(t), freePort(t)
	config, _ := json.Marshal(map[string]any{"pebble": map[string]any{
		"listenAddress":           fmt.Sprintf("127.0.0.1:%d", acmePort),
		"managementListenAddress": fmt.Sprintf("127.0.0.1:%d", mgmtPort),
		"certificate":             certs.CertFile,
		"privateKey":              certs.KeyFile,
		"httpPort":                httpPort,
		"tlsPort":                 tlsPort,
		"keyAlgorithm":            "ecdsa",
		"retryAfter":              map[string]int{"authz": 1, "order": 1},
	}})
	configFile := filepath.Join(dir, "pebble.json")
	if err := os.WriteFile(configFile, config, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-config", configFile, "-dnsserver", StartDNS(t))
	cmd.Env = append(os.Environ(),
		"PEBBLE_VA_NOSLEEP=1",      // no random validation delays
		"PEBBLE_WFE_NONCEREJECT=0", // no deliberate badNonce errors
		"PEBBLE_AUTHZREUSE=0",      // every order is validated afresh
	)
	p := &Pebble{Directory: fmt.Sprintf("https://127.0.0.1:%d/dir", acmePort), HTTPSCA: certs.CAFile, Log: &testutil.Buffer{}}
	cmd.Stdout, cmd.Stderr = p.Log, p.Log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	p.stop = func() {
		cmd.Process.Kill()
		<-exited
	}
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			t.Logf("pebble log:\n%s", p.Log)
		}
	})

	// Wait for Pebble, then fetch the root it issues under.
	tc, err := tlsutil.ClientConfig(certs.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: tc}, Timeout: 10 * time.Second}
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if resp, _, err := get(client, p.Directory); err == nil && resp.StatusCode == 200 {
			break
		}
		select {
		case <-exited:
			t.Fatal("pebble exited")
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("pebble did not start")
		}
	}
	_, rootPEM, err := get(client, fmt.Sprintf("https://127.0.0.1:%d/roots/0", mgmtPort))
	if err != nil {
		t.Fatal(err)
	}
	p.Roots = x509.NewCertPool()
	if !p.Roots.AppendCertsFromPEM([]byte(rootPEM)) {
		t.Fatalf("no root from pebble: %q", rootPEM)
	}
	return p
}

func get(client *http.Client, url string) (*http.Response, string, error) {
	resp, err := client.Get(url)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp, string(body), err
}

// findBinary returns the pebble binary from PATH or the Go bin directory.
func findBinary(t testing.TB) string {
	t.Helper()
	if p, err := exec.LookPath("pebble"); err == nil {
		return p
	}
	var dirs []string
	if out, err := exec.Command("go", "env", "GOBIN", "GOPATH").Output(); err == nil {
		lines := strings.Split(string(out), "\n")
		if len(lines) >= 2 {
			if gobin := strings.TrimSpace(lines[0]); gobin != "" {
				dirs = append(dirs, gobin)
			}
			for _, p := range filepath.SplitList(strings.TrimSpace(lines[1])) {
				dirs = append(dirs, filepath.Join(p, "bin"))
			}
		}
	}
	exe := "pebble"
	if runtime.GOOS == "windows" {
		exe += ".exe"
	}
	for _, d := range dirs {
		p := filepath.Join(d, exe)
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p
		}
	}
	msg := "pebble not found on PATH or in $(go env GOPATH)/bin; install it with: " + Install
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// FreePort returns a loopback port that was free a moment ago.
func FreePort(t testing.TB) int { return freePort(t) }

func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
