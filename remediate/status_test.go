package remediate

import (
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/runtime"
	k8stesting "k8s.io/client-go/testing"
)

func pageHas(t *testing.T, page string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(page, w) {
			t.Errorf("status page lacks %q", w)
		}
	}
	if t.Failed() {
		t.Logf("page:\n%s", page)
	}
}

func pageLacks(t *testing.T, page string, nots ...string) {
	t.Helper()
	for _, n := range nots {
		if strings.Contains(page, n) {
			t.Errorf("status page has %q", n)
		}
	}
}

// The banner before anything happened, then with both upstreams failing,
// then recovered.
func TestStatusBanner(t *testing.T) {
	h := newHarness(t, "", whiskerPod("whisker-a", t0.Add(-time.Hour)))
	pageHas(t, h.statusPage(), `class="banner"`, "not queried yet", "configured, not called yet",
		"not electing (--leader-elect not set)", "Mode: acting", "Last evaluation: never",
		"Storm guard: 0 of 10 actions across all rules in the last 1h", "last read never")

	// Prometheus down: the banner says so, with the error and when.
	h.prom.set(whiskerExpr, promReply{status: 503})
	h.at(0)
	page := h.statusPage()
	pageHas(t, page, `class="banner bad"`, "last query failed</span> at 2026-05-01T12:00:00Z", "503",
		"(last success: never)", "1 error(s)", "whisker: server_error: server error: 503")

	// Prometheus back, the candidate fires, Kubernetes does not answer.
	h.prom.set(whiskerExpr, wedged("whisker-a"))
	h.prom.set(goldmaneGuard, guardOK)
	h.cs.PrependReactor("get", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, errors.New("dial tcp 10.0.0.1:443: connect: connection refused")
	})
	h.at(time.Minute)
	h.at(11 * time.Minute)
	page = h.statusPage()
	pageHas(t, page, "ok, last query 2026-05-01T12:11:00Z", "last call failed</span> at 2026-05-01T12:11:00Z",
		"connection refused", "(last answer: never)", "Last evaluation: 2026-05-01T12:11:00Z — no errors",
		"skipped_kube_error")

	// Kubernetes answers (a 404 is an answer).
	h.cs.ReactionChain = h.cs.ReactionChain[1:]
	h.at(12 * time.Minute)
	pageHas(t, h.statusPage(), "reachable, last call 2026-05-01T12:12:00Z")
}

func TestStatusLeader(t *testing.T) {
	h := newHarness(t, "")
	cfg := testConfig(t, h.prom.URL, "")
	src, _ := NewPrometheusSource(cfg.Prometheus)
	e, err := NewEngine(Options{Config: cfg, Source: src, Kube: h.cs, Store: h.store, Clock: h.clock, Electing: true,
		Metrics: NewMetrics(prometheus.NewRegistry())})
	if err != nil {
		t.Fatal(err)
	}
	h.engine = e
	pageHas(t, h.statusPage(), "Leader: <b>no</b>, another instance holds the Lease", `class="banner bad"`)
	e.SetLeader(true)
	pageHas(t, h.statusPage(), "Leader: <b>yes</b>, holds the Lease")
}

// Dry run without Kubernetes: the banner says plan mode, and that no
// leader election is needed.
func TestStatusPlanModeWithoutKubernetes(t *testing.T) {
	h := newHarness(t, "")
	cfg := testConfig(t, h.prom.URL, "")
	cfg.DryRun = true
	src, _ := NewPrometheusSource(cfg.Prometheus)
	e, err := NewEngine(Options{Config: cfg, Source: src, Clock: h.clock, Leader: true, Metrics: NewMetrics(prometheus.NewRegistry()),
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	h.engine = e
	h.prom.set(whiskerExpr, wedged("whisker-a"))
	h.prom.set(goldmaneGuard, guardOK)
	h.at(0)
	h.at(10 * time.Minute)
	pageHas(t, h.statusPage(), "not configured — plan mode", "not electing — not needed in plan mode without Kubernetes",
		"<b>dry run</b>", "(in memory: plan mode)", "dry_run", "the live pod is not checked: no Kubernetes")
}

// Budgets, the storm guard, cooldown expiry and skips beside actions.
func TestStatusBudgetsCooldownsAndSkips(t *testing.T) {
	h := newHarness(t, "", whiskerPod("whisker-a", t0.Add(-time.Hour)))
	h.prom.set(whiskerExpr, wedged("whisker-a"))
	h.prom.set(goldmaneGuard, guardOK)
	h.at(0)
	pageHas(t, h.statusPage(), "5 of 5 actions left in 6h (0 used)", "<td>—</td>")
	h.at(10 * time.Minute) // acts
	// The pod is gone now; the series lingers: cooldown, twice.
	h.at(20 * time.Minute)
	h.at(21 * time.Minute)
	page := h.statusPage()
	pageHas(t, page,
		"4 of 5 actions left in 6h (1 used)",
		"Storm guard: 1 of 10 actions across all rules in the last 1h",
		"<td>2026-05-01T12:40:00Z</td>", // cooldown until: action at 12:10 + 30m
		`<section id="recent-actions">`, `<section id="recent-skips">`,
		"<td>cooldown: the target is in its cooldown</td><td>2 since 2026-05-01T12:20:00Z</td>",
		"last action on this target at 2026-05-01T12:10:00Z, cooldown 30m",
		"guard</th><td><code>"+strings.ReplaceAll(goldmaneGuard, `"`, "&#34;")+"</code> — ok: 1 sample(s)")
	// One entry for a repeated skip, not one per evaluation.
	if n := strings.Count(page, "cooldown: the target is in its cooldown"); n != 1 {
		t.Errorf("%d skip rows for one repeated skip", n)
	}
	if skips := h.engine.Skips(); len(skips) != 1 || skips[0].Count != 2 || !skips[0].First.Equal(t0.Add(20*time.Minute)) {
		t.Errorf("skips %+v", skips)
	}

	// Budget used up: it says exhausted.
	h.engine.cfg.Rules[0].MaxActions = 1
	h.at(22 * time.Minute)
	pageHas(t, h.statusPage(), "0 of 1 actions left in 6h (1 used) — <span class=\"bad-item\">exhausted</span>")
}

// Skips of the same kind on different targets and rule-level skips are
// kept apart, and the list is bounded.
func TestStatusSkipLog(t *testing.T) {
	h := newHarness(t, "")
	r := h.engine.cfg.Rules[0]
	for i := range recentSkips + 10 {
		h.engine.noteSkip(r, "ns/p"+strings.Repeat("x", i), SkipCooldown, "m", t0)
	}
	h.engine.noteSkip(r, "", SkipQueryError, "boom", t0)
	skips := h.engine.Skips()
	if len(skips) != recentSkips || skips[0].Reason != SkipQueryError || skips[0].Target != "" {
		t.Fatalf("%d skips, newest %+v", len(skips), skips[0])
	}
	pageHas(t, h.statusPage(), "<td>(rule)</td><td>query_error: ")
}

// Links: each rule to its expression in Prometheus, each candidate to the
// probe's logs in greybox; hostile label values stay inside the query.
func TestStatusLinks(t *testing.T) {
	h := newHarness(t, "")
	cfg := testConfig(t, h.prom.URL, "")
	src, _ := NewPrometheusSource(cfg.Prometheus)
	e, err := NewEngine(Options{Config: cfg, Source: src, Kube: h.cs, Store: h.store, Clock: h.clock, Leader: true,
		Metrics: NewMetrics(prometheus.NewRegistry()),
		Links:   Links{Greybox: "http://greybox.example:9116/", Prometheus: "https://admin:hunter2@prom.example/prom/"}})
	if err != nil {
		t.Fatal(err)
	}
	h.engine = e
	h.prom.set(whiskerExpr, promReply{samples: []map[string]string{
		{"namespace": "calico-system", "pod": "whisker-a", "module": "whisker_wedged", "instance": `calico-system/k8s-app=whisker&x="><script>`, "__value__": "12"},
		{"namespace": "calico-system", "pod": "whisker-b", "__value__": "12"}, // no probe labels: no link
	}})
	h.at(0)
	page := h.statusPage()
	pageHas(t, page,
		`<a href="https://prom.example/prom/graph?g0.expr=probe_k8s_log_matched_lines%7Bnamespace%3D%22calico-system%22%2Ccontainer%3D%22whisker-backend%22%7D&#43;%3E%3D&#43;10&amp;g0.tab=1">graph in Prometheus</a>`,
		`<a href="http://greybox.example:9116/logs?module=whisker_wedged&amp;target=calico-system%2Fk8s-app%3Dwhisker%26x%3D%22%3E%3Cscript%3E">probe logs</a>`,
	)
	pageLacks(t, page, "hunter2", "admin", "<script>")
	if n := strings.Count(page, "probe logs"); n != 1 {
		t.Errorf("%d logs links, want 1 (whisker-b has no module/instance)", n)
	}
	// The links are the ones a browser follows.
	rules, _ := e.Status()
	if got := rules[0].Candidates[0].LogsURL; got != "http://greybox.example:9116/logs?module=whisker_wedged&target=calico-system%2Fk8s-app%3Dwhisker%26x%3D%22%3E%3Cscript%3E" {
		t.Errorf("logs URL %s", got)
	}

	// No links configured: none shown.
	h.engine = h.newEngine(cfg, true)
	h.at(0)
	page = h.statusPage()
	pageLacks(t, page, "probe logs", "graph in Prometheus")
}

// probe_labels renames the labels the logs link reads.
func TestStatusLinksProbeLabels(t *testing.T) {
	h := newHarness(t, "    probe_labels: {module: probe_module, target: probe_target}\n")
	h.engine.links = Links{Greybox: "http://gb"}
	h.prom.set(whiskerExpr, promReply{samples: []map[string]string{
		{"namespace": "calico-system", "pod": "whisker-a", "probe_module": "m", "probe_target": "t", "module": "no", "instance": "no"},
	}})
	h.at(0)
	pageHas(t, h.statusPage(), `href="http://gb/logs?module=m&amp;target=t"`)
}

func TestLinkBase(t *testing.T) {
	for base, want := range map[string]string{
		"":                             "",
		"http://h":                     "http://h/graph?g0.expr=up&g0.tab=1",
		"http://h/":                    "http://h/graph?g0.expr=up&g0.tab=1",
		"http://u:p@h/x/?q=1#f":        "http://h/x/graph?g0.expr=up&g0.tab=1",
		"no-host":                      "",
		"http://[::1]:9090/prometheus": "http://[::1]:9090/prometheus/graph?g0.expr=up&g0.tab=1",
	} {
		if got := graphURL(base, "up"); got != want {
			t.Errorf("graphURL(%q) = %q, want %q", base, got, want)
		}
	}
}
