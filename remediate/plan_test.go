package remediate

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// whiskerHistory is the subquery plan mode asks for the whisker rule's
// `for` (10m, evaluation_interval 1m).
const whiskerHistory = `count_over_time((` + whiskerExpr + `)[10m:1m])`

// held answers the history subquery: steps per pod.
func held(steps map[string]string) promReply {
	var s []map[string]string
	for pod, n := range steps {
		s = append(s, map[string]string{"namespace": "calico-system", "pod": pod, "container": "whisker-backend", "__value__": n})
	}
	return promReply{samples: s}
}

// planEngine is a plan-mode engine on h's Prometheus; withKube gives it
// h's clientset and ConfigMap store, otherwise it has no Kubernetes.
func (h *harness) planEngine(withKube bool, links Links, mods ...func(*Config)) *Engine {
	h.t.Helper()
	cfg := testConfig(h.t, h.prom.URL, "")
	cfg.DryRun = true
	for _, m := range mods {
		m(cfg)
	}
	src, err := NewPrometheusSource(cfg.Prometheus)
	if err != nil {
		h.t.Fatal(err)
	}
	o := Options{Config: cfg, Source: src, Clock: h.clock, Metrics: NewMetrics(prometheus.NewRegistry()),
		Leader: true, Plan: true, Links: links, Logger: slog.New(slog.NewTextHandler(h.logs, nil))}
	if withKube {
		var cs kubernetes.Interface = h.cs
		o.Kube, o.Store = cs, h.store
	}
	e, err := NewEngine(o)
	if err != nil {
		h.t.Fatal(err)
	}
	return e
}

func candidatePlan(t *testing.T, p *Plan, target string) CandidatePlan {
	t.Helper()
	for _, r := range p.Rules {
		for _, c := range r.Candidates {
			if c.Target == target {
				return c
			}
		}
	}
	t.Fatalf("plan has no candidate %s: %+v", target, p)
	return CandidatePlan{}
}

// The plan asks Prometheus how long each candidate held: one held for the
// whole `for` would be acted on, one that appeared recently waits; with
// Kubernetes each names its live pod; nothing is written.
func TestPlanActsOnlyOnWhatHeldForFor(t *testing.T) {
	h := newHarness(t, "", whiskerPod("whisker-a", t0.Add(-time.Hour)), whiskerPod("whisker-b", t0.Add(-time.Hour)))
	h.prom.set(whiskerExpr, wedged("whisker-a", "whisker-b"))
	h.prom.set(whiskerHistory, held(map[string]string{"whisker-a": "11", "whisker-b": "3"}))
	h.prom.set(goldmaneGuard, guardOK)

	p := h.planEngine(true, Links{}).Plan(context.Background())
	if len(p.Errors) != 0 || !p.Kubernetes {
		t.Fatalf("plan errors %v, kubernetes %v", p.Errors, p.Kubernetes)
	}
	a := candidatePlan(t, p, "calico-system/whisker-a")
	if a.Decision != DecisionAct || !strings.Contains(a.Detail, "would delete_pod pod/calico-system/whisker-a (uid uid-whisker-a)") {
		t.Errorf("whisker-a: %+v", a)
	}
	if !strings.Contains(a.History, "held for 10m (present at all 10 steps of 1m)") {
		t.Errorf("whisker-a history %q", a.History)
	}
	if !strings.Contains(a.Pod, "pod/calico-system/whisker-a uid uid-whisker-a") || !strings.Contains(a.Pod, "matches selector k8s-app=whisker") {
		t.Errorf("whisker-a not resolved to its pod: %q", a.Pod)
	}
	b := candidatePlan(t, p, "calico-system/whisker-b")
	if b.Decision != DecisionWait || !strings.Contains(b.History, "present at 3 of 10 steps of 1m over the last 10m") {
		t.Errorf("whisker-b: %+v", b)
	}
	if !strings.Contains(b.Pod, "uid uid-whisker-b") {
		t.Errorf("a pending candidate is resolved too: %q", b.Pod)
	}
	if g := p.Rules[0].Guards; len(g) != 1 || g[0].Result != GuardOK {
		t.Errorf("guards %+v", g)
	}
	if !strings.Contains(p.State, "read from ConfigMap greybox/state") || p.Planned != 1 || p.Rules[0].Planned != 1 {
		t.Errorf("state %q", p.State)
	}
	for _, a := range h.cs.Actions() {
		if a.GetVerb() != "get" && a.GetVerb() != "list" {
			t.Errorf("plan made a %s %s call", a.GetVerb(), a.GetResource().Resource)
		}
	}

	var text bytes.Buffer
	if err := p.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"rule whisker: delete_pod after 10m, cooldown 30m, namespaces calico-system, selector k8s-app=whisker",
		"  guard:  " + goldmaneGuard + " → ok: 1 sample(s)",
		"  budget: 5 of 5 actions left in 6h; this plan would use 1",
		"Storm guard: 0 of 10 actions across all rules in the last 1h; this plan would use 1",
		"  calico-system/whisker-a (value 12): held for 10m",
		"    → WOULD ACT: would delete_pod pod/calico-system/whisker-a (uid uid-whisker-a)",
		"  calico-system/whisker-b (value 12): present at 3 of 10 steps",
		"    → wait, pending: acts once it has held for 10m",
		"1 rule(s): 1 would act, 0 skipped, 1 waiting",
	} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("text plan lacks %q:\n%s", want, text.String())
		}
	}
	var js bytes.Buffer
	if err := p.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	var back Plan
	if err := json.Unmarshal(js.Bytes(), &back); err != nil {
		t.Fatalf("json plan: %v\n%s", err, js.String())
	}
	if len(back.Rules) != 1 || len(back.Rules[0].Candidates) != 2 || back.Rules[0].Candidates[0].Decision != DecisionAct {
		t.Errorf("json plan %s", js.String())
	}
}

// Without Kubernetes the plan still decides everything Prometheus and the
// rule can decide, and says the pod was not checked.
func TestPlanWithoutKubernetes(t *testing.T) {
	h := newHarness(t, "")
	h.prom.set(whiskerExpr, wedged("whisker-a"))
	h.prom.set(whiskerHistory, held(map[string]string{"whisker-a": "10"}))
	h.prom.set(goldmaneGuard, guardOK)
	p := h.planEngine(false, Links{}).Plan(context.Background())
	a := candidatePlan(t, p, "calico-system/whisker-a")
	if a.Decision != DecisionAct || a.Detail != "would delete_pod calico-system/whisker-a (the live pod is not checked: no Kubernetes)" || a.Pod != "" {
		t.Errorf("whisker-a: %+v", a)
	}
	if p.Kubernetes || !strings.Contains(p.State, "not read (no Kubernetes)") {
		t.Errorf("kubernetes %v, state %q", p.Kubernetes, p.State)
	}
	var text bytes.Buffer
	_ = p.WriteText(&text)
	for _, want := range []string{"Kubernetes:  not configured", "    pod:  not resolved (no Kubernetes)"} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("text plan lacks %q:\n%s", want, text.String())
		}
	}
	if len(h.cs.Actions()) != 0 {
		t.Errorf("a plan without Kubernetes used the clientset: %v", h.cs.Actions())
	}
}

// Every reason a firing candidate is not acted on shows in the plan.
func TestPlanSaysWhy(t *testing.T) {
	now := metav1.NewTime(t0.Add(-5 * time.Minute))
	for _, tc := range []struct {
		name   string
		mod    func(*Config)
		setup  func(h *harness)
		reason string
		detail string
	}{
		{name: "dependency not ready", mod: func(*Config) {}, setup: func(h *harness) { h.prom.set(goldmaneGuard, promReply{}) },
			reason: SkipGuardFailed, detail: "returned no sample"},
		{name: "cooldown from the cluster's state", mod: func(*Config) {}, setup: func(h *harness) {
			h.saveRecords(Record{Rule: "whisker", Action: ActionDeletePod, Target: "calico-system/whisker-a", Time: t0.Add(-10 * time.Minute)})
		}, reason: SkipCooldown, detail: "cooldown 30m"},
		{name: "rule budget exhausted", mod: func(c *Config) { c.Rules[0].MaxActions = 1 }, setup: func(h *harness) {
			h.saveRecords(Record{Rule: "whisker", Action: ActionDeletePod, Target: "calico-system/whisker-z", Time: t0.Add(-time.Hour)})
		}, reason: SkipRuleBudget, detail: "max_actions 1"},
		{name: "storm guard", mod: func(*Config) {}, setup: func(h *harness) {
			var recs []Record
			for i := range 10 {
				recs = append(recs, Record{Rule: "other", Action: ActionDeletePod, Target: "x/p", Time: t0.Add(-time.Duration(i+1) * time.Minute)})
			}
			h.saveRecords(recs...)
		}, reason: SkipStormGuard, detail: "storm_guard.max_actions 10"},
		{name: "pod already replaced", mod: func(*Config) {}, setup: func(h *harness) {
			p, _ := h.cs.CoreV1().Pods("calico-system").Get(context.Background(), "whisker-a", metav1.GetOptions{})
			p.CreationTimestamp = now
			_, _ = h.cs.CoreV1().Pods("calico-system").Update(context.Background(), p, metav1.UpdateOptions{})
		}, reason: SkipAlreadyReplaced, detail: "after the condition began"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, "", whiskerPod("whisker-a", t0.Add(-time.Hour)))
			h.prom.set(whiskerExpr, wedged("whisker-a"))
			h.prom.set(whiskerHistory, held(map[string]string{"whisker-a": "10"}))
			h.prom.set(goldmaneGuard, guardOK)
			tc.setup(h)
			h.cs.ClearActions()
			p := h.planEngine(true, Links{}, tc.mod).Plan(context.Background())
			a := candidatePlan(t, p, "calico-system/whisker-a")
			if a.Decision != DecisionSkip || a.Reason != tc.reason || !strings.Contains(a.Detail, tc.detail) {
				t.Errorf("got %+v, want skip %s (%s)", a, tc.reason, tc.detail)
			}
			if tc.reason == SkipCooldown && (a.CooldownUntil == nil || !a.CooldownUntil.Equal(t0.Add(20*time.Minute))) {
				t.Errorf("cooldown until %v, want the record's time + 30m", a.CooldownUntil)
			}
			var text bytes.Buffer
			_ = p.WriteText(&text)
			if want := "    → skip, " + tc.reason + " (" + reasonText(tc.reason) + "): "; !strings.Contains(text.String(), want) {
				t.Errorf("text plan lacks %q:\n%s", want, text.String())
			}
			for _, a := range h.cs.Actions() {
				if a.GetVerb() != "get" && a.GetVerb() != "list" {
					t.Errorf("plan made a %s %s call", a.GetVerb(), a.GetResource().Resource)
				}
			}
		})
	}
}

// The cluster's records count in a plan even when nothing fires: the
// budget shown is what the real remediator has left.
func TestPlanReadsStateWhenNothingFires(t *testing.T) {
	h := newHarness(t, "")
	h.saveRecords(Record{Rule: "whisker", Action: ActionDeletePod, Target: "calico-system/whisker-z", Time: t0.Add(-30 * time.Minute)})
	p := h.planEngine(true, Links{}).Plan(context.Background())
	if b := p.Rules[0].Budget; b.Used != 1 || b.Left() != 4 {
		t.Errorf("budget %+v, want 1 used of 5", b)
	}
	// The plan checks guards even with no candidate; the fake Prometheus
	// answers this one with an empty vector.
	if g := p.Rules[0].Guards; len(g) != 1 || g[0].Result != GuardFailed || !strings.Contains(g[0].Detail, "returned no sample") {
		t.Errorf("guards %+v", g)
	}
	if p.StormGuard.Used != 1 {
		t.Errorf("storm guard %+v", p.StormGuard)
	}
}

// Query problems: an error makes the plan incomplete; warnings, a stale
// sample and a failed history lookup are reasons, shown, not failures.
func TestPlanQueryProblems(t *testing.T) {
	t.Run("error", func(t *testing.T) {
		h := newHarness(t, "")
		h.prom.set(whiskerExpr, promReply{apiError: "parse error: unexpected <EOF>"})
		p := h.planEngine(false, Links{}).Plan(context.Background())
		if len(p.Errors) != 1 || !strings.Contains(p.Errors[0], "parse error") {
			t.Errorf("errors %v", p.Errors)
		}
		var text bytes.Buffer
		_ = p.WriteText(&text)
		if !strings.Contains(text.String(), "  ERROR:  ") || !strings.Contains(text.String(), "→ no action for this rule") {
			t.Errorf("text plan:\n%s", text.String())
		}
	})
	t.Run("warnings", func(t *testing.T) {
		h := newHarness(t, "")
		r := wedged("whisker-a")
		r.warnings = []string{"partial response"}
		h.prom.set(whiskerExpr, r)
		p := h.planEngine(false, Links{}).Plan(context.Background())
		if len(p.Errors) != 0 || !strings.Contains(p.Rules[0].Error, "partial response") {
			t.Errorf("errors %v, rule error %q", p.Errors, p.Rules[0].Error)
		}
	})
	t.Run("stale sample", func(t *testing.T) {
		h := newHarness(t, "")
		r := wedged("whisker-a")
		r.age = time.Hour
		h.prom.set(whiskerExpr, r)
		p := h.planEngine(false, Links{}).Plan(context.Background())
		if len(p.Rules[0].Candidates) != 0 || !strings.Contains(p.Rules[0].Ignored, SkipStaleSample) {
			t.Errorf("rule %+v", p.Rules[0])
		}
	})
	t.Run("history unavailable", func(t *testing.T) {
		h := newHarness(t, "")
		h.prom.set(whiskerExpr, wedged("whisker-a"))
		h.prom.set(whiskerHistory, promReply{status: 503})
		h.prom.set(goldmaneGuard, guardOK)
		p := h.planEngine(false, Links{}).Plan(context.Background())
		a := candidatePlan(t, p, "calico-system/whisker-a")
		if a.Decision != DecisionWait || !strings.Contains(a.History, "could not ask Prometheus how long it held") {
			t.Errorf("a history it cannot read is no history (fail closed): %+v", a)
		}
	})
}

func TestPlanNeedsDryRun(t *testing.T) {
	h := newHarness(t, "")
	cfg := testConfig(t, h.prom.URL, "")
	src, _ := NewPrometheusSource(cfg.Prometheus)
	if _, err := NewEngine(Options{Config: cfg, Source: src, Plan: true}); err == nil {
		t.Error("a plan-mode engine that may act was built")
	}
}

// saveRecords writes records into the harness's state ConfigMap, as a
// remediator in the cluster would have.
func (h *harness) saveRecords(recs ...Record) {
	h.t.Helper()
	if err := h.store.Save(context.Background(), recs); err != nil {
		h.t.Fatal(err)
	}
}
