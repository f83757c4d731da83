package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/greybox-probe/greybox/remediate"
)

const planWedged = `probe_k8s_log_matched_lines{container="whisker-backend"} >= 10`

// planRemediatorConfig has three rules on one wedged pod: one held long
// enough whose dependency is Ready (acts), one whose `for` is far longer
// than Prometheus has data (waits), one whose dependency is not Ready
// (skips). No prometheus.url: --prometheus.url gives it.
const planRemediatorConfig = `evaluation_interval: 1s
rules:
  - name: whisker_now
    expr: '` + planWedged + `'
    for: 3s
    guards: ['probe_k8s_dependency_ready{dependency="goldmane"} == 1']
    action: delete_pod
    namespaces: [calico-system]
    selector: k8s-app=whisker
  - name: whisker_later
    expr: '` + planWedged + `'
    for: 1h
    action: delete_pod
    namespaces: [calico-system]
  - name: whisker_db
    expr: '` + planWedged + `'
    for: 0s
    guards: ['probe_k8s_dependency_ready{dependency="db"} == 1']
    action: delete_pod
    namespaces: [calico-system]
`

// TestRemediatorPlanRealPrometheus tries rules the way a user does before
// granting any RBAC: the built greybox-remediator, with no kubeconfig, no
// in-cluster environment and an empty HOME, against a real Prometheus
// scraping a greybox stand-in. `plan` prints what it would do and why;
// `--dry-run` serves the same decisions on its status page.
func TestRemediatorPlanRealPrometheus(t *testing.T) {
	promBin := prometheusBinary(t)
	start := time.Now()
	dir := t.TempDir()
	bin := filepath.Join(dir, "greybox-remediator")
	// Built before HOME changes: the go command keeps its caches there.
	if out, err := exec.Command(goTool(), "build", "-o", bin, "../cmd/greybox-remediator").CombinedOutput(); err != nil {
		t.Fatalf("building greybox-remediator: %v\n%s", err, out)
	}
	t.Logf("built greybox-remediator in %v", time.Since(start).Round(time.Millisecond))
	// Nothing to find Kubernetes with: no kubeconfig, no in-cluster
	// environment, no ~/.kube.
	t.Setenv("KUBECONFIG", "")
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	t.Setenv("KUBERNETES_SERVICE_PORT", "")
	t.Setenv("HOME", t.TempDir())

	probe := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/probe" || r.URL.Query().Get("module") != "whisker_wedged" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		fmt.Fprint(w, `# TYPE probe_success gauge
probe_success 0
# TYPE probe_k8s_log_matched_lines gauge
probe_k8s_log_matched_lines{container="whisker-backend",namespace="calico-system",pod="whisker-a"} 42
# TYPE probe_k8s_dependency_ready gauge
probe_k8s_dependency_ready{dependency="goldmane"} 1
probe_k8s_dependency_ready{dependency="db"} 0
`)
	}))
	t.Cleanup(probe.Close)
	pu, _ := url.Parse(probe.URL)
	promCfg := writeFile(t, dir, "prometheus.yml", fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: greybox_whisker_wedged
    metrics_path: /probe
    params:
      module: [whisker_wedged]
    honor_labels: true
    static_configs:
      - targets: [calico-system/k8s-app=whisker]
        labels: {module: whisker_wedged}
    relabel_configs:
      - source_labels: [__address__]
        target_label: __param_target
      - source_labels: [__param_target]
        target_label: instance
      - target_label: __address__
        replacement: %s
`, pu.Host))
	promAddr := startPrometheus(t, promBin, promCfg)
	promURL := "http://" + promAddr
	// Enough scrapes that the 3s rule has held for its whole `for`.
	poll(t, 60*time.Second, "five scrapes in Prometheus", func() (bool, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		q := url.Values{"query": {`count_over_time(probe_k8s_log_matched_lines{container="whisker-backend"}[1m]) >= 5`}}
		code, body, err := get(ctx, promURL+"/api/v1/query?"+q.Encode())
		if err != nil {
			return false, err.Error()
		}
		return code == http.StatusOK && strings.Contains(body, `"pod":"whisker-a"`), body
	})

	t.Logf("Prometheus has five scrapes after %v", time.Since(start).Round(time.Millisecond))
	cfg := writeFile(t, dir, "remediator.yml", planRemediatorConfig)
	common := []string{"--config.file=" + cfg, "--prometheus.url=" + promURL, "--greybox.url=http://greybox.example:9116"}
	plan := func(args ...string) (string, string) {
		t.Helper()
		var stdout, stderr bytes.Buffer
		cmd := exec.Command(bin, append(append([]string{"plan"}, common...), args...)...)
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("plan %v: %v\nstdout:\n%s\nstderr:\n%s", args, err, stdout.String(), stderr.String())
		}
		return stdout.String(), stderr.String()
	}

	out, errOut := plan()
	t.Logf("plan:\n%s", out)
	logs := "http://greybox.example:9116/logs?module=whisker_wedged&target=calico-system%2Fk8s-app%3Dwhisker"
	for _, want := range []string{
		"Prometheus:  " + promURL,
		"Kubernetes:  not configured: candidates are not resolved to pods",
		"State:       not read (no Kubernetes)",
		"rule whisker_now: delete_pod after 3s",
		`  guard:  probe_k8s_dependency_ready{dependency="goldmane"} == 1 → ok: 1 sample(s)`,
		"  calico-system/whisker-a (value 42): held for 3s (present at all 3 steps of 1s)",
		"    → WOULD ACT: would delete_pod calico-system/whisker-a (the live pod is not checked: no Kubernetes)",
		"    pod:  not resolved (no Kubernetes)",
		"    logs: " + logs,
		"  graph:  " + promURL + "/graph?g0.expr=probe_k8s_log_matched_lines%7Bcontainer%3D%22whisker-backend%22%7D+%3E%3D+10&g0.tab=1",
		"rule whisker_later: delete_pod after 1h",
		"    → wait, pending: acts once it has held for 1h",
		"rule whisker_db: delete_pod after 0s",
		`  guard:  probe_k8s_dependency_ready{dependency="db"} == 1 → failed: guard "probe_k8s_dependency_ready{dependency=\"db\"} == 1" returned no sample`,
		"    → skip, guard_failed (a guard (dependency ready?) returned no usable sample)",
		"3 rule(s): 1 would act, 1 skipped, 1 waiting",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("plan lacks %q", want)
		}
	}
	if !strings.Contains(out, "not held for 1h yet") {
		t.Errorf("the 1h rule does not say how long it held")
	}
	if strings.Contains(out, "cooldown until") {
		t.Errorf("the plan shows a cooldown its own simulated action started")
	}
	if strings.TrimSpace(errOut) != "" {
		t.Errorf("plan wrote to stderr: %s", errOut)
	}

	js, _ := plan("--output=json")
	var p remediate.Plan
	if err := json.Unmarshal([]byte(js), &p); err != nil {
		t.Fatalf("json plan: %v\n%s", err, js)
	}
	decisions := map[string]string{}
	for _, r := range p.Rules {
		for _, c := range r.Candidates {
			decisions[r.Name] = c.Decision + " " + c.Reason
			if c.LogsURL != logs {
				t.Errorf("%s: logs URL %q", r.Name, c.LogsURL)
			}
		}
	}
	if want := map[string]string{"whisker_now": "act ", "whisker_later": "wait ", "whisker_db": "skip guard_failed"}; fmt.Sprint(decisions) != fmt.Sprint(want) {
		t.Errorf("json decisions %v, want %v", decisions, want)
	}

	t.Logf("plans printed after %v", time.Since(start).Round(time.Millisecond))

	// --dry-run: the long-running remediator, still without Kubernetes.
	rem, remAddr := startServer(t, "greybox-remediator", bin, "/-/ready", func(addr string) []string {
		return append([]string{"--dry-run", "--web.listen-address=" + addr}, common...)
	})
	base := "http://" + remAddr
	var page string
	poll(t, 60*time.Second, "the dry run acts and skips", func() (bool, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, body, err := get(ctx, base+"/")
		if err != nil {
			return false, err.Error()
		}
		page = body
		return strings.Contains(body, "<td>dry_run</td>") && strings.Contains(body, "guard_failed: "), body
	})
	for _, want := range []string{
		"Prometheus <code>" + promURL + "</code>: ok, last query",
		"Kubernetes: not configured — plan mode",
		"Leader: not electing — not needed in plan mode without Kubernetes",
		"<b>dry run</b>",
		"the live pod is not checked: no Kubernetes",
		`<a href="` + strings.ReplaceAll(logs, "&", "&amp;") + `">probe logs</a>`,
		`<a href="` + promURL + `/graph?g0.expr=`,
		`<section id="recent-skips">`,
	} {
		if !strings.Contains(page, want) {
			t.Errorf("status page lacks %q", want)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, metrics, err := get(ctx, base+"/metrics"); err != nil || !strings.Contains(metrics, `greybox_remediator_actions_total{action="delete_pod",result="dry_run",rule="whisker_now"}`) ||
		strings.Contains(metrics, "greybox_remediation_") {
		t.Errorf("metrics (%v):\n%s", err, metrics)
	}
	rem.signal(t, syscall.SIGTERM)
	if code := rem.wait(t, 30*time.Second); code != 0 {
		t.Errorf("exit %d", code)
	}
	log, _ := os.ReadFile(rem.log)
	if n := strings.Count(string(log), "plan mode runs without Kubernetes"); n != 1 {
		t.Errorf("%d log lines say plan mode runs without Kubernetes, want 1:\n%s", n, log)
	}
}
