package prober

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/greybox-probe/greybox/config"
)

// blockProbes lets a test hold probes of the test_block prober in flight.
var blockProbes = struct {
	sync.Mutex
	started chan struct{}
	release chan struct{}
}{}

func init() {
	// A prober that only exists in tests: it signals when it runs and
	// waits for the test (or its deadline).
	Register("test_block", Spec{
		Settings: func() config.Settings { return &testSettings{} },
		Probe: func(ctx context.Context, _ string, _ config.Module, _ *Metrics, logger *slog.Logger, _ Env) bool {
			blockProbes.Lock()
			started, release := blockProbes.started, blockProbes.release
			blockProbes.Unlock()
			logger.Info("test_block running")
			started <- struct{}{}
			select {
			case <-release:
				return true
			case <-ctx.Done():
				return false
			}
		},
		CheckTarget: func(context.Context, string, config.Module, *Guard) error { return nil },
	})
	Register("test_panic", Spec{
		Settings: func() config.Settings { return &testSettings{} },
		Probe: func(context.Context, string, config.Module, *Metrics, *slog.Logger, Env) bool {
			var m map[string]int
			m["boom"]++ // a nil-map write: a prober bug must not kill the server
			return true
		},
		CheckTarget: func(context.Context, string, config.Module, *Guard) error { return nil },
	})
}

type testSettings struct {
	Secret config.HTTPClientConfig `yaml:"http_client_config,omitempty"`
}

func (*testSettings) Validate() error { return nil }

func newTestHandler(t testing.TB, yml string, maxInFlight int) (*Handler, *prometheus.Registry, *History) {
	t.Helper()
	cfg, err := config.Parse([]byte(yml), "test.yml")
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	hist := NewHistory(10, 0)
	h := NewHandler(HandlerOptions{
		Config: func() *config.Config { return cfg }, History: hist, MaxInFlight: maxInFlight,
		TimeoutOffset: 500 * time.Millisecond, Registerer: reg,
	})
	return h, reg, hist
}

const handlerConfig = `
modules:
  http_2xx:
    prober: http
    timeout: 5s
    http:
      http_client_config:
        basic_auth: {username: probe, password: topsecret}
  local:
    prober: http
    allowed_targets: ["10.0.0.0/8", "*.example.com"]
  block:
    prober: test_block
    timeout: 5s
  panic:
    prober: test_panic
`

func get(h http.Handler, url string, header map[string]string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodGet, url, nil)
	for k, v := range header {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func TestHandlerRefusesBadRequests(t *testing.T) {
	h, reg, _ := newTestHandler(t, handlerConfig, 10)
	for _, tc := range []struct {
		name, url string
		header    map[string]string
		code      int
		reason    string
		result    string
	}{
		{"no module", "/probe?target=http://127.0.0.1", nil, 400, "module parameter is missing", "bad_request"},
		{"unknown module", "/probe?module=nope&target=http://127.0.0.1", nil, 400, `unknown module "nope"`, "bad_request"},
		{"no target", "/probe?module=http_2xx", nil, 400, "target parameter is missing", "bad_request"},
		{"not a URL scheme", "/probe?module=http_2xx&target=ftp://127.0.0.1/", nil, 400, "must be an http:// or https:// URL", "bad_request"},
		{"no host", "/probe?module=http_2xx&target=http://", nil, 400, "has no host", "bad_request"},
		{"bad port", "/probe?module=http_2xx&target=http://127.0.0.1:99999/", nil, 400, "invalid port", "bad_request"},
		{"garbage URL", "/probe?module=http_2xx&target=%25zz", nil, 400, "", "bad_request"},
		{"bad scrape timeout", "/probe?module=http_2xx&target=http://127.0.0.1/", map[string]string{"X-Prometheus-Scrape-Timeout-Seconds": "soon"}, 400, "invalid X-Prometheus-Scrape-Timeout-Seconds", "bad_request"},
		{"forbidden address", "/probe?module=local&target=http://127.0.0.1:1/", nil, 403, "127.0.0.1 is not in allowed_targets", "forbidden"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := get(h, tc.url, tc.header)
			if rec.Code != tc.code {
				t.Fatalf("code = %d, want %d; body %q", rec.Code, tc.code, rec.Body.String())
			}
			body := strings.TrimSpace(rec.Body.String())
			if !strings.Contains(body, tc.reason) || strings.Contains(body, "\n") {
				t.Errorf("body %q: want one line containing %q", body, tc.reason)
			}
		})
	}
	if got := testutil.ToFloat64(h.requests.WithLabelValues("local", "forbidden")); got != 1 {
		t.Errorf("forbidden counter = %v, want 1", got)
	}
	if got := testutil.ToFloat64(h.requests.WithLabelValues("http_2xx", "bad_request")); got != 6 {
		t.Errorf("bad_request counter for http_2xx = %v, want 6", got)
	}
	_ = reg
}

func TestHandlerProbeAnswersAndTimeout(t *testing.T) {
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "ok") }))
	defer target.Close()
	h, _, hist := newTestHandler(t, handlerConfig, 10)

	rec := get(h, "/probe?module=http_2xx&target="+target.URL, map[string]string{"X-Prometheus-Scrape-Timeout-Seconds": "3"})
	if rec.Code != 200 {
		t.Fatalf("code %d: %s", rec.Code, rec.Body)
	}
	body := rec.Body.String()
	for _, want := range []string{"probe_success 1", "probe_timeout_seconds 2.5", "probe_duration_seconds", "probe_http_status_code 200"} {
		if !strings.Contains(body, want) {
			t.Errorf("answer lacks %q:\n%s", want, body)
		}
	}
	// The module timeout caps a longer scrape timeout.
	rec = get(h, "/probe?module=http_2xx&target="+target.URL, map[string]string{"X-Prometheus-Scrape-Timeout-Seconds": "60"})
	if !strings.Contains(rec.Body.String(), "probe_timeout_seconds 5\n") {
		t.Errorf("module timeout did not cap the scrape timeout:\n%s", rec.Body)
	}
	if n := len(hist.List()); n != 2 {
		t.Errorf("history has %d entries, want 2", n)
	}
}

func TestHandlerDebugOutputRedactsSecrets(t *testing.T) {
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "ok") }))
	defer target.Close()
	h, _, hist := newTestHandler(t, handlerConfig, 10)
	rec := get(h, "/probe?debug=true&module=http_2xx&target="+target.URL, nil)
	body := rec.Body.String()
	for _, want := range []string{"Logs for the probe:", "making HTTP request", "Metrics that would have been returned:", "probe_success 1", "Module configuration:", "password: <secret>"} {
		if !strings.Contains(body, want) {
			t.Errorf("debug output lacks %q:\n%s", want, body)
		}
	}
	if strings.Contains(body, "topsecret") {
		t.Fatalf("secret in debug output:\n%s", body)
	}
	e, ok := hist.Newest("http_2xx", target.URL)
	if !ok || strings.Contains(e.Debug(), "topsecret") || !strings.Contains(e.Debug(), "probe_success 1") {
		t.Errorf("history entry wrong or leaks the secret: %+v", e)
	}
}

func TestHandlerOverloadAnswers503AtOnce(t *testing.T) {
	blockProbes.Lock()
	blockProbes.started, blockProbes.release = make(chan struct{}), make(chan struct{})
	started, release := blockProbes.started, blockProbes.release
	blockProbes.Unlock()

	h, _, _ := newTestHandler(t, handlerConfig, 1)
	done := make(chan *httptest.ResponseRecorder)
	go func() { done <- get(h, "/probe?module=block&target=x", nil) }()
	<-started // the only slot is now taken

	rec := get(h, "/probe?module=block&target=y", nil)
	if rec.Code != http.StatusServiceUnavailable || !strings.Contains(rec.Body.String(), "too many probes in flight (limit 1)") {
		t.Fatalf("second probe: %d %q", rec.Code, rec.Body)
	}
	close(release)
	if first := <-done; first.Code != 200 || !strings.Contains(first.Body.String(), "probe_success 1") {
		t.Fatalf("first probe: %d %s", first.Code, first.Body)
	}
	if got := testutil.ToFloat64(h.requests.WithLabelValues("block", "overloaded")); got != 1 {
		t.Errorf("overloaded counter = %v", got)
	}
	if got := testutil.ToFloat64(h.inFlight); got != 0 {
		t.Errorf("in-flight gauge = %v after all probes ended", got)
	}
}

func TestHandlerProberPanicIsAFailedProbe(t *testing.T) {
	h, _, _ := newTestHandler(t, handlerConfig, 10)
	rec := get(h, "/probe?module=panic&target=x&debug=true", nil)
	if rec.Code != 200 || !strings.Contains(rec.Body.String(), "probe_success 0") || !strings.Contains(rec.Body.String(), "prober panicked") {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
}

// A burst of concurrent probes, some against a stalled target, leaves no
// goroutine behind (TestMain's goleak check fails the package otherwise).
func TestHandlerBurstLeavesNoGoroutines(t *testing.T) {
	release := make(chan struct{})
	stalled := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	ok := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	defer ok.Close()
	defer stalled.Close()
	defer close(release)

	h, _, _ := newTestHandler(t, handlerConfig, 100)
	var wg sync.WaitGroup
	for i := range 40 {
		url := ok.URL
		if i%4 == 0 {
			url = stalled.URL
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			get(h, "/probe?module=http_2xx&target="+url, map[string]string{"X-Prometheus-Scrape-Timeout-Seconds": "0.8"})
		}()
	}
	wg.Wait()
	if got := testutil.ToFloat64(h.requests.WithLabelValues("http_2xx", "failure")); got != 10 {
		t.Errorf("failures = %v, want 10 (the stalled ones)", got)
	}
}

func TestHistoryKeepsFailuresLonger(t *testing.T) {
	hist := NewHistory(3, 0)
	hist.Add(&Entry{Module: "m", Target: "bad", Success: false})
	for range 10 {
		hist.Add(&Entry{Module: "m", Target: "good", Success: true})
	}
	if _, ok := hist.Get(0); !ok {
		t.Fatal("the failure was pushed out by successes")
	}
	if n := len(hist.List()); n != 4 {
		t.Errorf("kept %d entries, want 3 recent + 1 failure", n)
	}
	if e, ok := hist.Newest("m", "good"); !ok || e.ID != 10 {
		t.Errorf("newest good = %+v", e)
	}
	if _, ok := hist.Get(1); ok {
		t.Error("an old success was kept past the limit")
	}
}
