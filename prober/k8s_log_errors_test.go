package prober

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/rest"
	k8stesting "k8s.io/client-go/testing"

	"github.com/greybox-probe/greybox/config"
)

const whiskerModule = `
prober: k8s_log_errors
timeout: 10s
k8s_log_errors:
  container: whisker-backend
  window: 11m
  patterns:
    - failed to stream flows
    - 'code = Unavailable.*goldmane'
  threshold: 10
  namespaces: [calico-system]
  dependencies:
    - name: goldmane
      kind: Deployment
      namespace: calico-system
`

const errLine = `2026-11-21 23:44:41.124 [ERROR][1] whisker-backend/pkg/handlers/v1/flows.go 92: failed to stream flows error=rpc error: code = Unavailable desc = dial tcp: lookup goldmane.calico-system.svc: i/o timeout`
const okLine = `2026-11-21 23:44:41.125 [INFO][1] whisker-backend/pkg/handlers/v1/flows.go 85: Received flow batch count=3`

// logText is n error lines among okLines quiet ones.
func logText(n, ok int) string {
	var b strings.Builder
	for i := range n + ok {
		if i < n {
			b.WriteString(errLine + "\n")
		} else {
			b.WriteString(okLine + "\n")
		}
	}
	return b.String()
}

type podOpt func(*corev1.Pod)

func testPod(name string, opts ...podOpt) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "calico-system", Labels: map[string]string{"k8s-app": "whisker"}},
		Spec:       corev1.PodSpec{NodeName: "node-1", Containers: []corev1.Container{{Name: "whisker"}, {Name: "whisker-backend"}}},
		Status: corev1.PodStatus{
			Phase:      corev1.PodRunning,
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}},
			ContainerStatuses: []corev1.ContainerStatus{
				{Name: "whisker"}, {Name: "whisker-backend", RestartCount: 0},
			},
		},
	}
	for _, o := range opts {
		o(p)
	}
	return p
}

// singleContainer gives the pod one container with the given name, so the
// fake's log reactor (which does not see the pod name) can tell pods apart.
func singleContainer(name string) podOpt {
	return func(p *corev1.Pod) {
		p.Spec.Containers = []corev1.Container{{Name: name}}
		p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: name}}
	}
}

func restartedAgo(d time.Duration, restarts int32) podOpt {
	return func(p *corev1.Pod) {
		for i := range p.Status.ContainerStatuses {
			if p.Status.ContainerStatuses[i].Name == "whisker-backend" {
				p.Status.ContainerStatuses[i].RestartCount = restarts
				p.Status.ContainerStatuses[i].LastTerminationState.Terminated = &corev1.ContainerStateTerminated{
					FinishedAt: metav1.NewTime(time.Now().Add(-d)),
				}
			}
		}
	}
}

func notReady(p *corev1.Pod) { p.Status.Conditions[0].Status = corev1.ConditionFalse }

func deployment(ready int32) *appsv1.Deployment {
	one := int32(1)
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "goldmane", Namespace: "calico-system", Generation: 2},
		Spec:       appsv1.DeploymentSpec{Replicas: &one},
		Status:     appsv1.DeploymentStatus{ReadyReplicas: ready, ObservedGeneration: 2},
	}
}

// fakeLogs is a fake clientset whose pods/log answers come from logs, keyed
// by container name (+ "/previous"); it records every log request.
type fakeLogs struct {
	*fake.Clientset
	mu   sync.Mutex
	reqs []corev1.PodLogOptions
}

func newFakeLogs(logs map[string]string, objs ...runtime.Object) *fakeLogs {
	f := &fakeLogs{Clientset: fake.NewClientset(objs...)}
	f.PrependReactor("get", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		ga, ok := a.(k8stesting.GenericAction)
		if !ok || a.GetSubresource() != "log" {
			return false, nil, nil
		}
		opts := ga.GetValue().(*corev1.PodLogOptions)
		f.mu.Lock()
		f.reqs = append(f.reqs, *opts)
		f.mu.Unlock()
		key := opts.Container
		if opts.Previous {
			key += "/previous"
		}
		body, ok := logs[key]
		if !ok {
			return true, nil, fmt.Errorf("test: no log for %q", key)
		}
		return true, &runtime.Unknown{Raw: []byte(body)}, nil
	})
	return f
}

func (f *fakeLogs) env() Env {
	return Env{Kube: func() (kubernetes.Interface, error) { return f, nil }}
}

func (f *fakeLogs) requests() []corev1.PodLogOptions {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]corev1.PodLogOptions(nil), f.reqs...)
}

func ctr(pod, container string) map[string]string {
	return map[string]string{"namespace": "calico-system", "pod": pod, "container": container}
}

func TestK8sLogErrorsThreshold(t *testing.T) {
	m := testModule(t, whiskerModule)
	for _, tc := range []struct {
		matches int
		ok      bool
	}{{0, true}, {9, true}, {10, false}, {11, false}} {
		t.Run(fmt.Sprint(tc.matches), func(t *testing.T) {
			f := newFakeLogs(map[string]string{"whisker-backend": logText(tc.matches, 5)}, testPod("whisker-1"), deployment(1))
			r := runProbeDirect(t, probeK8sLogErrors, "calico-system/k8s-app=whisker", m, f.env())
			if r.ok != tc.ok {
				t.Fatalf("ok = %v, want %v\n%s", r.ok, tc.ok, r.logs)
			}
			mustMetric(t, r.reg, "probe_k8s_log_matched_lines", ctr("whisker-1", "whisker-backend"), float64(tc.matches))
			mustMetric(t, r.reg, "probe_k8s_log_scanned_lines", ctr("whisker-1", "whisker-backend"), float64(tc.matches+5))
			mustMetric(t, r.reg, "probe_k8s_log_scanned_bytes", ctr("whisker-1", "whisker-backend"), float64(len(logText(tc.matches, 5))))
			mustMetric(t, r.reg, "probe_k8s_log_truncated", ctr("whisker-1", "whisker-backend"), 0)
			mustMetric(t, r.reg, "probe_k8s_log_pod_ready", map[string]string{"namespace": "calico-system", "pod": "whisker-1"}, 1)
			mustMetric(t, r.reg, "probe_k8s_log_pod_restarts", ctr("whisker-1", "whisker-backend"), 0)
			mustMetric(t, r.reg, "probe_k8s_log_pods_matched", nil, 1)
			mustMetric(t, r.reg, "probe_k8s_log_threshold", nil, 10)
			mustMetric(t, r.reg, "probe_k8s_dependency_ready", map[string]string{"dependency": "goldmane"}, 1)
			reqs := f.requests()
			if len(reqs) != 1 || *reqs[0].SinceSeconds != 660 || reqs[0].Container != "whisker-backend" || *reqs[0].LimitBytes != 16<<20 || reqs[0].Previous {
				t.Errorf("log requests: %+v", reqs)
			}
			if tc.matches >= 10 && !strings.Contains(r.logs, "at or above the error threshold") {
				t.Errorf("log does not say why:\n%s", r.logs)
			}
			if strings.Contains(r.logs, "i/o timeout") {
				t.Errorf("log contents leaked without debug_matched_lines:\n%s", r.logs)
			}
		})
	}
}

func TestK8sLogErrorsPatterns(t *testing.T) {
	log := strings.Join([]string{
		"failed to stream flows",                        // literal
		"x code = Unavailable desc = lookup goldmane y", // regexp
		"code = Unavailable but another service",        // regexp literal only: no match
		"goldmane code = Unavailable",                   // wrong order: no match
		"both: failed to stream flows code = Unavailable goldmane",
	}, "\n")
	f := newFakeLogs(map[string]string{"whisker-backend": log}, testPod("whisker-1"))
	m := testModule(t, strings.Replace(whiskerModule, "threshold: 10", "threshold: 4", 1))
	r := runProbeDirect(t, probeK8sLogErrors, "calico-system/k8s-app=whisker", m, f.env())
	mustMetric(t, r.reg, "probe_k8s_log_matched_lines", ctr("whisker-1", "whisker-backend"), 3)
	mustMetric(t, r.reg, "probe_k8s_log_scanned_lines", ctr("whisker-1", "whisker-backend"), 5)
	if !r.ok {
		t.Errorf("3 < threshold 4 should pass:\n%s", r.logs)
	}
}

func TestK8sLogErrorsMultiplePods(t *testing.T) {
	m := testModule(t, strings.Replace(whiskerModule, "  container: whisker-backend\n", "", 1))
	f := newFakeLogs(map[string]string{"a": logText(0, 3), "b": logText(12, 3), "c": logText(9, 0)},
		testPod("pod-a", singleContainer("a")), testPod("pod-b", singleContainer("b"), notReady), testPod("pod-c", singleContainer("c")),
		testPod("other", singleContainer("z"), func(p *corev1.Pod) { p.Labels = map[string]string{"k8s-app": "other"} }))
	r := runProbeDirect(t, probeK8sLogErrors, "calico-system/k8s-app=whisker", m, f.env())
	if r.ok {
		t.Fatalf("pod-b has 12 ≥ 10 errors; want failure\n%s", r.logs)
	}
	mustMetric(t, r.reg, "probe_k8s_log_pods_matched", nil, 3)
	mustMetric(t, r.reg, "probe_k8s_log_matched_lines", ctr("pod-a", "a"), 0)
	mustMetric(t, r.reg, "probe_k8s_log_matched_lines", ctr("pod-b", "b"), 12)
	mustMetric(t, r.reg, "probe_k8s_log_matched_lines", ctr("pod-c", "c"), 9)
	mustMetric(t, r.reg, "probe_k8s_log_pod_ready", map[string]string{"namespace": "calico-system", "pod": "pod-b"}, 0)
	if !strings.Contains(r.logs, "pod=pod-b") {
		t.Errorf("log does not name the pod:\n%s", r.logs)
	}
}

func TestK8sLogErrorsDependencies(t *testing.T) {
	m := testModule(t, whiskerModule)
	dep := map[string]string{"dependency": "goldmane"}
	logs := map[string]string{"whisker-backend": logText(12, 0)}

	// Goldmane not ready: reported, and the wedged-pod verdict stands alone.
	f := newFakeLogs(logs, testPod("whisker-1"), deployment(0))
	r := runProbeDirect(t, probeK8sLogErrors, "calico-system/k8s-app=whisker", m, f.env())
	mustMetric(t, r.reg, "probe_k8s_dependency_ready", dep, 0)
	if r.ok || !strings.Contains(r.logs, "0/1 replicas ready") {
		t.Errorf("ok=%v logs:\n%s", r.ok, r.logs)
	}

	// Missing: not ready, not an error.
	f = newFakeLogs(map[string]string{"whisker-backend": ""}, testPod("whisker-1"))
	r = runProbeDirect(t, probeK8sLogErrors, "calico-system/k8s-app=whisker", m, f.env())
	mustMetric(t, r.reg, "probe_k8s_dependency_ready", dep, 0)
	if !r.ok || !strings.Contains(r.logs, "not found") {
		t.Errorf("ok=%v logs:\n%s", r.ok, r.logs)
	}

	// RBAC forbids reading it: state unknown, series absent, probe fails.
	f = newFakeLogs(map[string]string{"whisker-backend": ""}, testPod("whisker-1"), deployment(1))
	f.PrependReactor("get", "deployments", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Group: "apps", Resource: "deployments"}, "goldmane", errors.New("RBAC: access denied"))
	})
	r = runProbeDirect(t, probeK8sLogErrors, "calico-system/k8s-app=whisker", m, f.env())
	if _, ok := metricValue(t, r.reg, "probe_k8s_dependency_ready", dep); ok {
		t.Error("dependency series present although its state is unknown")
	}
	if r.ok || !strings.Contains(r.logs, `RBAC does not allow \"get\" on \"deployments\"`) {
		t.Errorf("ok=%v logs:\n%s", r.ok, r.logs)
	}
}

func TestK8sLogErrorsPrevious(t *testing.T) {
	m := testModule(t, strings.Replace(whiskerModule, "threshold: 10", "threshold: 10\n  previous: true", 1))
	logs := map[string]string{"whisker-backend": logText(4, 1), "whisker-backend/previous": logText(7, 2)}

	f := newFakeLogs(logs, testPod("whisker-1", restartedAgo(2*time.Minute, 3)))
	r := runProbeDirect(t, probeK8sLogErrors, "calico-system/k8s-app=whisker", m, f.env())
	if r.ok {
		t.Errorf("4 + 7 errors ≥ 10: want failure\n%s", r.logs)
	}
	mustMetric(t, r.reg, "probe_k8s_log_matched_lines", ctr("whisker-1", "whisker-backend"), 11)
	mustMetric(t, r.reg, "probe_k8s_log_scanned_lines", ctr("whisker-1", "whisker-backend"), 14)
	mustMetric(t, r.reg, "probe_k8s_log_pod_restarts", ctr("whisker-1", "whisker-backend"), 3)
	if reqs := f.requests(); len(reqs) != 2 || !reqs[1].Previous || *reqs[1].SinceSeconds != 660 {
		t.Errorf("requests: %+v", reqs)
	}

	// Restarted before the window: the previous log is outside it.
	f = newFakeLogs(logs, testPod("whisker-1", restartedAgo(time.Hour, 3)))
	r = runProbeDirect(t, probeK8sLogErrors, "calico-system/k8s-app=whisker", m, f.env())
	mustMetric(t, r.reg, "probe_k8s_log_matched_lines", ctr("whisker-1", "whisker-backend"), 4)
	if reqs := f.requests(); len(reqs) != 1 {
		t.Errorf("requests: %+v", reqs)
	}
	if !r.ok {
		t.Errorf("want success\n%s", r.logs)
	}

	// previous off (the default): never asked for.
	f = newFakeLogs(logs, testPod("whisker-1", restartedAgo(2*time.Minute, 3)))
	runProbeDirect(t, probeK8sLogErrors, "calico-system/k8s-app=whisker", testModule(t, whiskerModule), f.env())
	if reqs := f.requests(); len(reqs) != 1 || reqs[0].Previous {
		t.Errorf("requests: %+v", reqs)
	}
}

func TestK8sLogErrorsTruncated(t *testing.T) {
	// The fake ignores limitBytes; the prober's own limit must hold.
	m := testModule(t, strings.Replace(whiskerModule, "threshold: 10", "threshold: 10\n  limit_bytes: 1000", 1))
	f := newFakeLogs(map[string]string{"whisker-backend": logText(100, 0)}, testPod("whisker-1"))
	r := runProbeDirect(t, probeK8sLogErrors, "calico-system/k8s-app=whisker", m, f.env())
	mustMetric(t, r.reg, "probe_k8s_log_truncated", ctr("whisker-1", "whisker-backend"), 1)
	mustMetric(t, r.reg, "probe_k8s_log_scanned_bytes", ctr("whisker-1", "whisker-backend"), 1000)
	perLine := len(errLine) + 1
	mustMetric(t, r.reg, "probe_k8s_log_matched_lines", ctr("whisker-1", "whisker-backend"), float64((1000+perLine-1)/perLine))
	if !strings.Contains(r.logs, "limit_bytes") {
		t.Errorf("log does not mention the limit:\n%s", r.logs)
	}
}

func TestK8sLogErrorsNoPods(t *testing.T) {
	f := newFakeLogs(nil, deployment(1))
	r := runProbeDirect(t, probeK8sLogErrors, "calico-system/k8s-app=whisker", testModule(t, whiskerModule), f.env())
	if r.ok || !strings.Contains(r.logs, "no pod matches") {
		t.Errorf("ok=%v\n%s", r.ok, r.logs)
	}
	mustMetric(t, r.reg, "probe_k8s_log_pods_matched", nil, 0)

	m := testModule(t, strings.Replace(whiskerModule, "threshold: 10", "threshold: 10\n  fail_if_no_pods: false", 1))
	r = runProbeDirect(t, probeK8sLogErrors, "calico-system/k8s-app=whisker", m, f.env())
	if !r.ok {
		t.Errorf("fail_if_no_pods false: want success\n%s", r.logs)
	}
}

func TestK8sLogErrorsContainerChoice(t *testing.T) {
	noContainer := testModule(t, strings.Replace(whiskerModule, "  container: whisker-backend\n", "", 1))
	f := newFakeLogs(map[string]string{}, testPod("whisker-1"))
	r := runProbeDirect(t, probeK8sLogErrors, "calico-system/k8s-app=whisker", noContainer, f.env())
	if r.ok || !strings.Contains(r.logs, "has 2 containers (whisker, whisker-backend): set k8s_log_errors.container") {
		t.Errorf("ok=%v\n%s", r.ok, r.logs)
	}
	if len(f.requests()) != 0 {
		t.Errorf("asked for a log without a container: %+v", f.requests())
	}

	wrong := testModule(t, strings.Replace(whiskerModule, "container: whisker-backend", "container: nope", 1))
	r = runProbeDirect(t, probeK8sLogErrors, "calico-system/k8s-app=whisker", wrong, f.env())
	if r.ok || !strings.Contains(r.logs, `container \"nope\" is not in pod whisker-1`) {
		t.Errorf("ok=%v\n%s", r.ok, r.logs)
	}
}

func TestK8sLogErrorsListForbidden(t *testing.T) {
	f := newFakeLogs(nil)
	f.PrependReactor("list", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "pods"}, "", errors.New("RBAC"))
	})
	m := testModule(t, whiskerModuleNoDeps)
	r := runProbeDirect(t, probeK8sLogErrors, "calico-system/k8s-app=whisker", m, f.env())
	if r.ok || !strings.Contains(r.logs, `RBAC does not allow \"list\" on \"pods\" in namespace \"calico-system\"`) {
		t.Errorf("ok=%v\n%s", r.ok, r.logs)
	}
}

const whiskerModuleNoDeps = `
prober: k8s_log_errors
k8s_log_errors:
  container: whisker-backend
  window: 11m
  patterns: [failed to stream flows]
  threshold: 10
`

func TestK8sLogErrorsNoKube(t *testing.T) {
	r := runProbeDirect(t, probeK8sLogErrors, "calico-system/k8s-app=whisker", testModule(t, whiskerModule), Env{})
	if r.ok || !strings.Contains(r.logs, "no Kubernetes configuration") {
		t.Errorf("ok=%v\n%s", r.ok, r.logs)
	}
}

func TestK8sLogErrorsDebugMatchedLines(t *testing.T) {
	m := testModule(t, strings.Replace(whiskerModule, "threshold: 10", "threshold: 10\n  debug_matched_lines: 2", 1))
	f := newFakeLogs(map[string]string{"whisker-backend": logText(5, 1)}, testPod("whisker-1"))
	r := runProbeDirect(t, probeK8sLogErrors, "calico-system/k8s-app=whisker", m, f.env())
	if n := strings.Count(r.logs, "matched line"); n != 2 {
		t.Errorf("%d sample lines, want 2:\n%s", n, r.logs)
	}
}

func TestK8sLogErrorsCheckTarget(t *testing.T) {
	m := testModule(t, whiskerModule)
	for _, tc := range []struct {
		target    string
		ok        bool
		forbidden bool
		reason    string
	}{
		{"calico-system/k8s-app=whisker", true, false, ""},
		{"calico-system/k8s-app in (whisker,goldmane),tier!=x", true, false, ""},
		{"calico-system", false, false, "want <namespace>/<label-selector>"},
		{"calico-system/", false, false, "empty label selector"},
		{"calico-system/k8s-app==~", false, false, "invalid label selector"},
		{"Calico_System/a=b", false, false, "invalid namespace"},
		{"kube-system/k8s-app=kube-dns", false, true, `namespace "kube-system" is not allowed`},
	} {
		err := checkK8sLogTarget(context.Background(), tc.target, m, nil)
		if tc.ok {
			if err != nil {
				t.Errorf("%q: %v", tc.target, err)
			}
			continue
		}
		var te *TargetError
		if !errors.As(err, &te) || te.Forbidden != tc.forbidden || !strings.Contains(te.Reason, tc.reason) {
			t.Errorf("%q: got %#v, want forbidden=%v reason containing %q", tc.target, err, tc.forbidden, tc.reason)
		}
	}
	// Without a namespaces list any namespace is allowed.
	if err := checkK8sLogTarget(context.Background(), "kube-system/a=b", testModule(t, whiskerModuleNoDeps), nil); err != nil {
		t.Error(err)
	}
}

func TestK8sLogErrorsConfig(t *testing.T) {
	for _, tc := range []struct{ yml, want string }{
		{"prober: k8s_log_errors\nk8s_log_errors:\n  window: 5m", "at least one pattern"},
		{"prober: k8s_log_errors\nk8s_log_errors:\n  patterns: ['(']", "test.yml:5"},
		{"prober: k8s_log_errors\nk8s_log_errors:\n  patterns: [x]\n  threshold: 0", "threshold"},
		{"prober: k8s_log_errors\nk8s_log_errors:\n  patterns: [x]\n  window: 0s", "window"},
		{"prober: k8s_log_errors\nk8s_log_errors:\n  patterns: [x]\n  namespaces: [Bad_NS]", "invalid namespace"},
		{"prober: k8s_log_errors\nk8s_log_errors:\n  patterns: [x]\n  dependencies: [{kind: Deployment}]", "name is required"},
		{"prober: k8s_log_errors\nk8s_log_errors:\n  patterns: [x]\n  dependencies: [{name: g, kind: Deploy}]", "want one of Deployment"},
		{"prober: k8s_log_errors\nk8s_log_errors:\n  patterns: [x]\n  dependencies: [{name: g, kind: Pods}]", "needs a selector"},
		{"prober: k8s_log_errors\nk8s_log_errors:\n  patterns: [x]\n  dependencies: [{name: g, kind: Pods, selector: 'a in ('}]", "invalid label selector"},
		{"prober: k8s_log_errors\nk8s_log_errors:\n  patterns: [x]\n  dependencies: [{name: g, kind: Deployment}, {name: g, kind: Deployment}]", "used twice"},
		{"prober: k8s_log_errors\nk8s_log_errors:\n  patterns: [x]\n  bogus: 1", "bogus"},
	} {
		var b strings.Builder
		b.WriteString("modules:\n  m:\n")
		for _, line := range strings.Split(tc.yml, "\n") {
			b.WriteString("    " + line + "\n")
		}
		_, err := config.Parse([]byte(b.String()), "test.yml")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s\ngot %v, want error containing %q", tc.yml, err, tc.want)
		}
	}
	// /config shows the settings as written.
	cfg, err := config.Parse([]byte("modules:\n  w:"+strings.ReplaceAll(whiskerModule, "\n", "\n    ")), "test.yml")
	if err != nil {
		t.Fatal(err)
	}
	out, err := cfg.Redacted()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"- failed to stream flows", "- code = Unavailable.*goldmane", "window: 11m", "kind: Deployment", "name: goldmane", "fail_if_no_pods: true"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("/config output lacks %q:\n%s", want, out)
		}
	}

	m := testModule(t, "prober: k8s_log_errors\nk8s_log_errors:\n  patterns: [x]")
	s := m.Settings.(*K8sLogErrorsSettings)
	if time.Duration(s.Window) != 10*time.Minute || s.Threshold != 1 || s.LimitBytes != 16<<20 || !s.FailIfNoPods || s.Previous || s.DebugMatchedLines != 0 {
		t.Errorf("defaults: %+v", s)
	}
}

// apiServer is a fake kube-apiserver answering the few paths the prober
// uses, recording what it was asked.
type apiServer struct {
	mu   sync.Mutex
	reqs []*url.URL
	pods []corev1.Pod
	// logs by pod name: a status code and a body.
	logs map[string]func(w http.ResponseWriter)
}

func (a *apiServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	a.reqs = append(a.reqs, r.URL)
	a.mu.Unlock()
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	switch {
	case len(parts) == 5 && parts[0] == "api" && parts[4] == "pods":
		sel := r.URL.Query().Get("labelSelector")
		list := corev1.PodList{TypeMeta: metav1.TypeMeta{Kind: "PodList", APIVersion: "v1"}}
		for _, p := range a.pods {
			if p.Namespace == parts[3] && sel == "k8s-app=whisker" {
				list.Items = append(list.Items, p)
			}
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(list)
	case len(parts) == 7 && parts[4] == "pods" && parts[6] == "log":
		if f, ok := a.logs[parts[5]]; ok {
			f(w)
			return
		}
		http.NotFound(w, r)
	case r.URL.Path == "/apis/apps/v1/namespaces/calico-system/deployments/goldmane":
		d := deployment(1)
		d.TypeMeta = metav1.TypeMeta{Kind: "Deployment", APIVersion: "apps/v1"}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(d)
	default:
		http.NotFound(w, r)
	}
}

func (a *apiServer) logRequests() []*url.URL {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []*url.URL
	for _, u := range a.reqs {
		if strings.HasSuffix(u.Path, "/log") {
			out = append(out, u)
		}
	}
	return out
}

func status(code int, reason, msg string) func(http.ResponseWriter) {
	return func(w http.ResponseWriter) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(metav1.Status{
			TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"},
			Status:   metav1.StatusFailure, Message: msg, Reason: metav1.StatusReason(reason), Code: int32(code),
		})
	}
}

func text(body string) func(http.ResponseWriter) {
	return func(w http.ResponseWriter) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write([]byte(body))
	}
}

// realClient is client-go pointed at srv, with a transport the test closes
// so no keep-alive goroutine outlives it.
func realClient(t *testing.T, srv *httptest.Server) Env {
	t.Helper()
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	cs, err := kubernetes.NewForConfig(&rest.Config{Host: srv.URL, Transport: tr, UserAgent: "greybox-test"})
	if err != nil {
		t.Fatal(err)
	}
	return Env{Kube: func() (kubernetes.Interface, error) { return cs, nil }}
}

func TestK8sLogErrorsWire(t *testing.T) {
	pod := func(name string, opts ...podOpt) corev1.Pod { return *testPod(name, opts...) }
	unscheduled := func(p *corev1.Pod) { p.Spec.NodeName = ""; p.Status.Phase = corev1.PodPending }
	for _, tc := range []struct {
		name    string
		module  string
		pod     corev1.Pod
		answer  func(http.ResponseWriter)
		ok      bool
		logWant string
		query   url.Values
	}{
		{
			name: "log", module: strings.Replace(whiskerModule, "threshold: 10", "threshold: 10\n  limit_bytes: 4096", 1),
			pod: pod("whisker-1"), answer: text(logText(3, 2)), ok: true, logWant: "matched_lines=3",
			query: url.Values{"container": {"whisker-backend"}, "sinceSeconds": {"660"}, "limitBytes": {"4096"}},
		},
		{
			name: "wedged", module: whiskerModule, pod: pod("whisker-1"), answer: text(logText(10, 0)),
			ok: false, logWant: "at or above the error threshold",
			query: url.Values{"container": {"whisker-backend"}, "sinceSeconds": {"660"}, "limitBytes": {"16777216"}},
		},
		{
			name: "forbidden", module: whiskerModule, pod: pod("whisker-1"),
			answer: status(403, "Forbidden", `pods "whisker-1" is forbidden: User "system:serviceaccount:monitoring:greybox" cannot get resource "pods/log" in API group "" in the namespace "calico-system"`),
			ok:     false, logWant: `RBAC does not allow \"get\" on \"pods/log\" in namespace \"calico-system\"`,
		},
		{
			name: "container name", module: whiskerModule, pod: pod("whisker-1"),
			answer: status(400, "BadRequest", "a container name must be specified for pod whisker-1, choose one of: [whisker whisker-backend]"),
			ok:     false, logWant: "pod whisker-1 has several containers, set k8s_log_errors.container",
		},
		{
			name: "kubelet unreachable", module: whiskerModule, pod: pod("whisker-1"),
			answer: status(500, "InternalError", `Get "https://10.0.0.5:10250/containerLogs/calico-system/whisker-1/whisker-backend": dial tcp 10.0.0.5:10250: connect: connection refused`),
			ok:     false, logWant: `kubelet on node \"node-1\" is unreachable`,
		},
		{
			name: "unscheduled", module: whiskerModule, pod: pod("whisker-1", unscheduled),
			answer: func(w http.ResponseWriter) { w.WriteHeader(http.StatusNoContent) },
			ok:     true, logWant: "pod not scheduled yet",
		},
		{
			name: "previous", module: strings.Replace(whiskerModule, "threshold: 10", "threshold: 10\n  previous: true", 1),
			pod: pod("whisker-1", restartedAgo(time.Minute, 1)), answer: text(logText(6, 0)), ok: false, logWant: "matched_lines=12",
			query: url.Values{"container": {"whisker-backend"}, "sinceSeconds": {"660"}, "previous": {"true"}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			api := &apiServer{pods: []corev1.Pod{tc.pod}, logs: map[string]func(http.ResponseWriter){"whisker-1": tc.answer}}
			srv := httptest.NewServer(api)
			defer srv.Close()
			r := runProbeDirect(t, probeK8sLogErrors, "calico-system/k8s-app=whisker", testModule(t, tc.module), realClient(t, srv))
			if r.ok != tc.ok || !strings.Contains(r.logs, tc.logWant) {
				t.Errorf("ok=%v, want %v and log containing %q:\n%s", r.ok, tc.ok, tc.logWant, r.logs)
			}
			reqs := api.logRequests()
			if len(reqs) == 0 {
				t.Fatal("no log request")
			}
			last := reqs[len(reqs)-1]
			if last.Path != "/api/v1/namespaces/calico-system/pods/whisker-1/log" {
				t.Errorf("path %q", last.Path)
			}
			for k, v := range tc.query {
				if got := last.Query().Get(k); got != v[0] {
					t.Errorf("query %s = %q, want %q (%s)", k, got, v[0], last.RawQuery)
				}
			}
			if tc.query != nil && tc.query.Get("previous") == "" && last.Query().Has("previous") {
				t.Errorf("previous sent: %s", last.RawQuery)
			}
		})
	}
}

// A log stream that never ends must not outlive the probe's deadline.
func TestK8sLogErrorsDeadline(t *testing.T) {
	release := make(chan struct{})
	api := &apiServer{pods: []corev1.Pod{*testPod("whisker-1")}, logs: map[string]func(http.ResponseWriter){
		"whisker-1": func(w http.ResponseWriter) {
			_, _ = w.Write([]byte(errLine + "\n"))
			w.(http.Flusher).Flush()
			<-release
		},
	}}
	srv := httptest.NewServer(api)
	defer srv.Close()
	defer close(release)
	m := testModule(t, strings.Replace(whiskerModuleNoDeps, "prober: k8s_log_errors", "prober: k8s_log_errors\ntimeout: 500ms", 1))
	r := runProbeDirect(t, probeK8sLogErrors, "calico-system/k8s-app=whisker", m, realClient(t, srv))
	if r.ok || !strings.Contains(r.logs, "probe deadline reached") {
		t.Errorf("ok=%v\n%s", r.ok, r.logs)
	}
	if r.elapsed > 5*time.Second {
		t.Errorf("took %v with a 500ms timeout", r.elapsed)
	}
}
