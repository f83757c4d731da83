package prober

import (
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/greybox-probe/greybox/config"
	"github.com/greybox-probe/greybox/internal/syncbuf"
)

// newLoggingHandler is a handler whose process log is at level and
// captured.
func newLoggingHandler(t *testing.T, level, prober slog.Level) (*Handler, *History, *syncbuf.Buffer) {
	t.Helper()
	cfg, err := config.Parse([]byte(handlerConfig), "test.yml")
	if err != nil {
		t.Fatal(err)
	}
	var out syncbuf.Buffer
	hist := NewHistory(10, 0)
	h := NewHandler(HandlerOptions{
		Config: func() *config.Config { return cfg }, History: hist, Registerer: prometheus.NewRegistry(),
		Logger:    slog.New(slog.NewTextHandler(&out, &slog.HandlerOptions{Level: level})),
		LogProber: prober,
	})
	return h, hist, &out
}

// At the default --log.level=info a healthy probe writes nothing to the
// process log; a failed one writes one line at --log.prober's level with
// its reason; debug shows every line of every probe; none is silent.
func TestProcessLogIsQuietForHealthyProbes(t *testing.T) {
	ok := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "ok") }))
	defer ok.Close()
	bad := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(503) }))
	defer bad.Close()

	h, hist, out := newLoggingHandler(t, slog.LevelInfo, slog.LevelWarn)
	for range 3 {
		if rec := get(h, "/probe?module=http_2xx&target="+ok.URL, nil); !strings.Contains(rec.Body.String(), "probe_success 1") {
			t.Fatalf("healthy probe failed:\n%s", rec.Body)
		}
	}
	if out.String() != "" {
		t.Errorf("healthy probes at info wrote to the process log:\n%s", out)
	}
	e, _ := hist.Newest("http_2xx", ok.URL)
	if !strings.Contains(e.LogText(), "making HTTP request") {
		t.Errorf("history lost the probe's own log:\n%s", e.LogText())
	}

	get(h, "/probe?module=http_2xx&target="+bad.URL, nil)
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 1 || !strings.Contains(lines[0], "level=WARN") || !strings.Contains(lines[0], `msg="probe failed"`) ||
		!strings.Contains(lines[0], `reason="invalid HTTP status code: status_code=503`) {
		t.Errorf("a failed probe should write one WARN line with its reason; got:\n%s", out)
	}
	e, _ = hist.Newest("http_2xx", bad.URL)
	if !strings.HasPrefix(e.Reason, "invalid HTTP status code: status_code=503") || strings.Contains(e.Reason, "\n") {
		t.Errorf("history reason %q", e.Reason)
	}

	h, _, out = newLoggingHandler(t, slog.LevelInfo, LogNone)
	get(h, "/probe?module=http_2xx&target="+bad.URL, nil)
	if out.String() != "" {
		t.Errorf("--log.prober=none wrote:\n%s", out)
	}

	h, _, out = newLoggingHandler(t, slog.LevelDebug, slog.LevelWarn)
	get(h, "/probe?module=http_2xx&target="+ok.URL, nil)
	if s := out.String(); !strings.Contains(s, "making HTTP request") || strings.Contains(s, "level=INFO") {
		t.Errorf("at debug a probe's lines should all be there, at debug level:\n%s", s)
	}
}

// A prober panic is a bug: it reaches the process log at error whatever
// --log.prober says.
func TestProberPanicIsLoggedAsAnError(t *testing.T) {
	h, hist, out := newLoggingHandler(t, slog.LevelInfo, LogNone)
	get(h, "/probe?module=panic&target=x", nil)
	if s := out.String(); !strings.Contains(s, "level=ERROR") || !strings.Contains(s, "panicked") {
		t.Errorf("process log:\n%s", s)
	}
	if e, ok := hist.Newest("panic", "x"); !ok || !strings.Contains(e.Reason, "prober panicked") {
		t.Errorf("history: %+v", e)
	}
}

// Refused requests are in history with their status and reason, so the
// landing page shows why a target's up is 0.
func TestRefusedRequestsAreInHistory(t *testing.T) {
	h, hist, _ := newLoggingHandler(t, slog.LevelInfo, slog.LevelWarn)
	get(h, "/probe?module=local&target=http://127.0.0.1:1/", nil)
	get(h, "/probe?module=http_2xx&target=ftp://127.0.0.1/", nil)
	get(h, "/probe?module=http_2xx&target=http://u:hunter2@127.0.0.1:1/&debug=true", map[string]string{"X-Prometheus-Scrape-Timeout-Seconds": "soon"})
	for _, tc := range []struct {
		module, target string
		status         int
		reason         string
	}{
		{"local", "http://127.0.0.1:1/", 403, "not in allowed_targets"},
		{"http_2xx", "ftp://127.0.0.1/", 400, "must be an http:// or https:// URL"},
		{"http_2xx", "http://xxxxx@127.0.0.1:1/", 400, "invalid X-Prometheus-Scrape-Timeout-Seconds"},
	} {
		e, ok := hist.Newest(tc.module, tc.target)
		if !ok || e.Status != tc.status || e.Success || !strings.Contains(e.Reason, tc.reason) {
			t.Errorf("%s %s: %+v", tc.module, tc.target, e)
		}
	}
	for _, e := range hist.List() {
		if strings.Contains(e.Target+e.Reason+e.LogText(), "hunter2") {
			t.Errorf("secret in history: %+v", e)
		}
	}
}

// A target without a scheme is http://, as in blackbox_exporter.
func TestSchemelessTargetIsHTTP(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "ok") }))
	defer srv.Close()
	h, _, _ := newLoggingHandler(t, slog.LevelInfo, slog.LevelWarn)
	rec := get(h, "/probe?module=http_2xx&target="+strings.TrimPrefix(srv.URL, "http://")+"/x", nil)
	if !strings.Contains(rec.Body.String(), "probe_success 1") {
		t.Errorf("scheme-less target: %d\n%s", rec.Code, rec.Body)
	}
	for in, want := range map[string]string{"h:1": "http://h:1", "https://h": "https://h", "ftp://h": "ftp://h", "h/a?b=c://": "http://h/a?b=c://"} {
		if got := WithScheme(in); got != want {
			t.Errorf("WithScheme(%q) = %q, want %q", in, got, want)
		}
	}
	if u, err := ttydBaseURL("127.0.0.1:7681/base/"); err != nil || u.String() != "http://127.0.0.1:7681/base" {
		t.Errorf("ttyd base: %v %v", u, err)
	}
}
