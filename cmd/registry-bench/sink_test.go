package main

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestEnvList(t *testing.T) {
	var l envList
	for _, bad := range []string{"NOEQUALS", "=value"} {
		if err := l.Set(bad); err == nil {
			t.Errorf("Set(%q) accepted", bad)
		}
	}
	if err := l.Set("A=x={sink}/y"); err != nil {
		t.Fatal(err)
	}
	if err := l.Set("B=plain"); err != nil {
		t.Fatal(err)
	}
	if !l.usesSink() || (envList{"B=plain"}).usesSink() {
		t.Fatal("usesSink wrong")
	}
	if got := l.with("http://h/e"); len(got) != 2 || got[0] != "A=x=http://h/e/y" || got[1] != "B=plain" {
		t.Fatalf("with = %q", got)
	}
}

func TestSinkCountsEvents(t *testing.T) {
	s, err := startSink()
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	for _, body := range []string{`{"events":[{"id":"a"},{"id":"b"}]}`, `{"events":[{"id":"c"}]}`, `not json`} {
		resp, err := http.Post(s.url, "application/vnd.docker.distribution.events.v2+json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if want := body != "not json"; (resp.StatusCode == 200) != want {
			t.Errorf("POST %s: %d", body, resp.StatusCode)
		}
	}
	if s.posts.Load() != 2 || s.events.Load() != 3 {
		t.Fatalf("posts %d events %d, want 2 and 3", s.posts.Load(), s.events.Load())
	}
}

// TestCompareWithBerthBaseline runs compare with Berth on both sides, the
// first with extra environment naming the receiver: both start, the table
// names both, and the first registry really got the environment (its log
// level info makes it log its start, which the baseline at warn does not).
func TestCompareWithBerthBaseline(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("no go command to build the registry with: %v", err)
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "registry")
	if out, err := exec.Command(goBin, "build", "-o", bin, "../registry").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	var out, errOut bytes.Buffer
	err = run(context.Background(), []string{"compare", "--berth", bin, "--baseline", "berth", "--workdir", filepath.Join(dir, "w"),
		"--plain-http", "--rounds", "1", "--only", "manifest-put", "--count", "20",
		"--berth-env", "REGISTRY_LOG_LEVEL=info", "--berth-env", "BENCH_SINK={sink}"}, &out, &errOut)
	if err != nil {
		t.Fatalf("compare: %v\n%s\n%s", err, out.String(), errOut.String())
	}
	if !regexp.MustCompile(`(?m)^test +unit +berth +berth-baseline `).MatchString(out.String()) ||
		!regexp.MustCompile(`(?m)^manifest-put +ops/s +[0-9]`).MatchString(out.String()) {
		t.Fatalf("no table of berth against berth-baseline:\n%s", out.String())
	}
	if !strings.Contains(out.String(), "webhook receiver: 0 POSTs") {
		t.Errorf("the receiver's count is missing:\n%s", out.String())
	}
	logs := func(name string) string {
		b, _ := os.ReadFile(filepath.Join(dir, "w", name+".log"))
		return string(b)
	}
	if !strings.Contains(logs("berth"), "registry listening") || strings.Contains(logs("berth-baseline"), "registry listening") {
		t.Errorf("--berth-env reached the wrong registry:\nberth: %s\nbaseline: %s", logs("berth"), logs("berth-baseline"))
	}
}

func TestSinkWaitIdle(t *testing.T) {
	s, err := startSink()
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			resp, err := http.Post(s.url, "application/json", strings.NewReader(`{"events":[{}]}`))
			if err == nil {
				resp.Body.Close()
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	// While POSTs keep coming, waitIdle waits until its limit.
	if waited := s.waitIdle(context.Background(), 200*time.Millisecond, 600*time.Millisecond); waited < 600*time.Millisecond {
		t.Fatalf("waited %v while POSTs kept coming, want the 600ms limit", waited)
	}
	close(stop)
	<-done
	// Once they stop, it returns after the quiet time, long before the limit.
	if waited := s.waitIdle(context.Background(), 200*time.Millisecond, time.Minute); waited < 200*time.Millisecond || waited > 30*time.Second {
		t.Fatalf("waited %v after the POSTs stopped", waited)
	}
}
