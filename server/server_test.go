package server

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/greybox-probe/greybox/config"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const goodConfig = `
modules:
  http_2xx:
    prober: http
    http:
      http_client_config:
        basic_auth: {username: probe, password: hunter2}
  bearer:
    prober: http
    http:
      http_client_config:
        authorization: {credentials: bearer-xyz}
`

func newTestServer(t *testing.T) (*Server, string) {
	t.Helper()
	return newTestServerWith(t, Options{})
}

// newTestServerWith is newTestServer with o's web options (external URL,
// route prefix) on top of the test config.
func newTestServerWith(t *testing.T, o Options) (*Server, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "greybox.yml")
	if err := os.WriteFile(path, []byte(goodConfig), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	o.ConfigFile, o.Config, o.Logger, o.Registry, o.HistorySize = path, cfg, slog.New(slog.DiscardHandler), prometheus.NewRegistry(), 10
	return New(o), path
}

func do(s http.Handler, method, url string) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, httptest.NewRequest(method, url, nil))
	return rec
}

func TestReloadGoodAndBad(t *testing.T) {
	s, path := newTestServer(t)
	if rec := do(s, http.MethodGet, "/-/reload"); rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("GET /-/reload = %d, want 405", rec.Code)
	}

	// A bad file: the reload fails, says why with file and line, and the
	// running config keeps serving.
	bad := goodConfig + "  broken:\n    prober: http\n    http: {methd: GET}\n"
	if err := os.WriteFile(path, []byte(bad), 0o600); err != nil {
		t.Fatal(err)
	}
	rec := do(s, http.MethodPost, "/-/reload")
	if rec.Code != http.StatusInternalServerError || !strings.Contains(rec.Body.String(), path+":15") || !strings.Contains(rec.Body.String(), `unknown key "methd"`) {
		t.Fatalf("bad reload answered %d %q", rec.Code, rec.Body)
	}
	if got := testutil.ToFloat64(s.reloads.ok); got != 0 {
		t.Errorf("greybox_config_last_reload_successful = %v after a bad reload", got)
	}
	if _, ok := s.Config().Modules["http_2xx"]; !ok || len(s.Config().Modules) != 2 {
		t.Errorf("running config changed after a failed reload: %v", s.Config().Modules)
	}

	// A good file: swapped in, gauge back to 1.
	good := goodConfig + "  second:\n    prober: http\n"
	if err := os.WriteFile(path, []byte(good), 0o600); err != nil {
		t.Fatal(err)
	}
	if rec := do(s, http.MethodPost, "/-/reload"); rec.Code != 200 {
		t.Fatalf("good reload answered %d %q", rec.Code, rec.Body)
	}
	if got := testutil.ToFloat64(s.reloads.ok); got != 1 {
		t.Errorf("greybox_config_last_reload_successful = %v after a good reload", got)
	}
	if _, ok := s.Config().Modules["second"]; !ok {
		t.Error("reloaded module missing")
	}
}

func TestConfigEndpointRedactsSecrets(t *testing.T) {
	s, _ := newTestServer(t)
	body := do(s, http.MethodGet, "/config").Body.String()
	if strings.Contains(body, "hunter2") || strings.Contains(body, "bearer-xyz") {
		t.Fatalf("/config leaks a secret:\n%s", body)
	}
	if strings.Count(body, "<secret>") != 2 {
		t.Errorf("want both secrets shown as <secret>:\n%s", body)
	}
}

func TestLandingPageAndLogs(t *testing.T) {
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") }))
	defer target.Close()
	s, _ := newTestServer(t)

	if rec := do(s, http.MethodGet, "/"); !strings.Contains(rec.Body.String(), "No probes yet") || !strings.Contains(rec.Body.String(), "http_2xx") {
		t.Fatalf("landing page before probes:\n%s", rec.Body)
	}
	probeURL := "/probe?module=http_2xx&target=" + target.URL
	if rec := do(s, http.MethodGet, probeURL); !strings.Contains(rec.Body.String(), "probe_success 1") {
		t.Fatalf("probe: %s", rec.Body)
	}
	page := do(s, http.MethodGet, "/").Body.String()
	for _, want := range []string{"success", `href="/logs?id=0"`, "/logs?module=http_2xx&amp;target=http%3a%2f%2f127.0.0.1"} {
		if !strings.Contains(page, want) {
			t.Errorf("landing page lacks %q:\n%s", want, page)
		}
	}
	for _, url := range []string{"/logs?id=0", "/logs?module=http_2xx&target=" + target.URL} {
		rec := do(s, http.MethodGet, url)
		if rec.Code != 200 || !strings.Contains(rec.Body.String(), "making HTTP request") || strings.Contains(rec.Body.String(), "hunter2") {
			t.Errorf("%s: %d\n%s", url, rec.Code, rec.Body)
		}
	}
	for url, code := range map[string]int{"/logs?id=99": 404, "/logs?id=x": 400, "/logs": 400} {
		if rec := do(s, http.MethodGet, url); rec.Code != code {
			t.Errorf("%s = %d, want %d", url, rec.Code, code)
		}
	}
	if rec := do(s, http.MethodGet, "/nope"); rec.Code != 404 {
		t.Errorf("unknown path = %d", rec.Code)
	}
	metrics := do(s, http.MethodGet, "/metrics").Body.String()
	for _, want := range []string{`greybox_probe_requests_total{module="http_2xx",result="success"} 1`, "greybox_config_last_reload_successful 1", "greybox_probes_in_flight 0"} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	for _, p := range []string{"/-/healthy", "/-/ready"} {
		if rec := do(s, http.MethodGet, p); rec.Code != 200 {
			t.Errorf("%s = %d", p, rec.Code)
		}
	}
}
