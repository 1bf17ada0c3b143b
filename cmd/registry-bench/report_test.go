package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	var d []time.Duration
	for i := 1; i <= 100; i++ {
		d = append(d, time.Duration(i)*time.Millisecond)
	}
	for p, want := range map[float64]time.Duration{50: 50 * time.Millisecond, 99: 99 * time.Millisecond, 100: 100 * time.Millisecond, 0: time.Millisecond} {
		if got := percentile(d, p); got != want {
			t.Errorf("p%v = %v, want %v", p, got, want)
		}
	}
	if got := percentile([]time.Duration{7}, 99); got != 7 {
		t.Errorf("p99 of one = %v", got)
	}
	if got := percentile(nil, 50); got != 0 {
		t.Errorf("p50 of none = %v", got)
	}
}

func TestOpsResult(t *testing.T) {
	lat := []time.Duration{4 * time.Millisecond, time.Millisecond, 3 * time.Millisecond, 2 * time.Millisecond}
	r := opsResult(lat, 2*time.Second)
	if r.Value != 2 || r.Ops != 4 || r.P50ms != 2 || r.P99ms != 4 {
		t.Fatalf("%+v", r)
	}
}

func TestMedian(t *testing.T) {
	if m := median([]float64{3, 1, 2}); m != 2 {
		t.Errorf("median = %v", m)
	}
	if m := median([]float64{4, 1, 2, 3}); m != 2.5 {
		t.Errorf("median = %v", m)
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"1GiB": 1 << 30, "16MiB": 16 << 20, "8m": 8 << 20, "4096": 4096, "1GB": 1e9, "2k": 2048} {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "GiB", "1TiB", "-1", "1.5GiB"} {
		if _, err := parseSize(in); err == nil {
			t.Errorf("parseSize(%q) succeeded", in)
		}
	}
	s := byteSize(256 << 20)
	if s.String() != "256MiB" {
		t.Errorf("String() = %s", s.String())
	}
}

func TestParseVmHWM(t *testing.T) {
	status := "Name:\tregistry\nVmPeak:\t  900000 kB\nVmHWM:\t   23456 kB\nVmRSS:\t   12000 kB\n"
	if got := parseVmHWM([]byte(status)); got != 23456 {
		t.Fatalf("VmHWM = %d", got)
	}
}

func TestPullBound(t *testing.T) {
	if got := pullBound(2000, 4000, 0); int(got) != 1333 {
		t.Fatalf("pullBound = %v", got)
	}
	if got := pullBound(2000, 4000, 4000); int(got) != 1000 {
		t.Fatalf("pullBound with the socket = %v", got)
	}
}

func TestWriteTable(t *testing.T) {
	var buf bytes.Buffer
	writeTable(&buf, []Result{
		{Test: "push-mono", Proto: "HTTP/1.1", Unit: "MB/s", Value: 812.34, PeakRSSKiB: 20480},
		{Test: "manifest-get", Unit: "ops/s", Value: 7340.6, P50ms: 0.75, P99ms: 4.7},
		{Test: "pull", Error: "boom"},
	})
	out := buf.String()
	for _, want := range []string{"push-mono", "812", "20.0 MiB", "7341", "0.75", "4.70", "FAILED: boom"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
}

func TestWriteComparison(t *testing.T) {
	var buf bytes.Buffer
	mb := func(v float64) Result { return Result{Unit: "MB/s", Value: v} }
	writeComparison(&buf, "berth", "distribution", []comparison{
		{Test: "push-mono", Unit: "MB/s", A: []Result{mb(900), mb(1000), mb(950)}, B: []Result{mb(500), mb(450), mb(475)}, Bound: "disk", Bounds: []float64{1000, 2000, 800}},
		{Test: "manifest-get", Unit: "ops/s", A: []Result{{Value: 100, P50ms: 1, P99ms: 2}}, B: []Result{{Error: "x"}}},
	})
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("got %d lines:\n%s", len(lines), buf.String())
	}
	// Fractions per round: 90 %, 50 %, 119 %; their median is 90 %.
	for _, want := range []string{"push-mono", " 950 ", " 475 ", "2.00", "disk 1000", "90%", "900 1000 950"} {
		if !strings.Contains(lines[1], want) {
			t.Errorf("row lacks %q: %s", want, lines[1])
		}
	}
	if !strings.Contains(lines[2], "ERR") || !strings.Contains(lines[2], "1.00 | 2.00") {
		t.Errorf("row: %s", lines[2])
	}
}

func TestJSONLine(t *testing.T) {
	var buf bytes.Buffer
	writeJSON(&buf, Result{Target: "berth", Test: "pull", Unit: "MB/s", Value: 1})
	var r Result
	if err := json.Unmarshal(buf.Bytes(), &r); err != nil || r.Test != "pull" || !strings.HasSuffix(buf.String(), "}\n") {
		t.Fatalf("%q: %v", buf.String(), err)
	}
}
