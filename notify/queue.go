package notify

import (
	"fmt"
	"path"
	"strconv"
	"strings"
	"time"
)

// The queue lives beside Distribution's tree, where Distribution never
// looks (see storage/paths.go for the rest of _berth):
//
//	/docker/registry/v2/_berth/events/
//	└── <instance>/                                  one registry process (a UUID, new at every start)
//	    ├── alive                                    its heartbeat: the time, rewritten every adoptafter/4
//	    └── endpoints/<endpoint>/<unixnano>-<seq>    a batch: {"events":[…]} for that endpoint, write-once
//
// A batch's name sorts in the order it was written, and says when.
const eventsRoot = "/docker/registry/v2/_berth/events"

func instanceDir(instance string) string { return path.Join(eventsRoot, instance) }

func alivePath(instance string) string { return path.Join(eventsRoot, instance, "alive") }

func endpointsDir(instance string) string { return path.Join(eventsRoot, instance, "endpoints") }

func queueDir(instance, endpoint string) string {
	return path.Join(eventsRoot, instance, "endpoints", endpoint)
}

// batchName names a batch written at t, the seq-th of its process.
func batchName(t time.Time, seq uint64) string {
	return fmt.Sprintf("%019d-%08d", t.UnixNano(), seq%100000000)
}

// batchTime is when the batch called name was written.
func batchTime(name string) (time.Time, bool) {
	ns, _, ok := strings.Cut(name, "-")
	n, err := strconv.ParseInt(ns, 10, 64)
	if !ok || err != nil {
		return time.Time{}, false
	}
	return time.Unix(0, n), true
}

// queueName is the directory name of an endpoint's queue: its name, with
// every byte a storage path may not hold replaced by '-'.
func queueName(name string) string {
	b := []byte(name)
	for i, c := range b {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("._:@+-", c) >= 0
		if !ok {
			b[i] = '-'
		}
	}
	s := string(b)
	if s == "." || s == ".." {
		s = "-" + s
	}
	return s
}
