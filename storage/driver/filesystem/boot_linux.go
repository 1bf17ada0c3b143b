package filesystem

import (
	"os"
	"strings"
)

// bootID is the kernel's random identity of this boot, without dashes.
func bootID() string {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return ""
	}
	return strings.ReplaceAll(strings.TrimSpace(string(b)), "-", "")
}

func sameBoot(a, b string) bool { return a == b }
