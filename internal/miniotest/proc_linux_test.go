package miniotest

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// The shared server ends with the test binary that started it. The test
// runs itself as that binary.
func TestSharedServerEndsWithTheProcess(t *testing.T) {
	if os.Getenv("MINIOTEST_CHILD") == "1" {
		fmt.Printf("minio pid %d\n", Shared(t).cmd.Process.Pid)
		return
	}
	findBinary(t)
	cmd := exec.Command(os.Args[0], "-test.run=^TestSharedServerEndsWithTheProcess$", "-test.v")
	cmd.Env = append(os.Environ(), "MINIOTEST_CHILD=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	var pid int
	for _, line := range bytes.Split(out, []byte("\n")) {
		if _, err := fmt.Sscanf(string(line), "minio pid %d", &pid); err == nil {
			break
		}
	}
	if pid == 0 {
		t.Fatalf("the child did not say which server it started:\n%s", out)
	}
	deadline := time.Now().Add(15 * time.Second)
	for alive(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("MinIO (pid %d) still runs 15 s after its test binary exited", pid)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// alive reports whether process pid exists and is not a zombie.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the command name, which is in parentheses.
	i := bytes.LastIndexByte(b, ')')
	return i < 0 || !strings.HasPrefix(string(b[i+1:]), " Z")
}
