package remediate

// Hostile environments: a Prometheus, a Kubernetes API and a state store
// that fail, lie or hang. In every case the remediator takes no action it
// cannot justify, says why (a skip metric, the log, the status page), and
// leaves no goroutine behind.

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
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/model"
	"go.uber.org/goleak"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	k8stesting "k8s.io/client-go/testing"
)

// noLeaks fails the test if it leaves a goroutine behind. Call it first:
// cleanups run last-in first-out, so the check comes after the servers
// closed and their connections dropped.
func noLeaks(t *testing.T) {
	t.Helper()
	opts := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, opts) })
}

// hangBound is the evaluation interval of the tests with a hanging
// upstream: every call is bounded by it, so a hang costs this long.
const hangBound = 2 * time.Second

// bounded moves the clock to t0+d and evaluates once; the evaluation must
// return even though an upstream hangs. The deadline only turns a hung test
// into a failure, it asserts no timing.
func (h *harness) bounded(d time.Duration) {
	h.t.Helper()
	h.clock.SetTime(t0.Add(d))
	done := make(chan struct{})
	go func() { defer close(done); h.engine.Evaluate(context.Background()) }()
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		h.t.Fatal("the evaluation did not return: a hung upstream is not bounded")
	}
}

// hangProof sets a long prometheus.timeout and a short evaluation
// interval: only a bound derived from the interval stops a hang in time.
func (h *harness) hangProof() {
	h.t.Helper()
	cfg := h.engine.cfg
	cfg.EvaluationInterval = model.Duration(hangBound)
	cfg.Prometheus.Timeout = model.Duration(time.Hour)
	h.engine = h.newEngine(cfg, true)
}

func (h *harness) logHas(t *testing.T, subs ...string) {
	t.Helper()
	logs := h.logs.String()
	for _, s := range subs {
		if !strings.Contains(logs, s) {
			t.Errorf("log lacks %q:\n%s", s, logs)
		}
	}
}

func (h *harness) statusPage() string {
	rec := httptest.NewRecorder()
	h.engine.StatusHandler("test").ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	return rec.Body.String()
}

func wedgedValue(v string) promReply {
	r := wedged("whisker-a")
	r.samples[0]["__value__"] = v
	return r
}

func TestHostilePrometheus(t *testing.T) {
	stale := wedged("whisker-a")
	stale.age = 10 * time.Minute
	withWarnings := wedged("whisker-a")
	withWarnings.warnings = []string{"remote read: partial response"}
	for _, tc := range []struct {
		name   string
		reply  promReply
		reason string // the skip counted
		detail string // what the log says about it
		// resets: the sample is not a candidate, so the pending candidate
		// starts over; a failed query keeps it pending (as Prometheus keeps
		// alerts) but acts on nothing.
		resets bool
	}{
		{"500 with an error body", promReply{apiError: "query processing would load too many samples", apiStatus: http.StatusInternalServerError}, SkipQueryError, "too many samples", false},
		{"503", promReply{status: http.StatusServiceUnavailable}, SkipQueryError, "503", false},
		{"hangs", promReply{hang: true}, SkipQueryError, "deadline exceeded", false},
		{"malformed JSON", promReply{body: `{"status":"success","data":{"resultType":"vector","result":[{"metric":`}, SkipQueryError, "", false},
		{"not JSON at all", promReply{body: "<html>502 Bad Gateway</html>"}, SkipQueryError, "", false},
		{"matrix result", promReply{body: `{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"namespace":"calico-system","pod":"whisker-a"},"values":[[1,"12"]]}]}}`}, SkipQueryError, "want an instant vector", false},
		{"scalar result", promReply{body: `{"status":"success","data":{"resultType":"scalar","result":[1,"12"]}}`}, SkipQueryError, "want an instant vector", false},
		{"string result", promReply{body: `{"status":"success","data":{"resultType":"string","result":[1,"whisker-a"]}}`}, SkipQueryError, "string", false},
		{"success without data", promReply{body: `{"status":"success"}`}, SkipQueryError, "", false},
		{"warnings with data", withWarnings, SkipQueryError, "partial", false},
		{"warnings without data", promReply{warnings: []string{"remote read failed"}}, SkipQueryError, "remote read failed", false},
		{"NaN", wedgedValue("NaN"), SkipInvalidValue, "is not a number", true},
		{"+Inf", wedgedValue("+Inf"), SkipInvalidValue, "is not a number", true},
		{"-Inf", wedgedValue("-Inf"), SkipInvalidValue, "is not a number", true},
		{"stale timestamps", stale, SkipStaleSample, "max_sample_age 5m", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			noLeaks(t)
			h := newHarness(t, "", whiskerPod("whisker-a", t0.Add(-time.Hour)))
			h.hangProof()
			h.prom.set(goldmaneGuard, guardOK)
			h.prom.set(whiskerExpr, wedged("whisker-a"))
			h.bounded(0)
			h.prom.set(whiskerExpr, tc.reply)
			h.bounded(10 * time.Minute) // `for` held: would act on a sound answer
			if w := h.writes(); len(w) != 0 {
				t.Fatalf("acted on a hostile answer: %s", joined(w))
			}
			if got := h.result("whisker", ActionDeletePod, "skipped_"+tc.reason); got != 1 {
				t.Errorf("skipped_%s = %v, want 1", tc.reason, got)
			}
			h.logHas(t, "reason="+tc.reason, tc.detail)
			rules, _ := h.engine.Status()
			if st := rules[0]; tc.resets && !strings.Contains(st.Ignored, tc.reason) || !tc.resets && st.LastError == "" {
				t.Errorf("status page does not say why: error %q, ignored %q", st.LastError, st.Ignored)
			}
			if tc.resets {
				if got := testutil.ToFloat64(h.engine.metrics.pending.WithLabelValues("whisker")); got != 0 {
					t.Errorf("pending = %v, want 0: an invalid sample is no candidate", got)
				}
			} else if got := testutil.ToFloat64(h.engine.metrics.queryErrors.WithLabelValues("whisker")); got != 1 {
				t.Errorf("query errors = %v, want 1", got)
			}

			// Prometheus recovers. A failed query kept the candidate pending;
			// an invalid sample made it start over.
			h.prom.set(whiskerExpr, wedged("whisker-a"))
			h.bounded(11 * time.Minute)
			want := 1
			if tc.resets {
				want = 0
			}
			if n := len(h.deletes()); n != want {
				t.Fatalf("deletes after recovery = %d, want %d", n, want)
			}
			if tc.resets {
				h.bounded(21 * time.Minute)
				if n := len(h.deletes()); n != 1 {
					t.Fatalf("deletes a full `for` after recovery = %d, want 1", n)
				}
			}
		})
	}
}

// A series with a valid sample is a candidate even when another series of
// the same pod is NaN; the NaN one is counted and ignored.
func TestNaNSeriesBesideAValidOne(t *testing.T) {
	noLeaks(t)
	h := newHarness(t, "", whiskerPod("whisker-a", t0.Add(-time.Hour)))
	h.prom.set(goldmaneGuard, guardOK)
	r := wedged("whisker-a", "whisker-a")
	r.samples[0]["__value__"], r.samples[0]["container"] = "NaN", "other"
	h.prom.set(whiskerExpr, r)
	h.at(0)
	h.at(10 * time.Minute)
	if n := len(h.deletes()); n != 1 {
		t.Fatalf("deletes = %d, want 1", n)
	}
	if got := h.result("whisker", ActionDeletePod, "skipped_"+SkipInvalidValue); got != 2 {
		t.Errorf("skipped_invalid_value = %v, want 2", got)
	}
}

func TestHostileGuards(t *testing.T) {
	staleGuard := guardOK
	staleGuard.age = time.Hour
	mixed := promReply{samples: []map[string]string{{"dependency": "goldmane", "__value__": "NaN"}, {"dependency": "goldmane", "instance": "b"}}}
	for _, tc := range []struct {
		name   string
		guard  promReply
		reason string // "" the guard holds
		detail string
	}{
		{"only NaN", promReply{samples: []map[string]string{{"dependency": "goldmane", "__value__": "NaN"}}}, SkipGuardFailed, "no valid sample"},
		{"only +Inf", promReply{samples: []map[string]string{{"dependency": "goldmane", "__value__": "+Inf"}}}, SkipGuardFailed, "no valid sample"},
		{"only stale", staleGuard, SkipGuardFailed, "max_sample_age"},
		{"hangs", promReply{hang: true}, SkipGuardError, "deadline exceeded"},
		{"500", promReply{apiError: "internal", apiStatus: http.StatusInternalServerError}, SkipGuardError, "internal"},
		{"malformed JSON", promReply{body: `{"status":"succ`}, SkipGuardError, "guard"},
		{"matrix", promReply{body: `{"status":"success","data":{"resultType":"matrix","result":[]}}`}, SkipGuardError, "want an instant vector"},
		{"one NaN, one valid", mixed, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			noLeaks(t)
			h := newHarness(t, "", whiskerPod("whisker-a", t0.Add(-time.Hour)))
			h.hangProof()
			h.prom.set(whiskerExpr, wedged("whisker-a"))
			h.prom.set(goldmaneGuard, tc.guard)
			h.bounded(0)
			h.bounded(10 * time.Minute)
			if tc.reason == "" {
				if n := len(h.deletes()); n != 1 {
					t.Fatalf("a guard with one valid sample holds: deletes = %d, want 1", n)
				}
				return
			}
			if w := h.writes(); len(w) != 0 {
				t.Fatalf("acted although the guard did not hold: %s", joined(w))
			}
			if got := h.result("whisker", ActionDeletePod, "skipped_"+tc.reason); got != 1 {
				t.Errorf("skipped_%s = %v, want 1", tc.reason, got)
			}
			h.logHas(t, "reason="+tc.reason, tc.detail)
			if page := h.statusPage(); !strings.Contains(page, "skipped_"+tc.reason) {
				t.Errorf("status page lacks skipped_%s", tc.reason)
			}
		})
	}
}

// stays makes a pod delete "succeed" while the pod stays (a stuck
// finalizer, say): only the remediator's own records stop a repeat.
func stays(h *harness) {
	h.cs.PrependReactor("delete", "pods", func(k8stesting.Action) (bool, runtime.Object, error) { return true, nil, nil })
}

// acceptAndForget makes the state ConfigMap accept writes without keeping
// them: every later Get answers what was there before (NotFound, or the
// old document).
func acceptAndForget(h *harness) {
	forget := func(a k8stesting.Action) (bool, runtime.Object, error) {
		var obj runtime.Object
		switch a := a.(type) {
		case k8stesting.CreateAction:
			obj = a.GetObject()
		case k8stesting.UpdateAction:
			obj = a.GetObject()
		}
		return true, obj, nil
	}
	h.cs.PrependReactor("create", "configmaps", forget)
	h.cs.PrependReactor("update", "configmaps", forget)
}

func stateConfigMap(t *testing.T, h *harness, doc string) {
	t.Helper()
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "state", Namespace: "greybox"}, Data: map[string]string{stateKey: doc}}
	if _, err := h.cs.CoreV1().ConfigMaps("greybox").Create(context.Background(), cm, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func docWith(t *testing.T, recs ...Record) string {
	t.Helper()
	b, err := json.Marshal(stateDoc{Version: stateVersion, Records: recs})
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// The incident: a state ConfigMap that accepts the write and then answers
// 404 made the remediator delete the same pod every second despite cooldown
// 30m, max_actions and the storm guard. What the process knows is never
// replaced by what the store returns, and a read that lacks it blocks.
func TestStateStoreThatForgetsItsWrites(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, h *harness)
	}{
		{"create accepted, then 404", func(t *testing.T, h *harness) { acceptAndForget(h) }},
		{"update accepted, then the old document", func(t *testing.T, h *harness) {
			stateConfigMap(t, h, docWith(t))
			acceptAndForget(h)
		}},
		{"update accepted, then 404", func(t *testing.T, h *harness) {
			stateConfigMap(t, h, docWith(t))
			var updated atomic.Bool
			h.cs.PrependReactor("update", "configmaps", func(k8stesting.Action) (bool, runtime.Object, error) {
				updated.Store(true)
				return false, nil, nil
			})
			h.cs.PrependReactor("get", "configmaps", func(a k8stesting.Action) (bool, runtime.Object, error) {
				if updated.Load() {
					return true, nil, apierrors.NewNotFound(schema.GroupResource{Resource: "configmaps"}, "state")
				}
				return false, nil, nil
			})
			acceptCreate := func(a k8stesting.Action) (bool, runtime.Object, error) {
				return true, a.(k8stesting.CreateAction).GetObject(), nil
			}
			h.cs.PrependReactor("create", "configmaps", acceptCreate)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			noLeaks(t)
			h := newHarness(t, "", whiskerPod("whisker-a", t0.Add(-time.Hour)))
			h.engine.cfg.Rules[0].For = 0
			stays(h)
			tc.setup(t, h)
			h.prom.set(goldmaneGuard, guardOK)
			h.prom.set(whiskerExpr, wedged("whisker-a"))
			for s := range 4 {
				h.at(time.Duration(s) * time.Second)
			}
			if n := len(h.deletes()); n != 1 {
				t.Fatalf("deletes = %d in 4 s, want 1 (cooldown 30m)", n)
			}
			if got := h.result("whisker", ActionDeletePod, "skipped_"+SkipStateError); got != 3 {
				t.Errorf("skipped_state_error = %v, want 3", got)
			}
			h.logHas(t, "reason="+SkipStateError, "lacks 1 action record")
			if !strings.Contains(h.engine.StateError(), "lacks") || !strings.Contains(h.statusPage(), "not trusted") {
				t.Errorf("status page does not show the state problem: %q", h.engine.StateError())
			}
			// Long after the cooldown the store still does not agree: the
			// remediator still does not act.
			h.at(2 * time.Hour)
			if n := len(h.deletes()); n != 1 {
				t.Fatalf("deletes = %d with a store that never agrees, want 1", n)
			}
		})
	}
}

func TestStateStoreFaultsBlockActing(t *testing.T) {
	huge := `{"version":1,"records":[],"pad":"` + strings.Repeat("x", maxStateBytes) + `"}`
	for _, tc := range []struct {
		name   string
		setup  func(t *testing.T, h *harness)
		detail string
	}{
		{"get 500", func(t *testing.T, h *harness) {
			h.cs.PrependReactor("get", "configmaps", func(k8stesting.Action) (bool, runtime.Object, error) {
				return true, nil, apierrors.NewInternalError(fmt.Errorf("etcdserver: request timed out"))
			})
		}, "request timed out"},
		{"create 500", func(t *testing.T, h *harness) {
			h.cs.PrependReactor("create", "configmaps", func(k8stesting.Action) (bool, runtime.Object, error) {
				return true, nil, apierrors.NewInternalError(fmt.Errorf("etcd down"))
			})
		}, "etcd down"},
		{"update 409", func(t *testing.T, h *harness) {
			stateConfigMap(t, h, docWith(t))
			h.cs.PrependReactor("update", "configmaps", func(k8stesting.Action) (bool, runtime.Object, error) {
				return true, nil, apierrors.NewConflict(schema.GroupResource{Resource: "configmaps"}, "state", fmt.Errorf("the object has been modified"))
			})
		}, "has been modified"},
		{"garbage JSON", func(t *testing.T, h *harness) { stateConfigMap(t, h, `{"version":1,"records":[{"rule":`) }, "state.json"},
		{"JSON of another shape", func(t *testing.T, h *harness) { stateConfigMap(t, h, `{"version":1,"records":{"a":1}}`) }, "state.json"},
		{"unknown version", func(t *testing.T, h *harness) { stateConfigMap(t, h, `{"version":7,"records":[]}`) }, "version 7"},
		{"huge document", func(t *testing.T, h *harness) { stateConfigMap(t, h, huge) }, "bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			noLeaks(t)
			h := newHarness(t, "", whiskerPod("whisker-a", t0.Add(-time.Hour)))
			tc.setup(t, h)
			h.prom.set(goldmaneGuard, guardOK)
			h.prom.set(whiskerExpr, wedged("whisker-a"))
			h.at(0)
			h.at(10 * time.Minute)
			h.at(11 * time.Minute)
			if n := len(h.deletes()); n != 0 {
				t.Fatalf("deletes = %d with a faulty state store", n)
			}
			if got := h.result("whisker", ActionDeletePod, "skipped_"+SkipStateError); got != 2 {
				t.Errorf("skipped_state_error = %v, want 2", got)
			}
			h.logHas(t, "reason="+SkipStateError, tc.detail)
			if !strings.Contains(h.statusPage(), "not trusted") {
				t.Error("status page does not show the state problem")
			}
		})
	}
}

// A write that fails after the reservation keeps the reservation: the
// write may have landed, and the process must not forget it may act. The
// store must show the record before anything is done again, and the
// cooldown counts from it.
func TestFailedSaveKeepsTheReservation(t *testing.T) {
	noLeaks(t)
	h := newHarness(t, "", whiskerPod("whisker-a", t0.Add(-time.Hour)))
	stays(h)
	stateConfigMap(t, h, docWith(t))
	var conflict atomic.Bool
	conflict.Store(true)
	h.cs.PrependReactor("update", "configmaps", func(k8stesting.Action) (bool, runtime.Object, error) {
		if conflict.Load() {
			return true, nil, apierrors.NewConflict(schema.GroupResource{Resource: "configmaps"}, "state", fmt.Errorf("the object has been modified"))
		}
		return false, nil, nil
	})
	h.prom.set(goldmaneGuard, guardOK)
	h.prom.set(whiskerExpr, wedged("whisker-a"))
	h.at(0)
	h.at(10 * time.Minute) // reserve, Save → 409: no action
	if n := len(h.deletes()); n != 0 {
		t.Fatalf("acted without a persisted record: deletes = %d", n)
	}
	conflict.Store(false)
	h.at(11 * time.Minute) // the store lacks the reservation: written back, still no action
	h.at(12 * time.Minute) // the store agrees; the reservation's cooldown holds
	if n := len(h.deletes()); n != 0 {
		t.Fatalf("the reservation was forgotten: deletes = %d", n)
	}
	if got := h.result("whisker", ActionDeletePod, "skipped_"+SkipStateError); got != 2 {
		t.Errorf("skipped_state_error = %v, want 2", got)
	}
	if got := h.result("whisker", ActionDeletePod, "skipped_"+SkipCooldown); got != 1 {
		t.Errorf("skipped_cooldown = %v, want 1", got)
	}
	if h.engine.StateError() != "" {
		t.Errorf("a read that agrees clears the state problem: %q", h.engine.StateError())
	}
	recs, err := h.store.Load(context.Background())
	if err != nil || len(recs) != 1 || recs[0].Target != "calico-system/whisker-a" || !recs[0].Time.Equal(t0.Add(10*time.Minute)) {
		t.Fatalf("stored records %+v (err %v), want the reservation", recs, err)
	}
	h.at(40 * time.Minute) // cooldown over: acting resumes
	if n := len(h.deletes()); n != 1 {
		t.Fatalf("deletes after the cooldown = %d, want 1", n)
	}
}

// A record from the future (a clock that was ahead) counts as recent: it
// is neither pruned nor ignored.
func TestFutureRecordCountsAsRecent(t *testing.T) {
	noLeaks(t)
	h := newHarness(t, "", whiskerPod("whisker-a", t0.Add(-time.Hour)), whiskerPod("whisker-b", t0.Add(-time.Hour)))
	future := Record{Rule: "whisker", Action: ActionDeletePod, Target: "calico-system/whisker-a", Object: "pod/calico-system/whisker-a", Time: t0.Add(30 * 24 * time.Hour)}
	stateConfigMap(t, h, docWith(t, future))
	h.engine.cfg.Rules[0].MaxActions = 2
	h.prom.set(goldmaneGuard, guardOK)
	h.prom.set(whiskerExpr, wedged("whisker-a", "whisker-b"))
	h.at(0)
	h.at(10 * time.Minute)
	dels := h.deletes()
	if len(dels) != 1 || dels[0].GetName() != "whisker-b" {
		t.Fatalf("want one delete of whisker-b, got %s", joined(h.writes()))
	}
	if got := h.result("whisker", ActionDeletePod, "skipped_"+SkipCooldown); got != 1 {
		t.Errorf("skipped_cooldown = %v, want 1 (the future record's target)", got)
	}
	h.logHas(t, "from the future")
	// The future record and the new one fill max_actions 2; the future
	// one survived the write.
	recs, err := h.store.Load(context.Background())
	if err != nil || len(recs) != 2 {
		t.Fatalf("stored records %+v (err %v), want the future one and the new one", recs, err)
	}
	if _, err := h.cs.CoreV1().Pods("calico-system").Create(context.Background(), whiskerPod("whisker-c", t0.Add(-time.Hour)), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	h.prom.set(whiskerExpr, wedged("whisker-a", "whisker-c"))
	h.at(11 * time.Minute)
	h.at(21 * time.Minute)
	if n := len(h.deletes()); n != 1 {
		t.Fatalf("deletes = %d, want 1: the future record counts against max_actions", n)
	}
	if got := h.result("whisker", ActionDeletePod, "skipped_"+SkipRuleBudget); got != 1 {
		t.Errorf("skipped_rule_budget = %v, want 1", got)
	}
}

func TestHostileEvictionAPI(t *testing.T) {
	for _, tc := range []struct {
		name     string
		err      error
		result   string
		attempts int  // eviction calls over two firing evaluations
		kept     bool // the record is kept: cooldown and budgets count it
	}{
		// A PDB refusal is definite: nothing happened, retry next interval.
		{"429 PodDisruptionBudget", apierrors.NewTooManyRequests("Cannot evict pod as it would violate the pod's disruption budget.", 0), ResultBlocked, 2, false},
		// A 500 does not say whether the eviction happened: count it.
		{"500", apierrors.NewInternalError(fmt.Errorf("etcd leader changed")), ResultError, 1, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			noLeaks(t)
			h := newHarness(t, "", whiskerPod("whisker-a", t0.Add(-time.Hour)))
			h.engine.cfg.Rules[0].Action = ActionEvictPod
			h.engine = h.newEngine(h.engine.cfg, true)
			var attempts atomic.Int32
			h.cs.PrependReactor("create", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
				if a.GetSubresource() != "eviction" {
					return false, nil, nil
				}
				attempts.Add(1)
				return true, nil, tc.err
			})
			h.prom.set(goldmaneGuard, guardOK)
			h.prom.set(whiskerExpr, wedged("whisker-a"))
			h.at(0)
			h.at(10 * time.Minute)
			h.at(11 * time.Minute)
			if n := int(attempts.Load()); n != tc.attempts {
				t.Errorf("eviction calls = %d, want %d", n, tc.attempts)
			}
			if _, err := h.cs.CoreV1().Pods("calico-system").Get(context.Background(), "whisker-a", metav1.GetOptions{}); err != nil {
				t.Errorf("the pod is gone: %v", err)
			}
			if got := h.result("whisker", ActionEvictPod, ResultSuccess); got != 0 {
				t.Errorf("success = %v", got)
			}
			if got := h.result("whisker", ActionEvictPod, tc.result); got < 1 {
				t.Errorf("%s not counted", tc.result)
			}
			h.logHas(t, "result="+tc.result)
			recs, err := h.store.Load(context.Background())
			if err != nil || (len(recs) == 1) != tc.kept {
				t.Errorf("records %+v (err %v), kept = %v wanted", recs, err, tc.kept)
			}
			if tc.kept {
				if got := h.result("whisker", ActionEvictPod, "skipped_"+SkipCooldown); got != 1 {
					t.Errorf("skipped_cooldown = %v, want 1", got)
				}
			}
		})
	}
}

// stubAPI is a kube-apiserver on loopback for the calls that must be bounded
// by a context: the fake clientset's reactors cannot see one. It keeps the
// state ConfigMap, serves one pod, and hangs on the requests hang selects
// until the client gives up.
type stubAPI struct {
	mu   sync.Mutex
	hang func(method, path string) bool
	cm   *corev1.ConfigMap
	pod  *corev1.Pod
	reqs []string
	// stop releases hanging handlers when the test ends, should a client
	// not give up.
	stop chan struct{}
}

const (
	stubCMs      = "/api/v1/namespaces/greybox/configmaps"
	stubPod      = "/api/v1/namespaces/calico-system/pods/whisker-a"
	stubEviction = stubPod + "/eviction"
)

func (s *stubAPI) requests(method, path string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, r := range s.reqs {
		if r == method+" "+path {
			n++
		}
	}
	return n
}

func (s *stubAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.reqs = append(s.reqs, r.Method+" "+r.URL.Path)
	hang := s.hang != nil && s.hang(r.Method, r.URL.Path)
	s.mu.Unlock()
	if hang {
		// Read the body first: only then does the server notice the
		// client hanging up.
		_, _ = io.Copy(io.Discard, r.Body)
		select {
		case <-r.Context().Done():
		case <-s.stop:
		}
		return
	}
	reply := func(code int, obj any) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(obj)
	}
	notFound := func() {
		reply(http.StatusNotFound, metav1.Status{TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"},
			Status: metav1.StatusFailure, Reason: metav1.StatusReasonNotFound, Code: http.StatusNotFound})
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch m, p := r.Method, r.URL.Path; {
	case m == http.MethodGet && p == stubCMs+"/state":
		if s.cm == nil {
			notFound()
			return
		}
		reply(http.StatusOK, s.cm)
	case (m == http.MethodPost && p == stubCMs) || (m == http.MethodPut && p == stubCMs+"/state"):
		var cm corev1.ConfigMap
		body, _ := io.ReadAll(r.Body)
		if err := json.Unmarshal(body, &cm); err != nil {
			reply(http.StatusBadRequest, metav1.Status{Status: metav1.StatusFailure, Message: err.Error(), Code: http.StatusBadRequest})
			return
		}
		cm.TypeMeta = metav1.TypeMeta{Kind: "ConfigMap", APIVersion: "v1"}
		cm.ResourceVersion = fmt.Sprint(len(s.reqs))
		s.cm = &cm
		reply(http.StatusCreated, &cm)
	case m == http.MethodGet && p == stubPod:
		reply(http.StatusOK, s.pod)
	case m == http.MethodPost && p == stubEviction:
		reply(http.StatusCreated, metav1.Status{TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"}, Status: metav1.StatusSuccess, Code: http.StatusCreated})
	case m == http.MethodPost && strings.HasSuffix(p, "/events"):
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		_, _ = w.Write(body)
	default:
		notFound()
	}
}

// stubEngine runs the whisker rule (evict_pod) against the stub API over
// client-go, with every call bounded by hangBound.
func stubEngine(t *testing.T, h *harness, api *stubAPI) {
	t.Helper()
	pod := whiskerPod("whisker-a", t0.Add(-time.Hour))
	pod.TypeMeta = metav1.TypeMeta{Kind: "Pod", APIVersion: "v1"}
	api.pod = pod
	api.stop = make(chan struct{})
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(api.stop) })
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	cs, err := kubernetes.NewForConfig(&rest.Config{Host: srv.URL, Transport: tr, UserAgent: "greybox-test",
		ContentConfig: rest.ContentConfig{ContentType: "application/json"}})
	if err != nil {
		t.Fatal(err)
	}
	cfg := h.engine.cfg
	cfg.Rules[0].Action = ActionEvictPod
	cfg.EvaluationInterval = model.Duration(hangBound)
	src, err := NewPrometheusSource(cfg.Prometheus)
	if err != nil {
		t.Fatal(err)
	}
	h.store = &ConfigMapStore{Client: cs, Namespace: "greybox", Name: "state"}
	h.engine, err = NewEngine(Options{Config: cfg, Source: src, Kube: cs, Store: h.store, Clock: h.clock,
		Metrics: NewMetrics(prometheus.NewRegistry()), Identity: "test", Leader: true,
		Logger: slog.New(slog.NewTextHandler(h.logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
}

// A Kubernetes API that hangs costs one bounded call, not the loop, and
// what it did not answer is not acted on.
func TestHangingKubernetesAPI(t *testing.T) {
	for _, tc := range []struct {
		name       string
		hang       func(method, path string) bool
		result     string
		evictions  int // eviction requests over two firing evaluations
		stateAfter bool
	}{
		{"state read hangs", func(m, p string) bool { return m == http.MethodGet && p == stubCMs+"/state" }, "skipped_" + SkipStateError, 0, false},
		{"state write hangs", func(m, p string) bool { return m == http.MethodPost && p == stubCMs }, "skipped_" + SkipStateError, 0, false},
		{"pod read hangs", func(m, p string) bool { return m == http.MethodGet && p == stubPod }, "skipped_" + SkipKubeError, 0, false},
		// The eviction may have happened: its record holds the cooldown.
		{"eviction hangs", func(m, p string) bool { return m == http.MethodPost && p == stubEviction }, ResultError, 1, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			noLeaks(t)
			h := newHarness(t, "")
			api := &stubAPI{hang: tc.hang}
			stubEngine(t, h, api)
			h.prom.set(goldmaneGuard, guardOK)
			h.prom.set(whiskerExpr, wedged("whisker-a"))
			h.bounded(0)
			h.bounded(10 * time.Minute)
			h.bounded(11 * time.Minute)
			if got := h.result("whisker", ActionEvictPod, tc.result); got < 1 {
				t.Errorf("%s not counted", tc.result)
			}
			if got := h.result("whisker", ActionEvictPod, ResultSuccess); got != 0 {
				t.Errorf("success = %v", got)
			}
			if n := api.requests(http.MethodPost, stubEviction); n != tc.evictions {
				t.Errorf("eviction requests = %d, want %d", n, tc.evictions)
			}
			if n := api.requests(http.MethodDelete, stubPod); n != 0 {
				t.Errorf("pod deletes = %d", n)
			}
			h.logHas(t, "context deadline exceeded")
			if tc.stateAfter {
				if got := h.result("whisker", ActionEvictPod, "skipped_"+SkipCooldown); got != 1 {
					t.Errorf("skipped_cooldown = %v, want 1 after an eviction of unknown outcome", got)
				}
			}
		})
	}
}

// Evaluate's own deadline reaches the store: a Store that only returns when
// its context ends is bounded by the API timeout.
func TestHangingStoreIsBounded(t *testing.T) {
	noLeaks(t)
	h := newHarness(t, "", whiskerPod("whisker-a", t0.Add(-time.Hour)))
	h.store = hangingStore{}
	cfg := h.engine.cfg
	cfg.EvaluationInterval = model.Duration(hangBound)
	h.engine = h.newEngine(cfg, true)
	h.prom.set(goldmaneGuard, guardOK)
	h.prom.set(whiskerExpr, wedged("whisker-a"))
	h.bounded(0)
	h.bounded(10 * time.Minute)
	if w := h.writes(); len(w) != 0 {
		t.Fatalf("acted: %s", joined(w))
	}
	if got := h.result("whisker", ActionDeletePod, "skipped_"+SkipStateError); got != 1 {
		t.Errorf("skipped_state_error = %v, want 1", got)
	}
	h.logHas(t, "reason="+SkipStateError, "deadline exceeded")
}

type hangingStore struct{}

func (hangingStore) Load(ctx context.Context) ([]Record, error) { <-ctx.Done(); return nil, ctx.Err() }
func (hangingStore) Save(ctx context.Context, _ []Record) error { <-ctx.Done(); return ctx.Err() }

// Run keeps its schedule when Prometheus hangs: each evaluation ends within
// the interval-derived bound, so ticks keep producing evaluations.
func TestRunWithHangingPrometheus(t *testing.T) {
	noLeaks(t)
	h := newHarness(t, "", whiskerPod("whisker-a", t0.Add(-time.Hour)))
	h.hangProof()
	h.prom.set(whiskerExpr, promReply{hang: true})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); h.engine.Run(ctx) }()
	evals := func() float64 { return testutil.ToFloat64(h.engine.metrics.queryErrors.WithLabelValues("whisker")) }
	deadline := time.After(2 * time.Minute)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for want := 1.0; want <= 2; want++ {
		for evals() < want {
			select {
			case <-deadline:
				t.Fatalf("evaluation %v never ended: a hung query is not bounded", want)
			case <-tick.C:
			}
		}
		h.clock.Step(hangBound)
	}
	cancel()
	<-done
	if w := h.writes(); len(w) != 0 {
		t.Fatalf("acted: %s", joined(w))
	}
}
