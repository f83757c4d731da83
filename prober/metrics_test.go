package prober

import (
	"bytes"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
)

// fillMetrics registers what probers register, with the values that are
// hard to write: escapes in help and label values, non-UTF-8, NaN and the
// infinities, integers and fractions, labels declared out of name order.
func fillMetrics(reg prometheus.Registerer) {
	gauge(reg, "probe_success", "Whether the probe succeeded (1) or failed (0).").Set(1)
	gauge(reg, "probe_duration_seconds", `How long, with "quotes", a \ backslash`+"\nand a newline.").Set(0.000123456789)
	gauge(reg, "probe_big", "Large and small.").Set(1e21)
	gauge(reg, "probe_neg", "Negative.").Set(-3)
	gauge(reg, "probe_nan", "NaN.").Set(math.NaN())
	gauge(reg, "probe_inf", "Inf.").Set(math.Inf(1))
	gauge(reg, "probe_ninf", "-Inf.").Set(math.Inf(-1))
	gauge(reg, "probe_zero", "Never set.")
	gauge(reg, "probe_negzero", "Negative zero.").Set(math.Copysign(0, -1))
	gauge(reg, "probe_million", "Where g turns to exponents.").Set(1e6)
	gauge(reg, "probe_below_million", "Just below.").Set(999999)
	gauge(reg, "probe_neg_below_million", "Just above minus a million.").Set(-999999)
	gauge(reg, "probe_big_int", "A large whole number.").Set(1234567890123)
	v := gaugeVec(reg, "probe_http_duration_seconds", "Phases.", "phase")
	for _, p := range []string{"tls", "connect", "resolve", "processing", "transfer"} {
		v.WithLabelValues(p).Set(0.25)
	}
	info := gaugeVec(reg, "probe_ssl_last_chain_info", "Leaf.", "subject", "fingerprint_sha256", "issuer")
	info.WithLabelValues(`CN="a\b"`+"\nx", "ab", "Z").Set(1)
	info.WithLabelValues("CN=a", "aa", "\xff\xfeok").Set(1)
	info.With(prometheus.Labels{"subject": "CN=a", "fingerprint_sha256": "aa", "issuer": "A"}).Set(2)
	gaugeVec(reg, "probe_empty_vec", "No series: not written.", "x")
	reset := gaugeVec(reg, "probe_reset", "Reset drops series.", "x")
	reset.WithLabelValues("gone").Set(1)
	reset.Reset()
	add := newGauge("probe_added", "Add, Inc, Dec.")
	reg.MustRegister(add)
	add.Add(2.5)
	add.Inc()
	add.Dec()
	add.Sub(0.5)
}

func expfmtText(t *testing.T, g prometheus.Gatherer, openMetrics bool) string {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	for _, mf := range mfs {
		if openMetrics {
			_, err = expfmt.MetricFamilyToOpenMetrics(&b, mf)
		} else {
			_, err = expfmt.MetricFamilyToText(&b, mf)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	return b.String()
}

// The direct writer must be byte for byte what expfmt writes, for the
// same metrics registered on a real registry.
func TestMetricsWriteTextMatchesExpfmt(t *testing.T) {
	real := prometheus.NewRegistry()
	fillMetrics(real)
	m := NewMetrics()
	fillMetrics(m)
	for _, om := range []bool{false, true} {
		got, err := m.writeText(nil, om)
		if err != nil {
			t.Fatal(err)
		}
		if want := expfmtText(t, real, om); string(got) != want {
			t.Errorf("openMetrics=%v:\n got:\n%s\nwant:\n%s", om, got, want)
		}
		// Its own Gather, through expfmt, agrees too.
		if want := expfmtText(t, m, om); string(got) != want {
			t.Errorf("openMetrics=%v: Gather then expfmt differs:\n got:\n%s\nwant:\n%s", om, got, want)
		}
	}
	if !strings.Contains(expfmtText(t, m, false), "probe_added 2\n") {
		t.Errorf("Add/Inc/Dec/Sub: %s", expfmtText(t, m, false))
	}
}

// A collector that is not one of ours goes through a registry, and the
// answer then takes the general path, merged in name order.
func TestMetricsOtherCollectors(t *testing.T) {
	m := NewMetrics()
	gauge(m, "probe_z", "Last.").Set(1)
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "probe_m_total", Help: "A counter."})
	m.MustRegister(c)
	c.Add(3)
	gauge(m, "probe_a", "First.").Set(2)
	got, err := m.writeText(nil, false)
	if err != nil {
		t.Fatal(err)
	}
	want := "# HELP probe_a First.\n# TYPE probe_a gauge\nprobe_a 2\n" +
		"# HELP probe_m_total A counter.\n# TYPE probe_m_total counter\nprobe_m_total 3\n" +
		"# HELP probe_z Last.\n# TYPE probe_z gauge\nprobe_z 1\n"
	if string(got) != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
	if !m.Unregister(c) {
		t.Error("Unregister of the counter: false")
	}
	if got, _ := m.writeText(nil, false); strings.Contains(string(got), "probe_m_total") {
		t.Errorf("unregistered counter still written:\n%s", got)
	}
}

// Two registrations of one name are a prober's bug, as on a registry;
// so is a wrong number of label values.
func TestMetricsConflicts(t *testing.T) {
	mustPanic := func(name string, f func()) {
		t.Helper()
		defer func() {
			if recover() == nil {
				t.Errorf("%s: no panic", name)
			}
		}()
		f()
	}
	m := NewMetrics()
	gauge(m, "probe_x", "X.")
	mustPanic("same name twice", func() { gauge(m, "probe_x", "X again.") })
	mustPanic("same name as a vector", func() { gaugeVec(m, "probe_x", "X.", "l") })
	v := gaugeVec(m, "probe_v", "V.", "a", "b")
	mustPanic("too few label values", func() { v.WithLabelValues("1") })
	mustPanic("missing label name", func() { v.With(prometheus.Labels{"a": "1", "c": "2"}) })
	m.MustRegister(prometheus.NewCounter(prometheus.CounterOpts{Name: "probe_x", Help: "X."}))
	if _, err := m.Gather(); err == nil {
		t.Error("a gauge and a counter of one name: Gather gave no error")
	}
}

func BenchmarkMetricsWriteText(b *testing.B) {
	m := NewMetrics()
	fillMetrics(m)
	buf := make([]byte, 0, 4096)
	b.ReportAllocs()
	for b.Loop() {
		buf, _ = m.writeText(buf[:0], false)
	}
}

// Every format a scraper may negotiate answers the same families: the
// text and OpenMetrics answers written directly, protobuf through expfmt.
func TestHandlerAnswerFormats(t *testing.T) {
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") }))
	defer target.Close()
	h, _, _ := newTestHandler(t, "modules:\n  m: {prober: http, timeout: 5s}\n", 10)
	url := "/probe?module=m&target=" + target.URL
	families := func(t *testing.T, accept string) (string, map[string]*dto.MetricFamily) {
		t.Helper()
		rec := get(h, url, map[string]string{"Accept": accept})
		if rec.Code != 200 {
			t.Fatalf("%s: code %d: %s", accept, rec.Code, rec.Body)
		}
		ct := rec.Header().Get("Content-Type")
		dec := expfmt.NewDecoder(rec.Body, expfmt.Format(ct))
		got := map[string]*dto.MetricFamily{}
		for {
			var mf dto.MetricFamily
			if err := dec.Decode(&mf); err == io.EOF {
				break
			} else if err != nil {
				t.Fatalf("%s (%s): decode: %v", accept, ct, err)
			}
			got[mf.GetName()] = &mf
		}
		return ct, got
	}
	_, want := families(t, "")
	if v := want["probe_success"].GetMetric()[0].GetGauge().GetValue(); v != 1 {
		t.Fatalf("probe_success = %v", v)
	}
	for _, tc := range []struct{ accept, contentType string }{
		{"text/plain;version=0.0.4", "text/plain; version=0.0.4"},
		{"application/openmetrics-text;version=1.0.0", "application/openmetrics-text; version=1.0.0"},
		{"application/openmetrics-text;version=0.0.1", "application/openmetrics-text; version=0.0.1"},
		{"application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited", "application/vnd.google.protobuf"},
	} {
		for range 2 { // the second answer comes from the memoised negotiation
			ct, got := families(t, tc.accept)
			if !strings.HasPrefix(ct, tc.contentType) {
				t.Errorf("Accept %s: Content-Type %q, want %s…", tc.accept, ct, tc.contentType)
			}
			if len(got) != len(want) {
				t.Errorf("Accept %s: %d families, want %d", tc.accept, len(got), len(want))
			}
			for name, mf := range want {
				g, ok := got[name]
				if !ok || len(g.GetMetric()) != len(mf.GetMetric()) || g.GetHelp() != mf.GetHelp() {
					t.Errorf("Accept %s: family %s differs: %v", tc.accept, name, g)
				}
			}
		}
	}
	if rec := get(h, url, map[string]string{"Accept": "application/openmetrics-text;version=1.0.0"}); !strings.HasSuffix(rec.Body.String(), "# EOF\n") {
		t.Errorf("OpenMetrics answer does not end in # EOF: %q", rec.Body.String())
	}
}
