package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	k8stesting "k8s.io/client-go/testing"

	"github.com/greybox-probe/greybox/internal/testpeer/ttyd"
	"github.com/greybox-probe/greybox/remediate"
)

const (
	replicaNS     = "traefik"
	replicaModule = "terminal_token_per_replica" // as in examples/greybox.yml and examples/remediator.yml
	replicaRule   = "terminal_replica_unrouted"  // the rule in examples/remediator.yml
	replicaHost   = "terminal.example.invalid"
)

var replicaPods = []string{"traefik-a", "traefik-b", "traefik-c"}

const replicaGreyboxConfig = `modules:
  ` + replicaModule + `:
    prober: ttyd_token
    timeout: 5s
    allowed_targets: ["` + replicaHost + `", "127.0.0.1"]
    via:
      replicas: k8s:traefik/app.kubernetes.io/name=traefik:websecure
      min_success: all
    ttyd_token: {}
`

// replicaKubeAPI serves the Traefik pods' list as an apiserver does; each
// pod's websecure port is the front it stands for, chosen per phase.
type replicaKubeAPI struct {
	*httptest.Server
	ports atomic.Pointer[[]int] // websecure port of traefik-a, -b, -c

	mu         sync.Mutex
	lists      int
	unexpected []string
}

func replicaPodObject(name string, port int) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: name, Namespace: replicaNS, UID: types.UID("uid-" + name), ResourceVersion: "1000",
			Labels:            map[string]string{"app.kubernetes.io/name": "traefik"},
			CreationTimestamp: metav1.NewTime(time.Now().Add(-time.Hour)),
		},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "traefik", Image: "traefik:v3",
			Ports: []corev1.ContainerPort{{Name: "traefik", ContainerPort: 9000}, {Name: "websecure", ContainerPort: int32(port)}}}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "127.0.0.1",
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}},
	}
}

func (a *replicaKubeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if r.Method != http.MethodGet || r.URL.Path != "/api/v1/namespaces/"+replicaNS+"/pods" ||
		r.URL.Query().Get("labelSelector") != "app.kubernetes.io/name=traefik" {
		a.unexpected = append(a.unexpected, r.Method+" "+r.URL.String())
		http.NotFound(w, r)
		return
	}
	a.lists++
	list := &corev1.PodList{TypeMeta: metav1.TypeMeta{Kind: "PodList", APIVersion: "v1"}, ListMeta: metav1.ListMeta{ResourceVersion: "1000"}}
	for i, port := range *a.ports.Load() {
		list.Items = append(list.Items, *replicaPodObject(replicaPods[i], port))
	}
	writeJSON(w, http.StatusOK, list)
}

// TestReplicaPathGreyboxPrometheusRemediator is the Traefik incident seen
// from the user's path: three Traefik fronts before one ttyd, one front
// without the terminal's router. greybox (the built binary) finds the pods
// through a fake API and sends the user's request through each; a real
// Prometheus scrapes it; the remediator runs the shipped rule and evicts
// exactly the named pod, once, and not while most replicas fail.
func TestReplicaPathGreyboxPrometheusRemediator(t *testing.T) {
	promBin := prometheusBinary(t)
	start := time.Now()

	backend := ttyd.NewServer(ttyd.Options{})
	t.Cleanup(backend.Close)
	bu, _ := url.Parse(backend.URL)
	frontPort := func(routed bool) int {
		routes := map[string]*url.URL{}
		if routed {
			routes[replicaHost] = bu
		}
		f := ttyd.NewHostFront(routes, false)
		t.Cleanup(f.Close)
		_, p, _ := net.SplitHostPort(f.Listener.Addr().String())
		n, _ := strconv.Atoi(p)
		return n
	}
	good1, good2, bad := frontPort(true), frontPort(true), frontPort(false)

	api := &replicaKubeAPI{}
	// Phase (a): traefik-a and traefik-b both lack the router. Most
	// replicas fail: the guard must hold the rule back.
	api.ports.Store(&[]int{bad, bad, good1})
	api.Server = httptest.NewServer(api)
	t.Cleanup(api.Close)

	dir := t.TempDir()
	kubeconfig := writeKubeconfig(t, dir, api.URL)
	gbCfg := writeFile(t, dir, "greybox.yml", replicaGreyboxConfig)
	_, gbAddr := startGreybox(t, gbCfg, "--kubeconfig="+kubeconfig)
	// The job of examples/prometheus/prometheus.yml, every second.
	promCfg := writeFile(t, dir, "prometheus.yml", fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: greybox_%[1]s
    honor_labels: true
    metrics_path: /probe
    params:
      module: [%[1]s]
    static_configs:
      - targets: ["http://%[2]s"]
        labels: {module: %[1]s}
    relabel_configs:
      - source_labels: [__address__]
        target_label: __param_target
      - source_labels: [__param_target]
        target_label: instance
      - target_label: __address__
        replacement: %[3]s
`, replicaModule, replicaHost, gbAddr))
	promAddr := startPrometheus(t, promBin, promCfg)
	t.Logf("greybox, fake API and Prometheus up after %v", time.Since(start).Round(time.Millisecond))

	cfg, err := remediate.Load("../examples/remediator.yml")
	if err != nil {
		t.Fatal(err)
	}
	var rule *remediate.Rule
	for _, r := range cfg.Rules {
		if r.Name == replicaRule {
			rule = r
		}
	}
	if rule == nil || rule.Action != remediate.ActionEvictPod || !rule.NamespaceAllowed(replicaNS) || len(rule.Guards) == 0 {
		t.Fatalf("examples/remediator.yml: want rule %s, evict_pod in %s with a guard; got %+v", replicaRule, replicaNS, rule)
	}
	rule.For = model.Duration(2 * time.Second)
	cfg.Rules = []*remediate.Rule{rule}
	cfg.Prometheus.URL = "http://" + promAddr
	cfg.Prometheus.Timeout = model.Duration(5 * time.Second)
	var objs []runtime.Object
	for _, name := range replicaPods {
		objs = append(objs, replicaPodObject(name, 8443))
	}
	engine, src, cs, reg := newE2EEngine(t, cfg, objs...)
	ctx := context.Background()
	has := hasSample(ctx, src)
	counted := func(result string) float64 { return actionsCounted(t, reg, replicaRule, result) }
	evictions := func() []string {
		var out []string
		for _, a := range cs.Actions() {
			if a.GetResource().Resource == "pods" && a.GetSubresource() == "eviction" {
				if c, ok := a.(k8stesting.CreateAction); ok {
					out = append(out, a.GetNamespace()+"/"+c.GetObject().(metav1.Object).GetName())
				}
			}
		}
		return out
	}
	status := func() string {
		rules, recent := engine.Status()
		return fmt.Sprintf("rules %+v; recent %+v", rules, recent)
	}
	success := func(pod string) string {
		return fmt.Sprintf(`probe_replica_success{module=%q,namespace=%q,pod=%q}`, replicaModule, replicaNS, pod)
	}

	// (a) Two of three fail: candidates, but the guard holds.
	phase := time.Now()
	poll(t, 30*time.Second, "two failing replicas in Prometheus", func() (bool, string) {
		ok, why := has(success("traefik-a") + " == 0 and on () " + success("traefik-b") + " == 0")
		if !ok {
			return false, why
		}
		return has(success("traefik-c") + " == 1")
	})
	poll(t, 30*time.Second, "guard_failed counted", func() (bool, string) {
		engine.Evaluate(ctx)
		return counted("skipped_"+remediate.SkipGuardFailed) >= 1, status()
	})
	if e := evictions(); len(e) != 0 || counted(remediate.ResultSuccess) != 0 {
		t.Fatalf("evicted while most replicas failed: %v", e)
	}
	t.Logf("(a) guard held: %v", time.Since(phase).Round(time.Millisecond))

	// (b) Only traefik-b lacks the router: it, and only it, is evicted.
	phase = time.Now()
	api.ports.Store(&[]int{good1, bad, good2})
	poll(t, 30*time.Second, "only traefik-b failing in Prometheus", func() (bool, string) {
		ok, why := has(success("traefik-a") + " == 1 and on () " + success("traefik-c") + " == 1")
		if !ok {
			return false, why
		}
		ok, why = has(success("traefik-b") + " == 0")
		if !ok {
			return false, why
		}
		return has(fmt.Sprintf(`probe_replicas_succeeded{module=%q} == 2`, replicaModule))
	})
	poll(t, 30*time.Second, "the rule acts", func() (bool, string) {
		engine.Evaluate(ctx)
		return counted(remediate.ResultSuccess) >= 1, status()
	})
	if e := evictions(); len(e) != 1 || e[0] != replicaNS+"/traefik-b" {
		t.Fatalf("evictions %v, want exactly traefik/traefik-b", e)
	}
	t.Logf("(b) evicted traefik-b: %v", time.Since(phase).Round(time.Millisecond))

	// (c) traefik-b still fails (the fake keeps serving it): the cooldown
	// holds the rule, and nothing else is evicted.
	poll(t, 30*time.Second, "cooldown counted", func() (bool, string) {
		engine.Evaluate(ctx)
		return counted("skipped_"+remediate.SkipCooldown) >= 1, status()
	})
	if e := evictions(); len(e) != 1 || counted(remediate.ResultSuccess) != 1 {
		t.Fatalf("acted again within cooldown: evictions %v, success=%v", e, counted(remediate.ResultSuccess))
	}

	// greybox asked the API for the Traefik pods and nothing else.
	api.mu.Lock()
	defer api.mu.Unlock()
	if len(api.unexpected) > 0 || api.lists == 0 {
		t.Errorf("pod lists %d; unexpected requests %v", api.lists, api.unexpected)
	}
	t.Logf("whole chain: %v", time.Since(start).Round(time.Millisecond))
}
