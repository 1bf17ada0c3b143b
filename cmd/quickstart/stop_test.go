package main

import (
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/berth-registry/berth/internal/testutil"
)

// TestStubbornChild is not a test: it is the child process of
// TestStopAllKillsEveryStubbornChild, which ignores the signals a server
// stops on and waits to be killed.
func TestStubbornChild(t *testing.T) {
	if os.Getenv("BERTH_STUBBORN_CHILD") != "1" {
		t.Skip("the child process of TestStopAllKillsEveryStubbornChild")
	}
	signal.Ignore(syscall.SIGTERM, os.Interrupt)
	fmt.Println("ignoring signals")
	time.Sleep(2 * time.Minute)
}

// Two children that ignore SIGTERM are both killed when the grace period
// ends. stopAll used to wait on one time.After channel for every child:
// it fires once, so after the first kill it waited forever for the next.
func TestStopAllKillsEveryStubbornChild(t *testing.T) {
	var out testutil.Buffer
	logs := &lockedWriter{w: &out}
	var children []*child
	for i := range 2 {
		c, err := startChild(process{
			name: fmt.Sprintf("stubborn%d", i),
			bin:  os.Args[0],
			args: []string{"-test.run=^TestStubbornChild$"},
			env:  []string{"BERTH_STUBBORN_CHILD=1"},
		}, logs)
		if err != nil {
			t.Fatal(err)
		}
		children = append(children, c)
	}
	t.Cleanup(func() {
		for _, c := range children {
			c.cmd.Process.Kill()
		}
	})
	for deadline := time.Now().Add(30 * time.Second); strings.Count(out.String(), "ignoring signals") < 2; {
		if time.Now().After(deadline) {
			t.Fatalf("the children did not start: %q", out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}

	stopped := make(chan struct{})
	go func() {
		stopAll(syscall.SIGTERM, 200*time.Millisecond, children...)
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-time.After(30 * time.Second):
		t.Fatal("stopAll did not return: a child outlived the grace period")
	}
	for _, c := range children {
		select {
		case <-c.done:
		default:
			t.Errorf("%s is still running", c.name)
		}
	}
}
