package remediate

import (
	"context"
	"encoding/json"
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
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	testingclock "k8s.io/utils/clock/testing"
)

var t0 = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)

// promReply is a canned answer of the fake Prometheus for one query.
type promReply struct {
	samples  []map[string]string // label sets; value is taken from "__value__" (default "1")
	warnings []string
	status   int    // non-zero: plain HTTP error with this status
	apiError string // non-empty: {"status":"error"} with apiStatus (default 400)
	// apiStatus is the HTTP status of an apiError answer.
	apiStatus int
	// age stamps the samples this long before the fake clock's now.
	age time.Duration
	// body, when set, is sent verbatim with 200 and a JSON content type.
	body string
	// hang holds the request until the client gives up.
	hang bool
}

// fakeProm is an httptest Prometheus /api/v1/query that answers canned
// vectors per query string; unknown queries answer an empty vector.
type fakeProm struct {
	*httptest.Server
	mu      sync.Mutex
	replies map[string]promReply
	queries []string
	// now stamps the samples: Prometheus answers an instant query with
	// its evaluation time. nil: t0.
	now func() time.Time
}

func newFakeProm(t *testing.T) *fakeProm {
	p := &fakeProm{replies: map[string]promReply{}}
	p.Server = httptest.NewServer(http.HandlerFunc(p.serve))
	t.Cleanup(p.Close)
	return p
}

func (p *fakeProm) set(query string, r promReply) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.replies[query] = r
}

func (p *fakeProm) serve(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/api/v1/query" {
		http.NotFound(w, r)
		return
	}
	_ = r.ParseForm()
	q := r.Form.Get("query")
	p.mu.Lock()
	p.queries = append(p.queries, q)
	rep := p.replies[q]
	p.mu.Unlock()
	if rep.hang {
		<-r.Context().Done()
		return
	}
	if rep.status != 0 {
		http.Error(w, "unavailable", rep.status)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	if rep.body != "" {
		_, _ = io.WriteString(w, rep.body)
		return
	}
	if rep.apiError != "" {
		code := rep.apiStatus
		if code == 0 {
			code = http.StatusBadRequest
		}
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(map[string]any{"status": "error", "errorType": "bad_data", "error": rep.apiError})
		return
	}
	ts := t0
	if p.now != nil {
		ts = p.now()
	}
	ts = ts.Add(-rep.age)
	result := []any{}
	for _, s := range rep.samples {
		m := map[string]string{}
		v := "1"
		for k, val := range s {
			if k == "__value__" {
				v = val
				continue
			}
			m[k] = val
		}
		result = append(result, map[string]any{"metric": m, "value": []any{float64(ts.UnixMilli()) / 1000, v}})
	}
	body := map[string]any{"status": "success", "data": map[string]any{"resultType": "vector", "result": result}}
	if len(rep.warnings) > 0 {
		body["warnings"] = rep.warnings
	}
	_ = json.NewEncoder(w).Encode(body)
}

const whiskerExpr = `probe_k8s_log_matched_lines{namespace="calico-system",container="whisker-backend"} >= 10`
const goldmaneGuard = `probe_k8s_dependency_ready{dependency="goldmane"} == 1`

// testConfig is the whisker rule against url, plus extra YAML for the rule.
func testConfig(t *testing.T, url, extra string) *Config {
	t.Helper()
	y := fmt.Sprintf(`
prometheus:
  url: %s
  timeout: 5s
storm_guard: {max_actions: 10, window: 1h}
rules:
  - name: whisker
    expr: '%s'
    for: 10m
    guards: ['%s']
    action: delete_pod
    cooldown: 30m
    max_actions: 5
    window: 6h
    namespaces: [calico-system]
    selector: k8s-app=whisker
%s`, url, whiskerExpr, goldmaneGuard, extra)
	cfg, err := Parse([]byte(y), "test.yml")
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	return cfg
}

func whiskerPod(name string, created time.Time) *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{
		Name: name, Namespace: "calico-system", UID: types.UID("uid-" + name),
		Labels:            map[string]string{"k8s-app": "whisker"},
		CreationTimestamp: metav1.NewTime(created),
	}}
}

func wedged(pods ...string) promReply {
	var s []map[string]string
	for _, p := range pods {
		s = append(s, map[string]string{"namespace": "calico-system", "pod": p, "container": "whisker-backend", "__value__": "12"})
	}
	return promReply{samples: s}
}

var guardOK = promReply{samples: []map[string]string{{"dependency": "goldmane"}}}

type harness struct {
	t      *testing.T
	prom   *fakeProm
	cs     *fake.Clientset
	clock  *testingclock.FakeClock
	engine *Engine
	reg    *prometheus.Registry
	store  Store
	logs   *syncBuffer // the engines' log, for asserting what they said
}

func newHarness(t *testing.T, extra string, objs ...*corev1.Pod) *harness {
	t.Helper()
	h := &harness{t: t, prom: newFakeProm(t), cs: fake.NewClientset(), clock: testingclock.NewFakeClock(t0), logs: &syncBuffer{}}
	h.prom.now = h.clock.Now
	for _, p := range objs {
		if _, err := h.cs.CoreV1().Pods(p.Namespace).Create(context.Background(), p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	h.cs.ClearActions()
	h.store = &ConfigMapStore{Client: h.cs, Namespace: "greybox", Name: "state"}
	h.engine = h.newEngine(testConfig(t, h.prom.URL, extra), true)
	return h
}

func (h *harness) newEngine(cfg *Config, leader bool) *Engine {
	h.t.Helper()
	h.reg = prometheus.NewRegistry()
	src, err := NewPrometheusSource(cfg.Prometheus)
	if err != nil {
		h.t.Fatal(err)
	}
	if h.logs == nil {
		h.logs = &syncBuffer{}
	}
	e, err := NewEngine(Options{Config: cfg, Source: src, Kube: h.cs, Store: h.store, Clock: h.clock,
		Metrics: NewMetrics(h.reg), Identity: "test", Leader: leader, Logger: slog.New(slog.NewTextHandler(h.logs, nil))})
	if err != nil {
		h.t.Fatal(err)
	}
	return e
}

// at moves the fake clock to t0+d and evaluates once.
func (h *harness) at(d time.Duration) {
	h.t.Helper()
	h.clock.SetTime(t0.Add(d))
	h.engine.Evaluate(context.Background())
}

func (h *harness) result(rule, action, result string) float64 {
	return testutil.ToFloat64(h.engine.metrics.actions.WithLabelValues(rule, action, result))
}

// writes returns the mutating API calls on pods and workloads.
func (h *harness) writes() []string {
	var out []string
	for _, a := range h.cs.Actions() {
		switch a.GetVerb() {
		case "delete", "create", "patch", "update":
			res := a.GetResource().Resource
			if a.GetSubresource() != "" {
				res += "/" + a.GetSubresource()
			}
			if res == "events" || res == "configmaps" {
				continue
			}
			out = append(out, a.GetVerb()+" "+res)
		}
	}
	return out
}

func (h *harness) deletes() []k8stesting.DeleteAction {
	var out []k8stesting.DeleteAction
	for _, a := range h.cs.Actions() {
		if d, ok := a.(k8stesting.DeleteAction); ok && a.GetResource().Resource == "pods" {
			out = append(out, d)
		}
	}
	return out
}

func (h *harness) events(reason string) []corev1.Event {
	l, err := h.cs.CoreV1().Events("").List(context.Background(), metav1.ListOptions{})
	if err != nil {
		h.t.Fatal(err)
	}
	var out []corev1.Event
	for _, e := range l.Items {
		if e.Reason == reason {
			out = append(out, e)
		}
	}
	return out
}

func joined(s []string) string { return strings.Join(s, ", ") }
