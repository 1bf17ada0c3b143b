package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// Result is one measurement; it is printed as one JSON line.
type Result struct {
	Target  string  `json:"target"` // the registry's URL, or its name in a comparison
	Test    string  `json:"test"`
	Round   int     `json:"round,omitempty"`
	Proto   string  `json:"proto,omitempty"`
	Unit    string  `json:"unit"` // "MB/s" (10^6 bytes) or "ops/s"
	Value   float64 `json:"value"`
	Bytes   int64   `json:"bytes,omitempty"`
	Ops     int     `json:"ops,omitempty"`
	Seconds float64 `json:"seconds"`
	P50ms   float64 `json:"p50_ms,omitempty"`
	P99ms   float64 `json:"p99_ms,omitempty"`
	// PeakRSSKiB is the server's VmHWM after the test, when its PID is
	// known; PeakReset says whether the peak was reset before the test
	// (otherwise it is the peak since the server started).
	PeakRSSKiB int64 `json:"peak_rss_kib,omitempty"`
	PeakReset  bool  `json:"peak_reset,omitempty"`
	// Cache is "cold" when the page cache was dropped right before the
	// test, "warm" when it was not; empty where it does not matter.
	Cache string `json:"cache,omitempty"`
	// PeakRSSOneKiB is push-memory's peak with one upload (PeakRSSKiB is
	// the peak with --parallel).
	PeakRSSOneKiB int64 `json:"peak_rss_one_kib,omitempty"`
	// Load1 is the machine's 1-minute load average right after the test.
	Load1 float64 `json:"load1,omitempty"`
	Error string  `json:"error,omitempty"`
}

func throughput(bytes int64, d time.Duration) float64 {
	return float64(bytes) / 1e6 / d.Seconds()
}

// opsResult fills a Result from the latencies of ops done in d.
func opsResult(lat []time.Duration, d time.Duration) Result {
	slices.Sort(lat)
	return Result{
		Unit:    "ops/s",
		Value:   float64(len(lat)) / d.Seconds(),
		Ops:     len(lat),
		Seconds: d.Seconds(),
		P50ms:   ms(percentile(lat, 50)),
		P99ms:   ms(percentile(lat, 99)),
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// percentile returns the nearest-rank p-th percentile of sorted; zero for
// an empty slice.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	return sorted[min(max(rank, 1), len(sorted))-1]
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func writeJSON(w io.Writer, r Result) {
	b, _ := json.Marshal(r)
	fmt.Fprintf(w, "%s\n", b)
}

// fmtNum prints a figure with three significant digits at most, without
// an exponent.
func fmtNum(v float64) string {
	switch {
	case v == 0:
		return "0"
	case math.Abs(v) >= 100:
		return fmt.Sprintf("%.0f", v)
	case math.Abs(v) >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

func fmtRSS(kib int64) string {
	if kib == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f MiB", float64(kib)/1024)
}

// writeTable prints the results of one run.
func writeTable(w io.Writer, rs []Result) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "test\tproto\tvalue\tunit\tp50 ms\tp99 ms\tpeak RSS\t")
	for _, r := range rs {
		if r.Error != "" {
			fmt.Fprintf(tw, "%s\t%s\tFAILED: %s\t\t\t\t\t\n", r.Test, r.Proto, r.Error)
			continue
		}
		p50, p99 := "-", "-"
		if r.Unit == "ops/s" {
			p50, p99 = fmtNum(r.P50ms), fmtNum(r.P99ms)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", r.Test, dash(r.Proto), fmtNum(r.Value), r.Unit, p50, p99, fmtRSS(r.PeakRSSKiB))
	}
	tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// comparison is the outcome of one test on both registries over all
// rounds.
type comparison struct {
	Test   string
	Unit   string
	A, B   []Result  // Berth's and Distribution's rounds
	Bound  string    // the machine limit that bounds the test, if any
	Bounds []float64 // that limit, measured before each of A's rounds, in Unit
}

// boundFraction is the median over rounds of A's figure as a fraction of
// the limit measured next to it; 0 when there is none.
func (c comparison) boundFraction() float64 {
	var f []float64
	for i, r := range c.A {
		if i < len(c.Bounds) && r.Error == "" && c.Bounds[i] > 0 {
			f = append(f, r.Value/c.Bounds[i])
		}
	}
	return median(f)
}

func values(rs []Result) []float64 {
	var v []float64
	for _, r := range rs {
		if r.Error == "" {
			v = append(v, r.Value)
		}
	}
	return v
}

func field(rs []Result, f func(Result) float64) float64 {
	var v []float64
	for _, r := range rs {
		if r.Error == "" {
			v = append(v, f(r))
		}
	}
	return median(v)
}

func roundsString(rs []Result) string {
	var parts []string
	for _, r := range rs {
		if r.Error != "" {
			parts = append(parts, "ERR")
		} else {
			parts = append(parts, fmtNum(r.Value))
		}
	}
	return strings.Join(parts, " ")
}

func maxRSS(rs []Result) int64 {
	var m int64
	for _, r := range rs {
		m = max(m, r.PeakRSSKiB)
	}
	return m
}

// writeComparison prints the side-by-side table: per test the median of
// each registry, each round's figure, Berth/Distribution, and Berth as a
// fraction of the machine limit that bounds the test (the median of the
// rounds' fractions).
func writeComparison(w io.Writer, nameA, nameB string, cs []comparison) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "test\tunit\t%s\t%s\t%s/%s\tbound\t%s/bound\tp50|p99 ms %s\tp50|p99 ms %s\tpeak RSS %s\tpeak RSS %s\trounds %s\trounds %s\tload1 %s|%s\n",
		nameA, nameB, nameA, nameB, nameA, nameA, nameB, nameA, nameB, nameA, nameB, nameA, nameB)
	for _, c := range cs {
		a, b := median(values(c.A)), median(values(c.B))
		ratio := "-"
		if a > 0 && b > 0 {
			ratio = fmt.Sprintf("%.2f", a/b)
		}
		bound, frac := "-", "-"
		if bv := median(c.Bounds); bv > 0 {
			bound = fmt.Sprintf("%s %s", c.Bound, fmtNum(bv))
			if f := c.boundFraction(); f > 0 {
				frac = fmt.Sprintf("%.0f%%", 100*f)
			}
		}
		latA, latB := "-", "-"
		if c.Unit == "ops/s" {
			latA = fmtNum(field(c.A, func(r Result) float64 { return r.P50ms })) + " | " + fmtNum(field(c.A, func(r Result) float64 { return r.P99ms }))
			latB = fmtNum(field(c.B, func(r Result) float64 { return r.P50ms })) + " | " + fmtNum(field(c.B, func(r Result) float64 { return r.P99ms }))
		}
		load := func(rs []Result) string { return fmtNum(field(rs, func(r Result) float64 { return r.Load1 })) }
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s | %s\n",
			c.Test, c.Unit, fmtNum(a), fmtNum(b), ratio, bound, frac, latA, latB,
			fmtRSS(maxRSS(c.A)), fmtRSS(maxRSS(c.B)), roundsString(c.A), roundsString(c.B), load(c.A), load(c.B))
	}
	tw.Flush()
}
