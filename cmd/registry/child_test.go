package main

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Tests that kill a registry with SIGKILL run it in a child process: this
// test binary re-executed with only the test that started it and an
// environment variable telling that test to serve instead (serveChild).

// childAddrLine prefixes the line on which a child prints its address.
const childAddrLine = "child-addr: "

// childRegistry is a registry running in a child process.
type childRegistry struct {
	cmd    *exec.Cmd
	addr   string // host:port it listens on
	exited chan struct{}
	log    string // its stderr
}

// serveChild is the child's side: it serves cfg (plain HTTP on a free
// loopback port) and prints its address; it never returns while serving.
func serveChild(t *testing.T, cfg Config) {
	cfg.HTTP.Addr = "127.0.0.1:0"
	cfg.HTTP.TLS.Disabled = true
	cfg.Log.AccessLog.Disabled = true
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	err := serve(context.Background(), cfg, log, func(addr string) { fmt.Printf("%s%s\n", childAddrLine, addr) })
	t.Fatalf("serve returned: %v", err)
}

// startChild runs test in a child process with env=value set, and waits
// until the registry it serves listens. The child is killed when t ends;
// its log is shown if t failed.
func startChild(t *testing.T, test, env, value string) *childRegistry {
	t.Helper()
	c := &childRegistry{exited: make(chan struct{}), log: filepath.Join(t.TempDir(), "registry.log")}
	logFile, err := os.Create(c.log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { logFile.Close() })
	c.cmd = exec.Command(os.Args[0], "-test.run=^"+test+"$", "-test.count=1")
	c.cmd.Env = append(os.Environ(), env+"="+value)
	c.cmd.Stderr = logFile
	stdout, err := c.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = c.cmd.Wait(); close(c.exited) }()
	t.Cleanup(func() {
		c.kill(t)
		if t.Failed() {
			if b, err := os.ReadFile(c.log); err == nil && len(b) > 0 {
				t.Logf("child registry's log:\n%s", b)
			}
		}
	})
	addrc := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if a, ok := strings.CutPrefix(sc.Text(), childAddrLine); ok {
				addrc <- a
			}
		}
	}()
	select {
	case c.addr = <-addrc:
	case <-c.exited:
		t.Fatalf("the child registry exited before it listened: %v", c.cmd.ProcessState)
	case <-time.After(60 * time.Second):
		t.Fatal("the child registry did not listen within 60s")
	}
	return c
}

// kill kills the registry with SIGKILL and waits until it is gone.
func (c *childRegistry) kill(t *testing.T) {
	t.Helper()
	_ = c.cmd.Process.Kill()
	select {
	case <-c.exited:
	case <-time.After(30 * time.Second):
		t.Fatal("the killed child registry did not exit within 30s")
	}
}
