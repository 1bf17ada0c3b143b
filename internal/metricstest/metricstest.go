// Package metricstest scrapes a Prometheus endpoint over HTTP for tests and
// answers questions about the samples, the way a Prometheus query would.
package metricstest

import (
	"net/http"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Sample is one series' value; a histogram gives <name>_count and
// <name>_sum.
type Sample struct {
	Name   string
	Labels map[string]string
	Value  float64
}

// Samples is one scrape.
type Samples []Sample

// Scrape GETs url with client (nil: http.DefaultClient) and parses the
// text exposition. Any failure fails the test.
func Scrape(t testing.TB, client *http.Client, url string) Samples {
	t.Helper()
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Get(url)
	if err != nil {
		t.Fatalf("scraping %s: %v", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("scraping %s: %s", url, resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parsing the metrics of %s: %v", url, err)
	}
	var out Samples
	for name, mf := range mfs {
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			switch mf.GetType() {
			case dto.MetricType_COUNTER:
				out = append(out, Sample{name, labels, m.GetCounter().GetValue()})
			case dto.MetricType_GAUGE:
				out = append(out, Sample{name, labels, m.GetGauge().GetValue()})
			case dto.MetricType_HISTOGRAM:
				h := m.GetHistogram()
				out = append(out, Sample{name + "_count", labels, float64(h.GetSampleCount())},
					Sample{name + "_sum", labels, h.GetSampleSum()})
			default:
				out = append(out, Sample{name, labels, m.GetUntyped().GetValue()})
			}
		}
	}
	return out
}

// Sum adds the values of the series called name whose labels include the
// given ones (pairs: name, value, …); 0 when there is none.
func (s Samples) Sum(name string, labels ...string) float64 {
	var sum float64
	for _, x := range s.match(name, labels) {
		sum += x.Value
	}
	return sum
}

// Count is how many series called name have the given labels.
func (s Samples) Count(name string, labels ...string) int { return len(s.match(name, labels)) }

func (s Samples) match(name string, labels []string) Samples {
	var out Samples
next:
	for _, x := range s {
		if x.Name != name {
			continue
		}
		for i := 0; i+1 < len(labels); i += 2 {
			if x.Labels[labels[i]] != labels[i+1] {
				continue next
			}
		}
		out = append(out, x)
	}
	return out
}
