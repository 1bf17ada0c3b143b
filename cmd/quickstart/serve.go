package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/berth-registry/berth/tlsutil"
)

// Timeouts of the child processes.
const (
	readyTimeout = 60 * time.Second // until both answer
	stopGrace    = 20 * time.Second // after a forwarded signal, before Kill
)

// child is one running server.
type child struct {
	name string
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
	err  error         // its exit status, once done is closed
}

// process is a program quickstart runs until it is stopped.
type process struct {
	name string
	bin  string
	args []string
	env  []string
	dir  string
}

// nativeProcesses are the two servers as child processes.
func nativeProcesses(st *state) []process {
	return []process{
		{name: "authserver", bin: st.authBin, args: []string{"serve", st.l.path(authConfig)}, dir: st.l.dir,
			env: []string{"AUTHSERVER_SERVER_ADDR=" + st.authAddr}},
		{name: "registry", bin: st.registryBin, args: []string{"serve", st.l.path(registryConfig)}, dir: st.l.dir,
			env: []string{"REGISTRY_HTTP_ADDR=" + st.registryAddr, "REGISTRY_AUTH_TOKEN_REALM=" + st.realm()}},
	}
}

// serve starts procs, waits until both servers answer, prints how to use
// them, then waits for a signal (forwarded to every process) or for any
// process to exit.
func serve(ctx context.Context, st *state, procs []process, stdout, stderr io.Writer) error {
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)

	logs := &lockedWriter{w: stderr}
	var children []*child
	for _, p := range procs {
		c, err := startChild(p, logs)
		if err != nil {
			stopAll(nil, stopGrace, children...)
			return err
		}
		children = append(children, c)
	}

	readyCtx, cancel := context.WithTimeout(ctx, readyTimeout)
	readyErr := make(chan error, 1)
	go func() { readyErr <- waitReady(readyCtx, st, children) }()
	var sig os.Signal
	var err error
	select {
	case err = <-readyErr:
	case sig = <-sigs:
		err = fmt.Errorf("stopped by %v before the servers were ready", sig)
	}
	cancel()
	if err != nil {
		stopAll(sig, stopGrace, children...)
		return err
	}
	fmt.Fprint(stdout, banner(st))

	exited := make(chan *child, len(children))
	for _, c := range children {
		go func() { <-c.done; exited <- c }()
	}
	select {
	case sig = <-sigs:
		fmt.Fprintf(stdout, "\n%v: stopping …\n", sig)
		stopAll(sig, stopGrace, children...)
		for _, c := range children {
			if c.err != nil && !isSignalExit(c.err) {
				return fmt.Errorf("%s: %w", c.name, c.err)
			}
		}
		return nil
	case c := <-exited:
		stopAll(syscall.SIGTERM, stopGrace, children...)
		return fmt.Errorf("%s exited: %v", c.name, c.err)
	case <-ctx.Done():
		stopAll(syscall.SIGTERM, stopGrace, children...)
		return ctx.Err()
	}
}

// startChild starts p, its output prefixed with its name.
func startChild(p process, logs *lockedWriter) (*child, error) {
	cmd := exec.Command(p.bin, p.args...)
	cmd.Dir = p.dir
	cmd.Env = append(os.Environ(), p.env...)
	w := &prefixWriter{prefix: fmt.Sprintf("%-10s | ", p.name), out: logs}
	cmd.Stdout, cmd.Stderr = w, w
	setProcAttr(cmd)
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", p.name, err)
	}
	c := &child{name: p.name, cmd: cmd, done: make(chan struct{})}
	go func() {
		c.err = cmd.Wait()
		w.flush()
		close(c.done)
	}()
	return c, nil
}

// stopAll forwards sig to every child still running (a nil sig: SIGTERM),
// kills those that have not exited after grace, and waits for all.
// Where a signal cannot be sent (Windows has no SIGTERM or SIGINT for other
// processes; Ctrl-C reaches every process of the console by itself) the
// grace period still applies.
func stopAll(sig os.Signal, grace time.Duration, children ...*child) {
	if sig == nil {
		sig = syscall.SIGTERM
	}
	for _, c := range children {
		select {
		case <-c.done:
		default:
			_ = c.cmd.Process.Signal(sig)
		}
	}
	expired := time.NewTimer(grace)
	defer expired.Stop()
	for _, c := range children {
		select {
		case <-c.done:
			continue
		case <-expired.C:
		}
		// The grace period is over (the timer fires once): kill every
		// child still running, then wait for them all.
		for _, c := range children {
			select {
			case <-c.done:
			default:
				_ = c.cmd.Process.Kill()
			}
		}
		break
	}
	for _, c := range children {
		<-c.done
	}
}

// isSignalExit reports whether a child ended because of the signal it was
// sent rather than by returning an error.
func isSignalExit(err error) bool {
	var ee *exec.ExitError
	return errors.As(err, &ee) && !ee.Exited()
}

// waitReady polls both servers until they answer over TLS with the private
// CA as the only root: the auth server's /healthz with 200, the registry's
// /v2/ with 200 or 401.
func waitReady(ctx context.Context, st *state, children []*child) error {
	tc, err := tlsutil.ClientConfig(st.caFile)
	if err != nil {
		return err
	}
	// Connect to the listening address, check the certificate for the
	// public name, as a client there does.
	tc.ServerName = st.public
	tr := &http.Transport{TLSClientConfig: tc}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 2 * time.Second}
	checks := []struct {
		name, url string
		ok        func(int) bool
	}{
		{"authserver", "https://" + net.JoinHostPort(st.connectHost, strconv.Itoa(st.authPort)) + "/healthz", func(c int) bool { return c == http.StatusOK }},
		{"registry", "https://" + net.JoinHostPort(st.connectHost, strconv.Itoa(st.registryPort)) + "/v2/", func(c int) bool {
			return c == http.StatusOK || c == http.StatusUnauthorized
		}},
	}
	for _, chk := range checks {
		var last error
		for {
			for _, c := range children {
				select {
				case <-c.done:
					return fmt.Errorf("%s exited before it was ready: %v", c.name, c.err)
				default:
				}
			}
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, chk.url, nil)
			resp, err := client.Do(req)
			if err == nil {
				resp.Body.Close()
				if chk.ok(resp.StatusCode) {
					break
				}
				err = fmt.Errorf("%s: %s", chk.url, resp.Status)
			}
			last = err
			select {
			case <-ctx.Done():
				return fmt.Errorf("%s not ready: %v", chk.name, last)
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
	return nil
}

// banner is what quickstart prints once both servers answer.
func banner(st *state) string {
	var b strings.Builder
	line := strings.Repeat("─", 72)
	fmt.Fprintf(&b, "\n%s\nBerth is running (Ctrl-C stops it).\n", line)
	fmt.Fprintf(&b, "  registry     https://%s   (data: %s)\n", st.registryHost(), st.l.path(dataDir))
	fmt.Fprintf(&b, "  auth server  %s\n", st.realm())
	for _, c := range st.created {
		fmt.Fprintf(&b, "  created      %s\n", c)
	}
	if st.password != "" {
		fmt.Fprintf(&b, "\nFirst user (this password is shown only now; it is stored only as a bcrypt hash):\n")
		fmt.Fprintf(&b, "  user:     admin\n  password: %s\n", st.password)
	} else {
		fmt.Fprintf(&b, "\nUsers are in %s (admin's password was printed on the first run;\n"+
			"  new one: %s user passwd admin --htpasswd %s)\n", st.l.path(htpasswdFile), st.authBin, st.l.path(htpasswdFile))
	}
	host := st.registryHost()
	winHost := strings.ReplaceAll(host, ":", "")
	fmt.Fprintf(&b, "\nTrust the CA %s\n  (SHA-256 %s):\n", st.caFile, st.fingerprint)
	fmt.Fprintf(&b, "  Linux, Docker:   sudo mkdir -p /etc/docker/certs.d/%s && sudo cp %s /etc/docker/certs.d/%s/ca.crt\n", host, st.caFile, host)
	fmt.Fprintf(&b, "  Linux, podman:   /etc/containers/certs.d/%s/ca.crt\n", host)
	fmt.Fprintf(&b, "  Linux, system:   sudo cp %s /usr/local/share/ca-certificates/berth-ca.crt && sudo update-ca-certificates\n", st.caFile)
	fmt.Fprintf(&b, "  Windows, Docker Engine:  copy %s C:\\ProgramData\\docker\\certs.d\\%s\\ca.crt\n", st.caFile, winHost)
	fmt.Fprintf(&b, "  Windows, Docker Desktop: Import-Certificate -FilePath %s -CertStoreLocation Cert:\\LocalMachine\\Root\n", st.caFile)
	fmt.Fprintf(&b, "  macOS:           sudo security add-trusted-cert -d -r trustRoot -k /Library/Keychains/System.keychain %s\n", st.caFile)
	fmt.Fprintf(&b, "  (then restart Docker Desktop; Docker Engine reads certs.d on every connection)\n")
	if isLoopbackName(st.public) {
		fmt.Fprintf(&b, "  Docker does not check certificates of registries on localhost: for other machines start with --host <name or IP>.\n")
	}
	fmt.Fprintf(&b, "\nLog in, push, pull:\n")
	fmt.Fprintf(&b, "  docker login %s -u admin\n", host)
	fmt.Fprintf(&b, "  docker tag alpine %s/library/alpine && docker push %s/library/alpine\n", host, host)
	fmt.Fprintf(&b, "  docker pull %s/library/alpine\n", host)
	fmt.Fprintf(&b, "  crane catalog %s   (the admin may list repositories)\n", host)
	fmt.Fprintf(&b, "Add a user: %s user add alice --htpasswd %s\n", st.authBin, st.l.path(htpasswdFile))
	fmt.Fprintf(&b, "Policy: %s (restart quickstart after editing)\n%s\n", st.l.path(authConfig), line)
	return b.String()
}

func isLoopbackName(h string) bool {
	if ip := net.ParseIP(h); ip != nil {
		return ip.IsLoopback()
	}
	return strings.EqualFold(h, "localhost") || strings.HasSuffix(strings.ToLower(h), ".localhost")
}

// lockedWriter serialises writes of whole lines from several children.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// prefixWriter writes each complete line to out with prefix.
type prefixWriter struct {
	prefix string
	out    io.Writer
	mu     sync.Mutex
	buf    []byte
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.buf = append(p.buf, b...)
	for {
		i := bytes.IndexByte(p.buf, '\n')
		if i < 0 {
			break
		}
		if _, err := p.out.Write(append([]byte(p.prefix), p.buf[:i+1]...)); err != nil {
			return len(b), err
		}
		p.buf = p.buf[i+1:]
	}
	return len(b), nil
}

// flush writes a last line without a newline.
func (p *prefixWriter) flush() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.buf) > 0 {
		_, _ = p.out.Write(append(append([]byte(p.prefix), p.buf...), '\n'))
		p.buf = nil
	}
}
