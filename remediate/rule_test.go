package remediate

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	k8stesting "k8s.io/client-go/testing"
)

func TestWhiskerFiresAfterForWhenGuardHolds(t *testing.T) {
	h := newHarness(t, "", whiskerPod("whisker-a", t0.Add(-time.Hour)))
	h.prom.set(whiskerExpr, wedged("whisker-a"))
	h.prom.set(goldmaneGuard, guardOK)

	h.at(0)
	h.at(5 * time.Minute)
	h.at(9*time.Minute + 59*time.Second)
	if w := h.writes(); len(w) != 0 {
		t.Fatalf("acted before `for` elapsed: %s", joined(w))
	}
	if got := testutil.ToFloat64(h.engine.metrics.pending.WithLabelValues("whisker")); got != 1 {
		t.Errorf("pending = %v, want 1", got)
	}
	h.at(10 * time.Minute)
	dels := h.deletes()
	if len(dels) != 1 || dels[0].GetName() != "whisker-a" {
		t.Fatalf("want one delete of whisker-a, got %s", joined(h.writes()))
	}
	pre := dels[0].GetDeleteOptions().Preconditions
	if pre == nil || pre.UID == nil || *pre.UID != "uid-whisker-a" {
		t.Errorf("delete without UID precondition: %+v", pre)
	}
	if h.result("whisker", ActionDeletePod, ResultSuccess) != 1 {
		t.Errorf("success not counted")
	}
	if ev := h.events(ReasonDeleted); len(ev) != 1 || ev[0].InvolvedObject.Name != "whisker-a" || ev[0].InvolvedObject.UID != "uid-whisker-a" {
		t.Errorf("events %s: %+v", ReasonDeleted, ev)
	}
	if got := testutil.ToFloat64(h.engine.metrics.lastAction.WithLabelValues("whisker")); got != float64(t0.Add(10*time.Minute).Unix()) {
		t.Errorf("last action timestamp = %v", got)
	}
	// The pod is gone; its name keeps a cooldown even if the series lingers.
	h.at(11 * time.Minute)
	h.at(25 * time.Minute)
	if n := len(h.deletes()); n != 1 {
		t.Errorf("deletes = %d, want 1", n)
	}
	if got := h.result("whisker", ActionDeletePod, "skipped_"+SkipCooldown); got != 1 {
		t.Errorf("skipped_cooldown = %v, want 1", got)
	}
}

func TestBelowThresholdOrDisappearingCandidateResets(t *testing.T) {
	h := newHarness(t, "", whiskerPod("whisker-a", t0.Add(-time.Hour)))
	h.prom.set(goldmaneGuard, guardOK)
	h.prom.set(whiskerExpr, wedged("whisker-a"))
	h.at(0)
	h.prom.set(whiskerExpr, promReply{}) // errors fell below the threshold
	h.at(5 * time.Minute)
	h.prom.set(whiskerExpr, wedged("whisker-a"))
	h.at(6 * time.Minute)
	h.at(15 * time.Minute)
	if w := h.writes(); len(w) != 0 {
		t.Fatalf("a candidate that disappeared must start over: %s", joined(w))
	}
	h.at(16 * time.Minute)
	if n := len(h.deletes()); n != 1 {
		t.Fatalf("deletes = %d, want 1 after a full `for` since reappearing", n)
	}
}

func TestGuardFailsClosed(t *testing.T) {
	for _, tc := range []struct {
		name   string
		guard  promReply
		reason string
	}{
		{"guard empty (goldmane not ready)", promReply{}, SkipGuardFailed},
		{"guard query error", promReply{apiError: "parse error"}, SkipGuardError},
		{"guard 503", promReply{status: http.StatusServiceUnavailable}, SkipGuardError},
		{"guard with warnings", promReply{samples: guardOK.samples, warnings: []string{"partial response"}}, SkipGuardError},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, "", whiskerPod("whisker-a", t0.Add(-time.Hour)))
			h.prom.set(whiskerExpr, wedged("whisker-a"))
			h.prom.set(goldmaneGuard, tc.guard)
			h.at(0)
			h.at(10 * time.Minute)
			h.at(11 * time.Minute)
			if w := h.writes(); len(w) != 0 {
				t.Fatalf("acted although the guard did not hold: %s", joined(w))
			}
			if got := h.result("whisker", ActionDeletePod, "skipped_"+tc.reason); got != 2 {
				t.Errorf("skipped_%s = %v, want 2", tc.reason, got)
			}
		})
	}
}

func TestPrometheusFailuresFailClosed(t *testing.T) {
	for _, tc := range []struct {
		name  string
		reply promReply
	}{
		{"503", promReply{status: http.StatusServiceUnavailable}},
		{"api error", promReply{apiError: "query timed out"}},
		{"warnings only", promReply{warnings: []string{"remote read failed"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, "", whiskerPod("whisker-a", t0.Add(-time.Hour)))
			h.prom.set(goldmaneGuard, guardOK)
			h.prom.set(whiskerExpr, wedged("whisker-a"))
			h.at(0)
			h.prom.set(whiskerExpr, tc.reply)
			h.at(10 * time.Minute)
			h.at(20 * time.Minute)
			if w := h.writes(); len(w) != 0 {
				t.Fatalf("acted without a successful query: %s", joined(w))
			}
			if got := testutil.ToFloat64(h.engine.metrics.queryErrors.WithLabelValues("whisker")); got != 2 {
				t.Errorf("query errors = %v, want 2", got)
			}
			if got := h.result("whisker", ActionDeletePod, "skipped_"+SkipQueryError); got != 2 {
				t.Errorf("skipped_query_error = %v, want 2", got)
			}
		})
	}
	t.Run("unreachable", func(t *testing.T) {
		h := newHarness(t, "", whiskerPod("whisker-a", t0.Add(-time.Hour)))
		h.prom.Close()
		h.at(0)
		h.at(20 * time.Minute)
		if w := h.writes(); len(w) != 0 {
			t.Fatalf("acted with Prometheus down: %s", joined(w))
		}
		if got := h.result("whisker", ActionDeletePod, "skipped_"+SkipQueryError); got != 2 {
			t.Errorf("skipped_query_error = %v, want 2", got)
		}
	})
}

func TestLivePodChecksFailClosed(t *testing.T) {
	old := t0.Add(-time.Hour)
	other := whiskerPod("whisker-a", old)
	other.Labels = map[string]string{"k8s-app": "something-else"}
	replaced := whiskerPod("whisker-a", t0.Add(5*time.Minute))
	terminating := whiskerPod("whisker-a", old)
	now := metav1.NewTime(t0)
	terminating.DeletionTimestamp = &now
	terminating.Finalizers = []string{"x"}
	for _, tc := range []struct {
		name   string
		pod    *corev1.Pod
		series promReply
		reason string
	}{
		{"pod gone", nil, wedged("whisker-a"), SkipPodGone},
		{"selector mismatch", other, wedged("whisker-a"), SkipSelectorMismatch},
		{"created after pending-since", replaced, wedged("whisker-a"), SkipAlreadyReplaced},
		{"terminating", terminating, wedged("whisker-a"), SkipPodTerminating},
		{"namespace not allowed", nil, promReply{samples: []map[string]string{{"namespace": "kube-system", "pod": "whisker-a"}}}, SkipNamespace},
		{"missing labels", nil, promReply{samples: []map[string]string{{"pod": "whisker-a"}}}, SkipMissingLabels},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var pods []*corev1.Pod
			if tc.pod != nil {
				pods = append(pods, tc.pod)
			}
			h := newHarness(t, "", pods...)
			h.prom.set(goldmaneGuard, guardOK)
			h.prom.set(whiskerExpr, tc.series)
			h.at(0)
			h.at(10 * time.Minute)
			if w := h.writes(); len(w) != 0 {
				t.Fatalf("acted: %s", joined(w))
			}
			if got := h.result("whisker", ActionDeletePod, "skipped_"+tc.reason); got < 1 {
				t.Errorf("skipped_%s not counted", tc.reason)
			}
		})
	}
}

func TestCooldownAndBudgets(t *testing.T) {
	t.Run("cooldown per target", func(t *testing.T) {
		h := newHarness(t, "", whiskerPod("whisker-a", t0.Add(-time.Hour)))
		// The delete "succeeds" but the pod stays (a wedged finalizer, say).
		h.cs.PrependReactor("delete", "pods", func(k8stesting.Action) (bool, runtime.Object, error) { return true, nil, nil })
		h.prom.set(goldmaneGuard, guardOK)
		h.prom.set(whiskerExpr, wedged("whisker-a"))
		h.at(0)
		h.at(10 * time.Minute) // acts
		h.at(20 * time.Minute) // `for` held again, but in cooldown
		h.at(39 * time.Minute)
		if n := len(h.deletes()); n != 1 {
			t.Fatalf("deletes = %d, want 1 inside the cooldown", n)
		}
		if got := h.result("whisker", ActionDeletePod, "skipped_"+SkipCooldown); got != 2 {
			t.Errorf("skipped_cooldown = %v, want 2", got)
		}
		h.at(40 * time.Minute)
		if n := len(h.deletes()); n != 2 {
			t.Fatalf("deletes = %d, want 2 after the cooldown", n)
		}
	})
	t.Run("rule budget", func(t *testing.T) {
		pods := []*corev1.Pod{whiskerPod("a", t0.Add(-time.Hour)), whiskerPod("b", t0.Add(-time.Hour)), whiskerPod("c", t0.Add(-time.Hour))}
		h := newHarness(t, "", pods...)
		h.engine = h.newEngine(testConfig(t, h.prom.URL, ""), true)
		h.engine.cfg.Rules[0].MaxActions = 2
		h.prom.set(goldmaneGuard, guardOK)
		h.prom.set(whiskerExpr, wedged("a", "b", "c"))
		h.at(0)
		h.at(10 * time.Minute)
		if n := len(h.deletes()); n != 2 {
			t.Fatalf("deletes = %d, want max_actions 2", n)
		}
		if got := h.result("whisker", ActionDeletePod, "skipped_"+SkipRuleBudget); got != 1 {
			t.Errorf("skipped_rule_budget = %v, want 1", got)
		}
	})
	t.Run("storm guard across rules", func(t *testing.T) {
		h := newHarness(t, `  - name: whisker_too
    expr: 'second_rule'
    action: delete_pod
    namespaces: [calico-system]
`, whiskerPod("a", t0.Add(-time.Hour)), whiskerPod("b", t0.Add(-time.Hour)))
		h.engine.cfg.StormGuard.MaxActions = 1
		h.prom.set(goldmaneGuard, guardOK)
		h.prom.set(whiskerExpr, wedged("a"))
		h.prom.set("second_rule", wedged("b"))
		h.at(0)
		h.at(10 * time.Minute)
		if n := len(h.deletes()); n != 1 {
			t.Fatalf("deletes = %d, want 1 (storm guard)", n)
		}
		// whisker_too (no `for`) acted at once on b; whisker's turn on a is
		// refused by the global cap.
		if d := h.deletes(); len(d) == 1 && d[0].GetName() != "b" {
			t.Errorf("deleted %s, want b", d[0].GetName())
		}
		if got := h.result("whisker", ActionDeletePod, "skipped_"+SkipStormGuard); got != 1 {
			t.Errorf("skipped_storm_guard = %v, want 1", got)
		}
	})
}

func TestDryRun(t *testing.T) {
	for _, tc := range []struct{ name, extra string }{
		{"per rule", "    dry_run: true\n"},
		{"global", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, tc.extra, whiskerPod("whisker-a", t0.Add(-time.Hour)))
			if tc.extra == "" {
				h.engine.cfg.DryRun = true
			}
			h.prom.set(goldmaneGuard, guardOK)
			h.prom.set(whiskerExpr, wedged("whisker-a"))
			h.at(0)
			h.at(10 * time.Minute)
			h.at(20 * time.Minute)
			if w := h.writes(); len(w) != 0 {
				t.Fatalf("dry run wrote: %s", joined(w))
			}
			if got := h.result("whisker", ActionDeletePod, ResultDryRun); got != 1 {
				t.Errorf("dry_run = %v, want 1", got)
			}
			if got := h.result("whisker", ActionDeletePod, "skipped_"+SkipCooldown); got != 1 {
				t.Errorf("a dry run simulates its cooldown: skipped_cooldown = %v, want 1", got)
			}
			for _, a := range h.cs.Actions() {
				if a.GetVerb() != "get" && a.GetVerb() != "list" {
					t.Errorf("dry run made a %s %s call", a.GetVerb(), a.GetResource().Resource)
				}
			}
			// A real run after the dry run is not held back by it.
			h.engine.cfg.DryRun = false
			h.engine.cfg.Rules[0].DryRun = false
			h.at(30 * time.Minute)
			if n := len(h.deletes()); n != 1 {
				t.Errorf("deletes after leaving dry run = %d, want 1", n)
			}
		})
	}
}

func TestActionErrors(t *testing.T) {
	gr := schema.GroupResource{Resource: "pods"}
	for _, tc := range []struct {
		name, action, verb, sub string
		err                     error
		result                  string
	}{
		{"eviction blocked by PDB", ActionEvictPod, "create", "eviction", apierrors.NewTooManyRequests("Cannot evict pod as it would violate the pod's disruption budget.", 0), ResultBlocked},
		{"UID mismatch", ActionDeletePod, "delete", "", apierrors.NewConflict(gr, "whisker-a", nil), ResultConflict},
		{"forbidden", ActionDeletePod, "delete", "", apierrors.NewForbidden(gr, "whisker-a", nil), ResultForbidden},
		{"evict forbidden", ActionEvictPod, "create", "eviction", apierrors.NewForbidden(gr, "whisker-a", nil), ResultForbidden},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, "", whiskerPod("whisker-a", t0.Add(-time.Hour)))
			h.engine.cfg.Rules[0].Action = tc.action
			h.engine = h.newEngine(h.engine.cfg, true)
			h.cs.PrependReactor(tc.verb, "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
				if a.GetSubresource() != tc.sub {
					return false, nil, nil
				}
				return true, nil, tc.err
			})
			h.prom.set(goldmaneGuard, guardOK)
			h.prom.set(whiskerExpr, wedged("whisker-a"))
			h.at(0)
			h.at(10 * time.Minute)
			h.at(11 * time.Minute) // a failed attempt spends no cooldown: retried next interval
			if got := h.result("whisker", tc.action, tc.result); got != 2 {
				t.Errorf("%s = %v, want 2", tc.result, got)
			}
			if got := h.result("whisker", tc.action, ResultSuccess); got != 0 {
				t.Errorf("success = %v", got)
			}
			recs, err := h.store.Load(context.Background())
			if err != nil || len(recs) != 0 {
				t.Errorf("failed action left records %v (err %v)", recs, err)
			}
			reason := ReasonFailed
			if tc.result == ResultBlocked {
				reason = ReasonBlocked
			}
			if n := len(h.events(reason)); n != 2 {
				t.Errorf("%d %s events, want 2 (one per failed attempt)", n, reason)
			}
			if reason == ReasonBlocked && len(h.events(ReasonFailed)) != 0 {
				t.Errorf("a PDB refusal is %s, not %s", ReasonBlocked, ReasonFailed)
			}
		})
	}
}

func TestEvictUsesUIDPrecondition(t *testing.T) {
	h := newHarness(t, "", whiskerPod("whisker-a", t0.Add(-time.Hour)))
	h.engine.cfg.Rules[0].Action = ActionEvictPod
	h.engine = h.newEngine(h.engine.cfg, true)
	var uid string
	h.cs.PrependReactor("create", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if a.GetSubresource() == "eviction" {
			if e, ok := a.(k8stesting.CreateAction).GetObject().(*policyv1.Eviction); ok && e.DeleteOptions != nil && e.DeleteOptions.Preconditions != nil {
				uid = string(*e.DeleteOptions.Preconditions.UID)
			}
		}
		return false, nil, nil
	})
	h.prom.set(goldmaneGuard, guardOK)
	h.prom.set(whiskerExpr, wedged("whisker-a"))
	h.at(0)
	h.at(10 * time.Minute)
	if uid != "uid-whisker-a" {
		t.Errorf("eviction precondition UID = %q", uid)
	}
	if h.result("whisker", ActionEvictPod, ResultSuccess) != 1 || len(h.events(ReasonEvicted)) != 1 {
		t.Errorf("eviction not counted or no %s event", ReasonEvicted)
	}
}

func TestRolloutRestart(t *testing.T) {
	ctx := context.Background()
	pod := whiskerPod("whisker-5d8-abc", t0.Add(-time.Hour))
	yes := true
	pod.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "whisker-5d8", UID: "rs-uid", Controller: &yes}}
	h := newHarness(t, "", pod)
	rs := &appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Name: "whisker-5d8", Namespace: "calico-system", UID: "rs-uid",
		OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "Deployment", Name: "whisker", UID: "d-uid", Controller: &yes}}}}
	dep := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "whisker", Namespace: "calico-system", UID: "d-uid"}}
	if _, err := h.cs.AppsV1().ReplicaSets("calico-system").Create(ctx, rs, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.cs.AppsV1().Deployments("calico-system").Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	h.engine.cfg.Rules[0].Action = ActionRolloutRestart
	h.engine = h.newEngine(h.engine.cfg, true)
	h.prom.set(goldmaneGuard, guardOK)
	h.prom.set(whiskerExpr, wedged("whisker-5d8-abc"))
	h.at(0)
	h.at(10 * time.Minute)
	got, err := h.cs.AppsV1().Deployments("calico-system").Get(ctx, "whisker", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if v := got.Spec.Template.Annotations[restartedAtAnnotation]; v != t0.Add(10*time.Minute).Format(time.RFC3339) {
		t.Fatalf("restartedAt = %q", v)
	}
	if ev := h.events(ReasonRolloutRestarted); len(ev) != 1 || ev[0].InvolvedObject.Kind != "Deployment" {
		t.Errorf("events: %+v", ev)
	}
	// A pod without a controller cannot be rollout-restarted.
	orphan := whiskerPod("orphan", t0.Add(-time.Hour))
	if _, err := resolveOwner(ctx, h.cs, orphan); err == nil || !strings.Contains(err.Error(), "no owning") {
		t.Errorf("orphan: %v", err)
	}
}

func TestStateSurvivesRestart(t *testing.T) {
	h := newHarness(t, "", whiskerPod("whisker-a", t0.Add(-time.Hour)))
	h.cs.PrependReactor("delete", "pods", func(k8stesting.Action) (bool, runtime.Object, error) { return true, nil, nil })
	h.prom.set(goldmaneGuard, guardOK)
	h.prom.set(whiskerExpr, wedged("whisker-a"))
	h.at(0)
	h.at(10 * time.Minute)
	if n := len(h.deletes()); n != 1 {
		t.Fatalf("deletes = %d", n)
	}
	cm, err := h.cs.CoreV1().ConfigMaps("greybox").Get(context.Background(), "state", metav1.GetOptions{})
	if err != nil || !strings.Contains(cm.Data[stateKey], `"whisker-a"`) && !strings.Contains(cm.Data[stateKey], `calico-system/whisker-a`) {
		t.Fatalf("state not persisted: %v %v", cm, err)
	}
	// A new process: fresh engine, same cluster.
	h.engine = h.newEngine(testConfig(t, h.prom.URL, ""), true)
	h.at(11 * time.Minute)
	h.at(25 * time.Minute) // `for` held again in the new process; cooldown from the old one
	if n := len(h.deletes()); n != 1 {
		t.Fatalf("restarted remediator ignored the cooldown: deletes = %d", n)
	}
	if got := h.result("whisker", ActionDeletePod, "skipped_"+SkipCooldown); got != 1 {
		t.Errorf("skipped_cooldown = %v, want 1", got)
	}
	// A corrupt state fails closed.
	cm.Data[stateKey] = "{not json"
	if _, err := h.cs.CoreV1().ConfigMaps("greybox").Update(context.Background(), cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	h.at(45 * time.Minute)
	if n := len(h.deletes()); n != 1 {
		t.Fatalf("acted with unreadable state")
	}
	if got := h.result("whisker", ActionDeletePod, "skipped_"+SkipStateError); got != 1 {
		t.Errorf("skipped_state_error = %v, want 1", got)
	}
}

// Run evaluates at once and then on every tick of the (fake) clock.
func TestRunEvaluatesEveryInterval(t *testing.T) {
	h := newHarness(t, "", whiskerPod("whisker-a", t0.Add(-time.Hour)))
	h.prom.set(goldmaneGuard, guardOK)
	h.prom.set(whiskerExpr, wedged("whisker-a"))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); h.engine.Run(ctx) }()
	evals := func() float64 { return testutil.ToFloat64(h.engine.metrics.evaluations.WithLabelValues("whisker")) }
	// A round is complete once it stamped the clock's current time.
	finished := func() bool {
		return testutil.ToFloat64(h.engine.metrics.lastEvaluation) == float64(h.clock.Now().Unix())
	}
	waitUntil := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.After(10 * time.Second)
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for !cond() {
			select {
			case <-deadline:
				t.Fatalf("timed out waiting for %s", what)
			case <-tick.C:
			}
		}
	}
	waitUntil("first evaluation", func() bool { return evals() == 1 && finished() })
	for i := 2; i <= 11; i++ {
		h.clock.Step(time.Minute)
		waitUntil(fmt.Sprintf("evaluation %d", i), func() bool { return evals() == float64(i) && finished() })
	}
	cancel()
	<-done
	if n := len(h.deletes()); n != 1 {
		t.Errorf("deletes after 10 intervals = %d, want 1", n)
	}
}
