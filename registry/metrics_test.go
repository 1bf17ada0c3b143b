package registry

import (
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// TestMetrics runs requests of every kind of outcome through the real
// engine and checks the counts, bytes and labels, with the body idle
// watch on (which counts received bytes) and off (a counting body does).
func TestMetrics(t *testing.T) {
	for _, idle := range []time.Duration{0, -1} {
		t.Run("bodyidle="+idle.String(), func(t *testing.T) { testMetrics(t, idle) })
	}
}

func testMetrics(t *testing.T, idle time.Duration) {
	reg := prometheus.NewRegistry()
	h := newTestHandler(t, Config{DeleteEnabled: true, Metrics: reg, BodyIdleTimeout: idle})
	blob := "0123456789abcdef"
	dg := digest.FromString(blob).String()
	repo := "secret-team/secret-app"
	run(t, h, []step{
		{method: "GET", path: "/v2/", status: 200},
		{method: "POST", path: "/v2/" + repo + "/blobs/uploads/?digest=" + dg, body: blob, status: 201},
		{method: "GET", path: "/v2/" + repo + "/blobs/" + dg, status: 200, wantBody: blob},
		{method: "GET", path: "/v2/" + repo + "/blobs/" + dg, status: 200, wantBody: blob},
		{method: "HEAD", path: "/v2/" + repo + "/blobs/" + dg, status: 200},
		{method: "GET", path: "/v2/Secret/blobs/" + dg, status: 400},
		{method: "GET", path: "/secret", status: 404},
		{method: "SECRET", path: "/v2/", status: 404},
	})

	want := map[string]float64{
		`berth_http_requests_total{code="200",kind="base",method="GET"}`:          1,
		`berth_http_requests_total{code="201",kind="upload-start",method="POST"}`: 1,
		`berth_http_requests_total{code="200",kind="blob",method="GET"}`:          2,
		`berth_http_requests_total{code="200",kind="blob",method="HEAD"}`:         1,
		`berth_http_requests_total{code="400",kind="invalid",method="GET"}`:       1,
		`berth_http_requests_total{code="404",kind="other",method="GET"}`:         1,
		`berth_http_requests_total{code="404",kind="other",method="other"}`:       1,
		`berth_http_received_bytes_total{kind="upload-start"}`:                    16,
		`berth_http_received_bytes_total{kind="blob"}`:                            0,
		`berth_http_sent_bytes_total{kind="blob"}`:                                32,
		`berth_http_sent_bytes_total{kind="base"}`:                                2,
		`berth_http_request_duration_seconds_count{kind="blob",method="GET"}`:     2,
		`berth_http_uploads_in_flight`:                                            0,
	}
	got := gather(t, reg)
	for series, v := range want {
		if got[series] != v {
			t.Errorf("%s = %v, want %v", series, got[series], v)
		}
	}
	var total float64
	for series, v := range got {
		if strings.HasPrefix(series, "berth_http_requests_total{") {
			total += v
		}
		if strings.Contains(strings.ToLower(series), "secret") {
			t.Errorf("a label value comes from the request: %s", series)
		}
	}
	if total != 8 {
		t.Errorf("%v requests counted, want 8", total)
	}
}

// TestUploadsInFlight: the gauge counts an upload request while its body
// arrives, and drops back when it ends.
func TestUploadsInFlight(t *testing.T) {
	reg := prometheus.NewRegistry()
	h := newTestHandler(t, Config{Metrics: reg})
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("POST", "/v2/a/blobs/uploads/", nil))
	loc := rec.Header().Get("Location")
	if rec.Code != 202 || loc == "" {
		t.Fatalf("starting an upload: %d", rec.Code)
	}
	pr, pw := io.Pipe()
	done := make(chan int)
	go func() {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("PATCH", loc, pr))
		done <- rec.Code
	}()
	if _, err := pw.Write([]byte("first bytes")); err != nil { // the handler is reading
		t.Fatal(err)
	}
	if got := gather(t, reg)["berth_http_uploads_in_flight"]; got != 1 {
		t.Errorf("while the body arrives: %v uploads in flight, want 1", got)
	}
	pw.Close()
	if code := <-done; code != 202 {
		t.Fatalf("PATCH: %d", code)
	}
	got := gather(t, reg)
	if got["berth_http_uploads_in_flight"] != 0 || got[`berth_http_received_bytes_total{kind="upload"}`] != 11 {
		t.Errorf("after the PATCH: %v in flight, %v bytes received; want 0 and 11",
			got["berth_http_uploads_in_flight"], got[`berth_http_received_bytes_total{kind="upload"}`])
	}
}

// gather returns every sample of reg as "name{label="value",...}" → value
// (histograms as their _count).
func gather(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			name := mf.GetName()
			var v float64
			switch mf.GetType() {
			case dto.MetricType_COUNTER:
				v = m.GetCounter().GetValue()
			case dto.MetricType_GAUGE:
				v = m.GetGauge().GetValue()
			case dto.MetricType_HISTOGRAM:
				name += "_count"
				v = float64(m.GetHistogram().GetSampleCount())
			}
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+`="`+l.GetValue()+`"`)
			}
			if len(labels) > 0 {
				name += "{" + strings.Join(labels, ",") + "}"
			}
			out[name] = v
		}
	}
	return out
}
