package filesystem

import (
	"strconv"
	"time"

	"golang.org/x/sys/windows"
)

// bootID is the time this boot began, in Unix seconds: the clock less the
// milliseconds since boot. It drifts by the clock's adjustments, so two
// values are the same boot when they are within bootSlack.
func bootID() string {
	up := windows.DurationSinceBoot()
	return "w" + strconv.FormatInt(time.Now().Add(-up).Unix(), 10)
}

// bootSlack bounds the drift between two readings of one boot's start.
// Two boots are told apart unless the machine crashed within it of
// starting.
const bootSlack = 60

func sameBoot(a, b string) bool {
	x, err1 := strconv.ParseInt(a[min(1, len(a)):], 10, 64)
	y, err2 := strconv.ParseInt(b[min(1, len(b)):], 10, 64)
	if err1 != nil || err2 != nil || len(a) == 0 || a[0] != 'w' || len(b) == 0 || b[0] != 'w' {
		return false
	}
	return max(x-y, y-x) <= bootSlack
}
