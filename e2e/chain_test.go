package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	k8stesting "k8s.io/client-go/testing"

	"github.com/greybox-probe/greybox/remediate"
)

const (
	chainNS       = "calico-system"
	chainPod      = "whisker-abc"
	chainPodUID   = types.UID("3c4f5e1a-7b2d-4e8f-9a06-whisker00abc")
	chainTarget   = chainNS + "/k8s-app=whisker"
	chainRuleName = "whisker_backend_wedged" // the rule in examples/remediator.yml
	chainFor      = 2 * time.Second
)

const chainGreyboxConfig = `modules:
  whisker_wedged:
    prober: k8s_log_errors
    timeout: 5s
    k8s_log_errors:
      container: whisker-backend
      window: 11m
      patterns: [failed to stream flows]
      threshold: 10
      namespaces: [calico-system]
      dependencies:
        - name: goldmane
          kind: Deployment
          namespace: calico-system
`

// TestChainGreyboxPrometheusRemediator wires the real pieces the way a
// cluster does: greybox (the built binary) probes a fake Kubernetes API
// that answers like an apiserver, a real Prometheus scrapes greybox, and
// the remediator engine, running the whisker rule shipped in
// examples/remediator.yml, reads Prometheus and acts on a fake clientset.
// Nothing between greybox's exposition and the remediator's decision is a
// stand-in: label names, honor_labels, the guard's series and the target
// labels all have to line up for the pod to be deleted.
func TestChainGreyboxPrometheusRemediator(t *testing.T) {
	promBin := prometheusBinary(t)
	start := time.Now()
	created := start.Add(-time.Hour).Truncate(time.Second)

	api := newFakeKubeAPI(t, created)
	dir := t.TempDir()
	kubeconfig := writeKubeconfig(t, dir, api.URL)
	gbCfg := writeFile(t, dir, "greybox.yml", chainGreyboxConfig)
	_, gbAddr := startGreybox(t, gbCfg, "--kubeconfig="+kubeconfig)

	// The job as README/examples write it, plus honor_labels: the probe's
	// namespace/pod labels are the pod to act on. The namespace target label
	// stands in for the one Kubernetes service discovery and
	// prometheus-operator's Probe add (greybox's own namespace); without
	// honor_labels it would win and the rule would see no candidate.
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
      - targets: [%q]
        labels: {module: whisker_wedged, namespace: monitoring}
    relabel_configs:
      - source_labels: [__address__]
        target_label: __param_target
      - source_labels: [__param_target]
        target_label: instance
      - target_label: __address__
        replacement: %s
`, chainTarget, gbAddr))
	promAddr := startPrometheus(t, promBin, promCfg)
	t.Logf("greybox, fake API and Prometheus up after %v", time.Since(start).Round(time.Millisecond))

	// The remediator: the shipped whisker rule, pointed at this Prometheus,
	// with a short `for` so the test runs in seconds.
	cfg, err := remediate.Load("../examples/remediator.yml")
	if err != nil {
		t.Fatal(err)
	}
	var rule *remediate.Rule
	for _, r := range cfg.Rules {
		if r.Name == chainRuleName {
			rule = r
		}
	}
	if rule == nil || rule.Action != remediate.ActionDeletePod || !rule.NamespaceAllowed(chainNS) {
		t.Fatalf("examples/remediator.yml: want rule %s, delete_pod in %s; got %+v", chainRuleName, chainNS, rule)
	}
	rule.For = model.Duration(chainFor)
	cfg.Rules = []*remediate.Rule{rule}
	cfg.Prometheus.URL = "http://" + promAddr
	cfg.Prometheus.Timeout = model.Duration(5 * time.Second)

	engine, src, cs, reg := newE2EEngine(t, cfg, whiskerPodObject(created))
	ctx := context.Background()
	// has reports whether expr has at least one sample in Prometheus now.
	has := hasSample(ctx, src)
	evaluate := func() { engine.Evaluate(ctx) }
	counted := func(result string) float64 { return actionsCounted(t, reg, chainRuleName, result) }
	pending := func() float64 { return gaugeValue(t, reg, "greybox_remediator_candidates_pending", chainRuleName) }
	podDeletes := func() []k8stesting.DeleteAction {
		var out []k8stesting.DeleteAction
		for _, a := range cs.Actions() {
			if d, ok := a.(k8stesting.DeleteAction); ok && a.GetResource().Resource == "pods" {
				out = append(out, d)
			}
		}
		return out
	}
	status := func() string {
		rules, recent := engine.Status()
		return fmt.Sprintf("rules %+v; recent %+v", rules, recent)
	}

	// (a) A healthy log: Prometheus has scraped greybox a few times, the
	// series is there with value 0, and the rule sees no candidate.
	phase := time.Now()
	matched := fmt.Sprintf(`probe_k8s_log_matched_lines{namespace=%q,pod=%q,container="whisker-backend"}`, chainNS, chainPod)
	poll(t, 30*time.Second, "two scrapes of a healthy log", func() (bool, string) {
		if ok, _ := has(fmt.Sprintf(`count_over_time(%s[1m]) >= 2 and %s == 0`, matched, matched)); ok {
			return true, ""
		}
		// Show what Prometheus does have: a label renamed on the way
		// (exported_namespace, …) is the usual reason.
		_, why := has(`probe_k8s_log_matched_lines`)
		return false, why
	})
	for range 3 {
		evaluate()
		if p := pending(); p != 0 {
			t.Fatalf("healthy log: %v candidates pending; %s", p, status())
		}
	}
	if n := counted(remediate.ResultSuccess); n != 0 || len(podDeletes()) != 0 {
		t.Fatalf("healthy log: acted (success=%v, deletes=%d)", n, len(podDeletes()))
	}
	t.Logf("(a) healthy: %v", time.Since(phase).Round(time.Millisecond))

	// (b) whisker-backend wedged, but goldmane is not Ready: the guard holds
	// the rule back, whatever the log says.
	phase = time.Now()
	api.errLines.Store(25)
	poll(t, 30*time.Second, "wedged log and goldmane not ready in Prometheus", func() (bool, string) {
		ok, why := has(matched + " >= 10")
		if !ok {
			return false, why
		}
		return has(`probe_k8s_dependency_ready{dependency="goldmane"} == 0`)
	})
	_, series := has(matched)
	t.Logf("in Prometheus: %s", series)
	evaluate()
	if p := pending(); p != 1 {
		t.Fatalf("wedged log: %v candidates pending, want 1 (the rule's expression did not match greybox's series); %s", p, status())
	}
	if n := counted("skipped_" + remediate.SkipGuardFailed); n != 0 {
		t.Fatalf("guard checked before `for` elapsed (guard_failed=%v)", n)
	}
	poll(t, 30*time.Second, "guard_failed counted", func() (bool, string) {
		evaluate()
		return counted("skipped_"+remediate.SkipGuardFailed) >= 1, status()
	})
	if d := podDeletes(); len(d) != 0 || counted(remediate.ResultSuccess) != 0 {
		t.Fatalf("acted while goldmane was not ready: %v", d)
	}
	rules, _ := engine.Status()
	if c := rules[0].Candidates; len(c) != 1 || c[0].Key() != chainNS+"/"+chainPod || !c[0].Firing {
		t.Fatalf("candidates %+v, want %s/%s firing", c, chainNS, chainPod)
	}
	t.Logf("(b) guard held: %v", time.Since(phase).Round(time.Millisecond))

	// (c) goldmane Ready: exactly one delete of the observed pod.
	phase = time.Now()
	api.goldmaneReady.Store(true)
	poll(t, 30*time.Second, "goldmane ready in Prometheus", func() (bool, string) {
		return has(`probe_k8s_dependency_ready{dependency="goldmane"} == 1`)
	})
	poll(t, 30*time.Second, "the rule acts", func() (bool, string) {
		evaluate()
		return counted(remediate.ResultSuccess) >= 1, status()
	})
	deletes := podDeletes()
	if len(deletes) != 1 {
		t.Fatalf("%d pod deletes, want 1: %v", len(deletes), deletes)
	}
	del := deletes[0]
	if del.GetNamespace() != chainNS || del.GetName() != chainPod {
		t.Errorf("deleted %s/%s, want %s/%s", del.GetNamespace(), del.GetName(), chainNS, chainPod)
	}
	if pre := del.GetDeleteOptions().Preconditions; pre == nil || pre.UID == nil || *pre.UID != chainPodUID {
		t.Errorf("delete preconditions %+v, want UID %s", pre, chainPodUID)
	}
	evs, err := cs.CoreV1().Events(chainNS).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if n := countEvents(evs.Items, remediate.ReasonDeleted); n != 1 {
		t.Errorf("%d %s events, want 1: %+v", n, remediate.ReasonDeleted, evs.Items)
	}
	t.Logf("(c) acted: %v", time.Since(phase).Round(time.Millisecond))

	// (d) The wedged series is still there (the fake API keeps serving the
	// pod); once it has been firing for `for` again, the cooldown holds it.
	phase = time.Now()
	poll(t, 30*time.Second, "cooldown counted", func() (bool, string) {
		evaluate()
		return counted("skipped_"+remediate.SkipCooldown) >= 1, status()
	})
	if d := podDeletes(); len(d) != 1 || counted(remediate.ResultSuccess) != 1 {
		t.Fatalf("acted again within cooldown: %d deletes, success=%v", len(d), counted(remediate.ResultSuccess))
	}
	t.Logf("(d) cooldown held: %v", time.Since(phase).Round(time.Millisecond))

	// greybox asked the API what a real deployment needs it to ask, and
	// nothing else.
	api.check(t)
	t.Logf("whole chain: %v", time.Since(start).Round(time.Millisecond))
}

// prometheusBinary finds Prometheus; CI must have it, a laptop may not.
func prometheusBinary(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("prometheus")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("prometheus is not on PATH; .ci/run installs it (Debian package prometheus)")
		}
		t.Skip("prometheus is not on PATH (apt-get install prometheus, or run .ci/run)")
	}
	return p
}

// fakeKubeAPI answers the requests greybox's k8s_log_errors makes, with the
// JSON (and plain-text log) a real apiserver sends.
type fakeKubeAPI struct {
	*httptest.Server
	created       time.Time
	errLines      atomic.Int64
	goldmaneReady atomic.Bool

	mu         sync.Mutex
	podLists   []url.Values
	logQueries []url.Values
	deployGets int
	unexpected []string
}

func newFakeKubeAPI(t *testing.T, created time.Time) *fakeKubeAPI {
	a := &fakeKubeAPI{created: created}
	a.Server = httptest.NewServer(a)
	t.Cleanup(a.Close)
	return a
}

func (a *fakeKubeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if r.Method != http.MethodGet {
		a.notFound(w, r)
		return
	}
	q := r.URL.Query()
	switch r.URL.Path {
	case "/api/v1/namespaces/" + chainNS + "/pods":
		a.podLists = append(a.podLists, q)
		list := &corev1.PodList{
			TypeMeta: metav1.TypeMeta{Kind: "PodList", APIVersion: "v1"},
			ListMeta: metav1.ListMeta{ResourceVersion: "1000"},
			Items:    []corev1.Pod{},
		}
		if q.Get("labelSelector") == "k8s-app=whisker" {
			p := whiskerPodObject(a.created)
			p.TypeMeta = metav1.TypeMeta{} // list items carry no kind
			list.Items = append(list.Items, *p)
		}
		writeJSON(w, http.StatusOK, list)
	case "/api/v1/namespaces/" + chainNS + "/pods/" + chainPod + "/log":
		a.logQueries = append(a.logQueries, q)
		w.Header().Set("Content-Type", "text/plain")
		now := time.Now().UTC()
		for i := range int(a.errLines.Load()) {
			fmt.Fprintf(w, "%s ERROR failed to stream flows from goldmane: rpc error: code = Unavailable desc = name resolver error (attempt %d)\n",
				now.Add(time.Duration(i-30)*time.Second).Format(time.RFC3339Nano), i)
		}
		fmt.Fprintf(w, "%s INFO whisker-backend serving on :3002\n", now.Format(time.RFC3339Nano))
	case "/apis/apps/v1/namespaces/" + chainNS + "/deployments/goldmane":
		a.deployGets++
		replicas, ready := int32(1), int32(0)
		if a.goldmaneReady.Load() {
			ready = 1
		}
		writeJSON(w, http.StatusOK, &appsv1.Deployment{
			TypeMeta: metav1.TypeMeta{Kind: "Deployment", APIVersion: "apps/v1"},
			ObjectMeta: metav1.ObjectMeta{
				Name: "goldmane", Namespace: chainNS, UID: "9d2e0c55-goldmane", Generation: 1, ResourceVersion: "900",
				Labels: map[string]string{"k8s-app": "goldmane"}, CreationTimestamp: metav1.NewTime(a.created),
			},
			Spec: appsv1.DeploymentSpec{Replicas: &replicas},
			Status: appsv1.DeploymentStatus{
				ObservedGeneration: 1, Replicas: 1, UpdatedReplicas: 1,
				ReadyReplicas: ready, AvailableReplicas: ready, UnavailableReplicas: 1 - ready,
			},
		})
	default:
		a.notFound(w, r)
	}
}

func (a *fakeKubeAPI) notFound(w http.ResponseWriter, r *http.Request) {
	a.unexpected = append(a.unexpected, r.Method+" "+r.URL.String())
	writeJSON(w, http.StatusNotFound, &metav1.Status{
		TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"},
		Status:   metav1.StatusFailure, Reason: metav1.StatusReasonNotFound, Code: http.StatusNotFound,
		Message: fmt.Sprintf("the server could not find the requested resource (%s %s)", r.Method, r.URL.Path),
	})
}

// check verifies greybox's requests: the target's selector, the module's
// container and window, and no request the fake does not know.
func (a *fakeKubeAPI) check(t *testing.T) {
	t.Helper()
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.unexpected) > 0 {
		t.Errorf("greybox made requests a real deployment would not expect: %v", a.unexpected)
	}
	if len(a.podLists) == 0 || len(a.logQueries) == 0 || a.deployGets == 0 {
		t.Fatalf("requests: %d pod lists, %d logs, %d deployment gets", len(a.podLists), len(a.logQueries), a.deployGets)
	}
	for _, q := range a.podLists {
		if q.Get("labelSelector") != "k8s-app=whisker" {
			t.Errorf("pod list query %v, want labelSelector=k8s-app=whisker", q)
		}
	}
	for _, q := range a.logQueries {
		if q.Get("container") != "whisker-backend" || q.Get("sinceSeconds") != "660" || q.Has("previous") {
			t.Errorf("log query %v, want container=whisker-backend sinceSeconds=660 and no previous", q)
		}
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// whiskerPodObject is the Running, Ready whisker pod, as the apiserver
// serves it to greybox and as the remediator's clientset holds it.
func whiskerPodObject(created time.Time) *corev1.Pod {
	return &corev1.Pod{
		TypeMeta: metav1.TypeMeta{Kind: "Pod", APIVersion: "v1"},
		ObjectMeta: metav1.ObjectMeta{
			Name: chainPod, Namespace: chainNS, UID: chainPodUID, ResourceVersion: "1000",
			Labels:            map[string]string{"k8s-app": "whisker", "pod-template-hash": "7d9f8c6b5"},
			CreationTimestamp: metav1.NewTime(created),
		},
		Spec: corev1.PodSpec{
			NodeName:   "node-1",
			Containers: []corev1.Container{{Name: "whisker", Image: "calico/whisker"}, {Name: "whisker-backend", Image: "calico/whisker-backend"}},
		},
		Status: corev1.PodStatus{
			Phase:     corev1.PodRunning,
			StartTime: &metav1.Time{Time: created},
			Conditions: []corev1.PodCondition{
				{Type: corev1.PodReady, Status: corev1.ConditionTrue},
				{Type: corev1.ContainersReady, Status: corev1.ConditionTrue},
			},
			ContainerStatuses: []corev1.ContainerStatus{
				{Name: "whisker", Ready: true, State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: metav1.NewTime(created)}}},
				{Name: "whisker-backend", Ready: true, State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: metav1.NewTime(created)}}},
			},
		},
	}
}

func countEvents(evs []corev1.Event, reason string) int {
	n := 0
	for _, e := range evs {
		if e.Reason == reason {
			n++
		}
	}
	return n
}

// actionsCounted reads greybox_remediator_actions_total{rule, result} from
// the engine's registry, as a scrape of the remediator would.
func actionsCounted(t *testing.T, reg *prometheus.Registry, rule, result string) float64 {
	t.Helper()
	return metricSum(t, reg, "greybox_remediator_actions_total", map[string]string{"rule": rule, "result": result})
}

func gaugeValue(t *testing.T, reg *prometheus.Registry, name, rule string) float64 {
	t.Helper()
	return metricSum(t, reg, name, map[string]string{"rule": rule})
}

func metricSum(t *testing.T, reg *prometheus.Registry, name string, want map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			got := map[string]string{}
			for _, l := range m.GetLabel() {
				got[l.GetName()] = l.GetValue()
			}
			if !matchesLabels(got, want) {
				continue
			}
			switch {
			case m.Counter != nil:
				sum += m.GetCounter().GetValue()
			case m.Gauge != nil:
				sum += m.GetGauge().GetValue()
			}
		}
	}
	return sum
}

func matchesLabels(got, want map[string]string) bool {
	for k, v := range want {
		if got[k] != v {
			return false
		}
	}
	return true
}
