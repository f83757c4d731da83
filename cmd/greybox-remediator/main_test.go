package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/greybox-probe/greybox/internal/syncbuf"
	"github.com/greybox-probe/greybox/remediate"
)

const (
	wedgedExpr = `probe_k8s_log_matched_lines{container="whisker-backend"} >= 10`
	guardExpr  = `probe_k8s_dependency_ready{dependency="goldmane"} == 1`
	history    = `count_over_time((` + wedgedExpr + `)[10m:1m])`
)

// testConfig is one whisker rule; url is the file's Prometheus ("" for
// none), forD its `for`.
func testConfig(t *testing.T, url, forD string) string {
	t.Helper()
	y := fmt.Sprintf(`evaluation_interval: 1m
rules:
  - name: whisker
    expr: '%s'
    for: %s
    guards: ['%s']
    action: delete_pod
    namespaces: [calico-system]
    selector: k8s-app=whisker
`, wedgedExpr, forD, guardExpr)
	if url != "" {
		y = "prometheus: {url: " + url + ", timeout: 5s}\n" + y
	}
	p := filepath.Join(t.TempDir(), "remediator.yml")
	if err := os.WriteFile(p, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// fakeProm answers instant queries: the wedged pod (with the probe's
// module and instance labels), its history, and a Ready goldmane.
type fakeProm struct {
	*httptest.Server
	mu      sync.Mutex
	queries []string
}

func newFakeProm(t *testing.T) *fakeProm {
	p := &fakeProm{}
	p.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/v1/query" {
			http.NotFound(w, r)
			return
		}
		_ = r.ParseForm()
		q := r.Form.Get("query")
		p.mu.Lock()
		p.queries = append(p.queries, q)
		p.mu.Unlock()
		now := float64(time.Now().UnixMilli()) / 1000
		pod := map[string]string{"namespace": "calico-system", "pod": "whisker-a", "container": "whisker-backend",
			"module": "whisker_wedged", "instance": "calico-system/k8s-app=whisker"}
		var result []any
		switch q {
		case wedgedExpr:
			result = append(result, map[string]any{"metric": pod, "value": []any{now, "25"}})
		case history:
			result = append(result, map[string]any{"metric": pod, "value": []any{now, "10"}})
		case guardExpr:
			result = append(result, map[string]any{"metric": map[string]string{"dependency": "goldmane"}, "value": []any{now, "1"}})
		default:
			result = []any{}
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"status": "success", "data": map[string]any{"resultType": "vector", "result": result}})
	}))
	t.Cleanup(p.Close)
	return p
}

func (p *fakeProm) asked() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.queries...)
}

// noKubernetes makes sure no kubeconfig and no in-cluster environment can
// be found.
func noKubernetes(t *testing.T) {
	t.Setenv("KUBECONFIG", "")
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	t.Setenv("KUBERNETES_SERVICE_PORT", "")
	t.Setenv("HOME", t.TempDir())
}

type result struct {
	code           int
	stdout, stderr string
}

func runCmd(args ...string) result {
	var stdout, stderr syncbuf.Buffer
	code := run(args, &stdout, &stderr, nil)
	return result{code, stdout.String(), stderr.String()}
}

func (r result) has(t *testing.T, out string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(out, w) {
			t.Errorf("output lacks %q\nexit %d\nstdout:\n%s\nstderr:\n%s", w, r.code, r.stdout, r.stderr)
		}
	}
}

// --prometheus.url overrides the file (whose URL answers nothing); the
// plan runs with no Kubernetes at all, and links greybox and Prometheus.
func TestPlanWithoutKubernetes(t *testing.T) {
	noKubernetes(t)
	prom := newFakeProm(t)
	cfg := testConfig(t, "http://127.0.0.1:1", "10m")
	r := runCmd("plan", "--config.file="+cfg, "--prometheus.url="+prom.URL,
		"--greybox.url=http://greybox.example:9116", "--prometheus.external-url=https://prom.example")
	if r.code != 0 {
		t.Fatalf("exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	r.has(t, r.stdout,
		"Prometheus:  "+prom.URL,
		"Kubernetes:  not configured",
		"rule whisker: delete_pod after 10m",
		"  guard:  "+guardExpr+" → ok: 1 sample(s)",
		"  calico-system/whisker-a (value 25): held for 10m (present at all 10 steps of 1m)",
		"    → WOULD ACT: would delete_pod calico-system/whisker-a (the live pod is not checked: no Kubernetes)",
		"    pod:  not resolved (no Kubernetes)",
		"    logs: http://greybox.example:9116/logs?module=whisker_wedged&target=calico-system%2Fk8s-app%3Dwhisker",
		"  graph:  https://prom.example/graph?g0.expr=",
		"1 rule(s): 1 would act, 0 skipped, 0 waiting",
	)
	if q := prom.asked(); len(q) != 3 || q[0] != wedgedExpr {
		t.Errorf("queries %q: want the rule, its history and the guard, from the --prometheus.url server", q)
	}
	if strings.Contains(r.stderr, "level=ERROR") || strings.Contains(r.stderr, "level=WARN") {
		t.Errorf("stderr: %s", r.stderr)
	}

	// JSON, and the flag standing in for a file without prometheus.url.
	r = runCmd("plan", "-o", "json", "--config.file="+testConfig(t, "", "10m"), "--prometheus.url="+prom.URL)
	var p remediate.Plan
	if err := json.Unmarshal([]byte(r.stdout), &p); err != nil || r.code != 0 {
		t.Fatalf("exit %d, %v:\n%s\n%s", r.code, err, r.stdout, r.stderr)
	}
	if len(p.Rules) != 1 || len(p.Rules[0].Candidates) != 1 || p.Rules[0].Candidates[0].Decision != remediate.DecisionAct || p.Kubernetes {
		t.Errorf("json plan %s", r.stdout)
	}
	if p.Rules[0].GraphURL == "" || !strings.HasPrefix(p.Rules[0].GraphURL, prom.URL+"/graph?") {
		t.Errorf("graph link defaults to the queried URL: %q", p.Rules[0].GraphURL)
	}
}

func TestPlanFailures(t *testing.T) {
	noKubernetes(t)
	r := runCmd("plan", "--config.file="+testConfig(t, "http://127.0.0.1:1", "10m"))
	if r.code != 1 {
		t.Errorf("unreachable Prometheus: exit %d", r.code)
	}
	r.has(t, r.stderr, "cannot query Prometheus at http://127.0.0.1:1:", "connection refused")
	r.has(t, r.stdout, "  ERROR:  ")

	bad := filepath.Join(t.TempDir(), "bad.yml")
	if err := os.WriteFile(bad, []byte("prometheus: {url: http://x}\nrules:\n  - name: r\n    action: reboot\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r = runCmd("plan", "--config.file="+bad)
	if r.code != 1 || r.stdout != "" {
		t.Errorf("bad config: exit %d, stdout %q", r.code, r.stdout)
	}
	r.has(t, r.stderr, "bad.yml:3: rule \"r\"")
}

// Every URL flag is checked, and a bad value names the flag.
func TestBadURLFlags(t *testing.T) {
	noKubernetes(t)
	cfg := testConfig(t, "http://127.0.0.1:1", "10m")
	for _, flag := range []string{"--prometheus.url", "--prometheus.external-url", "--greybox.url"} {
		for _, bad := range []string{"prometheus:9090", "file:///etc/passwd", "http://", "javascript:alert(1)"} {
			for _, cmd := range [][]string{{"plan"}, {"--config.check"}, {"--dry-run"}} {
				r := runCmd(append(cmd, "--config.file="+cfg, flag+"="+bad)...)
				if r.code != 2 || !strings.Contains(r.stderr, flag+" must be an http(s) URL with a host") {
					t.Errorf("%v %s=%s: exit %d, stderr %q", cmd, flag, bad, r.code, r.stderr)
				}
			}
		}
	}
}

func TestConfigCheckWithPrometheusURL(t *testing.T) {
	cfg := testConfig(t, "", "10m")
	r := runCmd("--config.check", "--config.file="+cfg)
	if r.code != 1 {
		t.Errorf("no URL anywhere: exit %d", r.code)
	}
	r.has(t, r.stderr, "prometheus.url must be an http(s) URL with a host", "or set --prometheus.url")
	r = runCmd("--config.check", "--config.file="+cfg, "--prometheus.url=http://prometheus:9090")
	if r.code != 0 {
		t.Errorf("exit %d: %s", r.code, r.stderr)
	}
	r.has(t, r.stdout, "OK, 1 rules")
}

// Acting needs Kubernetes; the error says how to try rules without it.
func TestServeNeedsKubernetesUnlessDryRun(t *testing.T) {
	noKubernetes(t)
	r := runCmd("--config.file="+testConfig(t, "http://127.0.0.1:1", "10m"), "--web.listen-address=127.0.0.1:0")
	if r.code != 1 {
		t.Errorf("exit %d", r.code)
	}
	r.has(t, r.stderr, "the remediator needs Kubernetes to act; --dry-run or the plan command try rules without it", "no Kubernetes configuration")
}

// --dry-run starts with no Kubernetes, evaluates, and serves the status
// page in plan mode; --leader-elect is not needed then. A signal stops it.
func TestDryRunServesWithoutKubernetes(t *testing.T) {
	noKubernetes(t)
	prom := newFakeProm(t)
	addr := freeAddr(t)
	signals := make(chan os.Signal, 1)
	var stdout, stderr syncbuf.Buffer
	done := make(chan int, 1)
	go func() {
		done <- run([]string{"--dry-run", "--leader-elect", "--config.file=" + testConfig(t, "http://127.0.0.1:1", "0s"),
			"--prometheus.url=" + prom.URL, "--greybox.url=http://greybox.example:9116", "--web.listen-address=" + addr},
			&stdout, &stderr, signals)
	}()
	base := "http://" + addr
	waitReady(t, base+"/-/ready", done, &stderr)
	page := get(t, base+"/")
	for _, want := range []string{
		"Kubernetes: not configured — plan mode",
		"Leader: not electing — not needed in plan mode without Kubernetes",
		"Prometheus <code>" + prom.URL + "</code>: ok, last query",
		"<b>dry run</b>",
		"dry_run", "the live pod is not checked: no Kubernetes",
		`href="http://greybox.example:9116/logs?module=whisker_wedged&amp;target=calico-system%2Fk8s-app%3Dwhisker"`,
		`href="` + prom.URL + `/graph?g0.expr=`,
	} {
		if !strings.Contains(page, want) {
			t.Errorf("status page lacks %q\n%s", want, page)
		}
	}
	metrics := get(t, base+"/metrics")
	for _, want := range []string{`greybox_remediator_actions_total{action="delete_pod",result="dry_run",rule="whisker"} 1`, "greybox_remediator_build_info", "greybox_remediator_is_leader 1"} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	if strings.Contains(metrics, "greybox_remediation_") {
		t.Error("a metric still has the old greybox_remediation_ prefix")
	}
	signals <- os.Interrupt
	if code := <-done; code != 0 {
		t.Errorf("exit %d", code)
	}
	logs := stderr.String()
	for _, want := range []string{"plan mode runs without Kubernetes", "no leader election: not needed in plan mode without Kubernetes", "shutting down"} {
		if !strings.Contains(logs, want) {
			t.Errorf("log lacks %q:\n%s", want, logs)
		}
	}
	if n := strings.Count(logs, "plan mode runs without Kubernetes"); n != 1 {
		t.Errorf("%d lines about plan mode, want one", n)
	}
}

// With a kubeconfig, the plan names each candidate's live pod and reads the
// state; it only ever reads.
func TestPlanWithKubernetes(t *testing.T) {
	noKubernetes(t)
	prom := newFakeProm(t)
	api := newFakeAPI(t)
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kubeconfig, []byte(fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: fake, cluster: {server: %q}}]
contexts: [{name: fake, context: {cluster: fake, user: u}}]
users: [{name: u, user: {}}]
current-context: fake
`, api.URL)), 0o600); err != nil {
		t.Fatal(err)
	}
	r := runCmd("plan", "--config.file="+testConfig(t, prom.URL, "10m"), "--kubeconfig="+kubeconfig)
	if r.code != 0 {
		t.Fatalf("exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	r.has(t, r.stdout,
		"Kubernetes:  configured: candidates are resolved to live pods",
		"State:       read from ConfigMap greybox/greybox-remediator-state",
		"    → WOULD ACT: would delete_pod pod/calico-system/whisker-a (uid 1234-whisker-a)",
		"    pod:  pod/calico-system/whisker-a uid 1234-whisker-a, created 2026-05-01T11:00:00Z, phase Running, node node-1, matches selector k8s-app=whisker",
	)
	for _, req := range api.seen() {
		if !strings.HasPrefix(req, "GET ") {
			t.Errorf("the plan sent %s", req)
		}
	}
}

// fakeAPI serves the whisker pod and a missing state ConfigMap.
type fakeAPI struct {
	*httptest.Server
	mu   sync.Mutex
	reqs []string
}

func newFakeAPI(t *testing.T) *fakeAPI {
	a := &fakeAPI{}
	a.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.mu.Lock()
		a.reqs = append(a.reqs, r.Method+" "+r.URL.Path)
		a.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		if r.Method == http.MethodGet && r.URL.Path == "/api/v1/namespaces/calico-system/pods/whisker-a" {
			_ = json.NewEncoder(w).Encode(&corev1.Pod{
				TypeMeta: metav1.TypeMeta{Kind: "Pod", APIVersion: "v1"},
				ObjectMeta: metav1.ObjectMeta{Name: "whisker-a", Namespace: "calico-system", UID: "1234-whisker-a",
					Labels: map[string]string{"k8s-app": "whisker"}, CreationTimestamp: metav1.NewTime(time.Date(2026, 5, 1, 11, 0, 0, 0, time.UTC))},
				Spec:   corev1.PodSpec{NodeName: "node-1"},
				Status: corev1.PodStatus{Phase: corev1.PodRunning},
			})
			return
		}
		w.WriteHeader(http.StatusNotFound)
		_ = json.NewEncoder(w).Encode(&metav1.Status{TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"},
			Status: metav1.StatusFailure, Reason: metav1.StatusReasonNotFound, Code: http.StatusNotFound})
	}))
	t.Cleanup(a.Close)
	return a
}

func (a *fakeAPI) seen() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.reqs...)
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

var client = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := client.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, b)
	}
	return string(b)
}

// waitReady polls url until it answers 200, failing if run returns first.
func waitReady(t *testing.T, url string, done <-chan int, logs *syncbuf.Buffer) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		if resp, err := client.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case code := <-done:
			t.Fatalf("exited with %d before ready:\n%s", code, logs.String())
		case <-ctx.Done():
			t.Fatalf("not ready:\n%s", logs.String())
		case <-tick.C:
		}
	}
}
