package remediate

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"
	"k8s.io/client-go/kubernetes/fake"
	testingclock "k8s.io/utils/clock/testing"

	"github.com/greybox-probe/greybox/internal/syncbuf"
)

const prometheusBinary = "/usr/bin/prometheus"

// syncBuffer collects Prometheus's log for failure messages.
type syncBuffer = syncbuf.Buffer

// startPrometheus runs the real Prometheus on loopback, scraping target
// every second the way a greybox probe job does, and returns its URL.
func startPrometheus(t *testing.T, target string) string {
	t.Helper()
	if _, err := os.Stat(prometheusBinary); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s is required in CI: %v", prometheusBinary, err)
		}
		t.Skipf("%s not installed (Debian package prometheus): %v", prometheusBinary, err)
	}
	dir := t.TempDir()
	cfg := fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: greybox_whisker
    metrics_path: /probe
    params:
      module: [whisker_wedged]
      target: [calico-system/k8s-app=whisker]
    # The probe's own namespace/pod labels name the pod to act on; keep them
    # even if service discovery adds namespace/pod target labels.
    honor_labels: true
    static_configs:
      - targets: [%q]
`, target)
	cfgPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	// Pick a free loopback port. Another process could take it before
	// Prometheus binds; the readiness wait below then fails with its log.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()

	logs := &syncBuffer{}
	cmd := exec.Command(prometheusBinary,
		"--config.file="+cfgPath,
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr,
		"--log.level=warn",
	)
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	u := "http://" + addr
	waitFor(t, 30*time.Second, "Prometheus ready", exited, logs, func() bool {
		resp, err := http.Get(u + "/-/ready")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return u
}

// waitFor polls cond until it holds, Prometheus exits or the deadline passes.
func waitFor(t *testing.T, timeout time.Duration, what string, exited <-chan error, logs *syncBuffer, cond func() bool) {
	t.Helper()
	deadline := time.After(timeout)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case err := <-exited:
			t.Fatalf("prometheus exited while waiting for %s: %v\n%s", what, err, logs.String())
		case <-deadline:
			t.Fatalf("timed out waiting for %s\n%s", what, logs.String())
		case <-tick.C:
		}
	}
}

// TestEndToEndRealPrometheus runs the whisker rule against a real Prometheus
// scraping a greybox stand-in that serves canned k8s_log_errors metrics.
func TestEndToEndRealPrometheus(t *testing.T) {
	var goldmaneReady atomic.Int64
	probe := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/probe" || r.URL.Query().Get("module") != "whisker_wedged" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		fmt.Fprintf(w, `# TYPE probe_success gauge
probe_success 0
# TYPE probe_k8s_log_matched_lines gauge
probe_k8s_log_matched_lines{container="whisker-backend",namespace="calico-system",pod="whisker-a"} 42
probe_k8s_log_matched_lines{container="whisker",namespace="calico-system",pod="whisker-a"} 0
# TYPE probe_k8s_dependency_ready gauge
probe_k8s_dependency_ready{dependency="goldmane"} %d
`, goldmaneReady.Load())
	}))
	defer probe.Close()
	pu, _ := url.Parse(probe.URL)
	promURL := startPrometheus(t, pu.Host)

	src, err := NewPrometheusSource(PrometheusConfig{URL: promURL, Timeout: model.Duration(5 * time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	// until polls a query until it has (or lacks) samples.
	until := func(expr string, want bool) {
		t.Helper()
		waitFor(t, 30*time.Second, fmt.Sprintf("%s present=%v", expr, want), nil, &syncBuffer{}, func() bool {
			vec, _, err := src.Query(ctx, expr)
			return err == nil && (len(vec) > 0) == want
		})
	}

	run := func(wantDeletes int, wantResult string) {
		t.Helper()
		cs := fake.NewClientset(whiskerPod("whisker-a", t0.Add(-time.Hour)))
		cs.ClearActions()
		h := &harness{t: t, cs: cs, clock: testingclock.NewFakeClock(t0), store: &ConfigMapStore{Client: cs, Namespace: "greybox", Name: "state"}}
		cfg := testConfig(t, promURL, "")
		cfg.Rules[0].For = model.Duration(2 * time.Second)
		e, err := NewEngine(Options{Config: cfg, Source: src, Kube: cs, Store: h.store, Clock: h.clock,
			Metrics: NewMetrics(prometheus.NewRegistry()), Leader: true})
		if err != nil {
			t.Fatal(err)
		}
		h.engine = e
		h.at(0)
		if len(h.writes()) != 0 {
			t.Fatal("acted before `for`")
		}
		for _, d := range []time.Duration{2 * time.Second, 3 * time.Second, 4 * time.Second, time.Minute} {
			h.at(d)
		}
		if n := len(h.deletes()); n != wantDeletes {
			t.Fatalf("deletes = %d, want %d; writes: %s", n, wantDeletes, joined(h.writes()))
		}
		if got := h.result("whisker", ActionDeletePod, wantResult); got < 1 {
			t.Errorf("%s not counted", wantResult)
		}
	}

	// Goldmane not Ready: the guard holds the rule back.
	until(`probe_k8s_log_matched_lines{container="whisker-backend"}`, true)
	until(goldmaneGuard, false)
	run(0, "skipped_"+SkipGuardFailed)

	// Goldmane Ready: exactly one restart.
	goldmaneReady.Store(1)
	until(goldmaneGuard, true)
	run(1, ResultSuccess)
}
