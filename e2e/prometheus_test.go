package e2e

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/prometheus/client_golang/api"
	v1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"
)

const probeConfig = `modules:
  http_2xx:
    prober: http
    timeout: 5s
    http:
      valid_status_codes: []
`

// TestPrometheusScrapesGreybox runs the whole user path: a real Prometheus
// with a multi-target job written the way the README tells users to write
// it, scraping a greybox binary that probes a healthy and a failing target,
// and the results read back through the Prometheus query API.
func TestPrometheusScrapesGreybox(t *testing.T) {
	promBin, err := exec.LookPath("prometheus")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("prometheus is not on PATH; .ci/run installs it (Debian package prometheus)")
		}
		t.Skip("prometheus is not on PATH (apt-get install prometheus, or run .ci/run)")
	}

	healthy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	}))
	t.Cleanup(healthy.Close)
	failing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "broken", http.StatusInternalServerError)
	}))
	t.Cleanup(failing.Close)

	dir := t.TempDir()
	_, gbAddr := startGreybox(t, writeFile(t, dir, "greybox.yml", probeConfig))

	const probeJob, selfJob = "greybox_http_2xx", "greybox"
	promCfg := fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: %[1]s
    metrics_path: /probe
    params:
      module: [http_2xx]
    static_configs:
      - targets:
          - %[3]s
          - %[4]s
    relabel_configs:
      - source_labels: [__address__]
        target_label: __param_target
      - source_labels: [__param_target]
        target_label: instance
      - target_label: __address__
        replacement: %[5]s
  - job_name: %[2]s
    static_configs:
      - targets: ['%[5]s']
`, probeJob, selfJob, healthy.URL, failing.URL, gbAddr)

	promCfgPath := writeFile(t, dir, "prometheus.yml", promCfg)
	promAddr := startPrometheus(t, promBin, promCfgPath)

	tr := &http.Transport{DisableKeepAlives: true}
	t.Cleanup(tr.CloseIdleConnections)
	client, err := api.NewClient(api.Config{Address: "http://" + promAddr, RoundTripper: tr})
	if err != nil {
		t.Fatal(err)
	}
	promAPI := v1.NewAPI(client)
	query := func(q string) (model.Vector, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		v, _, _, err := promAPI.Query(ctx, q, time.Now())
		if err != nil {
			return nil, err
		}
		vec, ok := v.(model.Vector)
		if !ok {
			return nil, fmt.Errorf("%s: got %s, want a vector", q, v.Type())
		}
		return vec, nil
	}
	// byInstance polls q until it has a sample for every instance in want.
	byInstance := func(q string, want ...string) map[string]float64 {
		t.Helper()
		got := map[string]float64{}
		poll(t, 60*time.Second, q, func() (bool, string) {
			vec, err := query(q)
			if err != nil {
				return false, err.Error()
			}
			clear(got)
			for _, s := range vec {
				got[string(s.Metric["instance"])] = float64(s.Value)
			}
			for _, w := range want {
				if _, ok := got[w]; !ok {
					return false, fmt.Sprintf("have %v", vec)
				}
			}
			return true, ""
		})
		return got
	}

	success := byInstance(fmt.Sprintf(`probe_success{job=%q}`, probeJob), healthy.URL, failing.URL)
	if success[healthy.URL] != 1 {
		t.Errorf("probe_success{instance=%q} = %v, want 1", healthy.URL, success[healthy.URL])
	}
	if success[failing.URL] != 0 {
		t.Errorf("probe_success{instance=%q} = %v, want 0", failing.URL, success[failing.URL])
	}

	codes := byInstance(fmt.Sprintf(`probe_http_status_code{job=%q}`, probeJob), healthy.URL, failing.URL)
	if codes[failing.URL] != 500 {
		t.Errorf("probe_http_status_code{instance=%q} = %v, want 500", failing.URL, codes[failing.URL])
	}
	if codes[healthy.URL] != 200 {
		t.Errorf("probe_http_status_code{instance=%q} = %v, want 200", healthy.URL, codes[healthy.URL])
	}

	// Prometheus' own view: the scrape of /probe worked for both targets,
	// including the one whose probe failed (a failed probe is not a failed scrape).
	up := byInstance(fmt.Sprintf(`up{job=%q}`, probeJob), healthy.URL, failing.URL)
	for inst, v := range up {
		if v != 1 {
			t.Errorf("up{job=%q,instance=%q} = %v, want 1", probeJob, inst, v)
		}
	}

	// greybox's own metrics, scraped by Prometheus like any exporter.
	q := fmt.Sprintf(`greybox_probe_requests_total{job=%q,module="http_2xx",result="success"}`, selfJob)
	poll(t, 60*time.Second, q, func() (bool, string) {
		vec, err := query(q)
		if err != nil {
			return false, err.Error()
		}
		if len(vec) != 1 {
			return false, fmt.Sprintf("have %v", vec)
		}
		return vec[0].Value > 0, fmt.Sprintf("have %v", vec)
	})
	selfUp := byInstance(fmt.Sprintf(`up{job=%q}`, selfJob), gbAddr)
	if selfUp[gbAddr] != 1 {
		t.Errorf("up{job=%q} = %v, want 1", selfJob, selfUp[gbAddr])
	}
}
