package prober

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/greybox-probe/greybox/config"
	"github.com/greybox-probe/greybox/internal/testpeer/traefik"
)

// parityModule builds a traefik_parity module; settings are lines under
// the traefik_parity: key, indented by two spaces.
func parityModule(t testing.TB, timeout string, settings ...string) config.Module {
	t.Helper()
	yml := "prober: traefik_parity\ntimeout: " + timeout + "\ntraefik_parity:"
	if len(settings) == 0 {
		yml += " {}"
	}
	yml += "\n"
	for _, s := range settings {
		yml += "  " + s + "\n"
	}
	return testModule(t, yml)
}

// startReplicas serves one table per replica and returns the static
// target naming them all.
func startReplicas(t *testing.T, tables ...*traefik.Table) ([]*traefik.Server, string) {
	t.Helper()
	var servers []*traefik.Server
	var urls []string
	for _, tb := range tables {
		s := traefik.Start(t, tb)
		servers = append(servers, s)
		urls = append(urls, s.URL)
	}
	return servers, strings.Join(urls, ",")
}

func replicaLabels(url string) map[string]string {
	return map[string]string{"replica": url, "namespace": "", "pod": ""}
}

func withLabel(m map[string]string, k, v string) map[string]string {
	out := map[string]string{k: v}
	for a, b := range m {
		out[a] = b
	}
	return out
}

func TestTraefikParityFixtures(t *testing.T) {
	table := traefik.Fixtures()
	for _, tc := range []struct {
		name      string
		settings  []string
		pages     int64 // router pages per replica
		consensus float64
	}{
		{"default per_page (1000)", nil, 1, 231},
		{"per_page 100", []string{"per_page: 100"}, 3, 231},
		{"per_page 7", []string{"per_page: 7"}, 34, 231},
		{"per_page 1000", []string{"per_page: 1000"}, 1, 231},
		{"with tcp and udp", []string{"per_page: 100", "include_tcp: true", "include_udp: true"}, 3, 232},
	} {
		t.Run(tc.name, func(t *testing.T) {
			servers, target := startReplicas(t, table, table, table)
			m := parityModule(t, "30s", tc.settings...)
			res := runProbeDirect(t, ProbeTraefikParity, target, m, Env{})
			if !res.ok {
				t.Fatalf("probe failed:\n%s", res.logs)
			}
			mustMetric(t, res.reg, "probe_traefik_replicas", nil, 3)
			mustMetric(t, res.reg, "probe_traefik_replicas_up", nil, 3)
			mustMetric(t, res.reg, "probe_traefik_consensus_routers", nil, tc.consensus)
			mustMetric(t, res.reg, "probe_traefik_max_skew", nil, 0)
			for _, s := range servers {
				l := replicaLabels(s.URL)
				mustMetric(t, res.reg, "probe_traefik_replica_up", l, 1)
				mustMetric(t, res.reg, "probe_traefik_replica_in_grace", l, 0)
				mustMetric(t, res.reg, "probe_traefik_replica_routers", withLabel(l, "provider", "file"), tc.consensus)
				mustMetric(t, res.reg, "probe_traefik_replica_missing_routers", l, 0)
				mustMetric(t, res.reg, "probe_traefik_replica_extra_routers", l, 0)
				mustMetric(t, res.reg, "probe_traefik_replica_broken_routers", l, 1) // broken-router@file
				mustMetric(t, res.reg, "probe_traefik_replica_info", withLabel(l, "version", "v3.7.9"), 1)
				if _, ok := metricValue(t, res.reg, "probe_traefik_replica_routers", withLabel(l, "provider", "internal")); ok {
					t.Error("internal routers reported")
				}
				if got := s.PathRequests("/api/http/routers"); got != tc.pages {
					t.Errorf("%s: %d router pages requested, want %d", s.URL, got, tc.pages)
				}
			}
		})
	}
}

// The incident: one of three replicas came up with its IngressRoute (CRD)
// routers and none of its Ingress routers.
func TestTraefikParityIncidentIngressRoutersLost(t *testing.T) {
	full := traefik.Generate(300)
	lost := full.Without(traefik.ByProvider("kubernetes"))
	servers, target := startReplicas(t, full, full, lost)
	res := runProbeDirect(t, ProbeTraefikParity, target, parityModule(t, "30s"), Env{})
	if res.ok {
		t.Fatal("probe succeeded with a replica missing its Ingress routers")
	}
	mustMetric(t, res.reg, "probe_traefik_replicas_up", nil, 3)
	mustMetric(t, res.reg, "probe_traefik_consensus_routers", nil, 300)
	mustMetric(t, res.reg, "probe_traefik_max_skew", nil, 100)
	bad := replicaLabels(servers[2].URL)
	mustMetric(t, res.reg, "probe_traefik_replica_missing_routers", bad, 100)
	mustMetric(t, res.reg, "probe_traefik_replica_extra_routers", bad, 0)
	mustMetric(t, res.reg, "probe_traefik_replica_routers", withLabel(bad, "provider", "kubernetes"), 0)
	mustMetric(t, res.reg, "probe_traefik_replica_routers", withLabel(bad, "provider", "kubernetescrd"), 100)
	for _, s := range servers[:2] {
		l := replicaLabels(s.URL)
		mustMetric(t, res.reg, "probe_traefik_replica_up", l, 1)
		mustMetric(t, res.reg, "probe_traefik_replica_missing_routers", l, 0)
		mustMetric(t, res.reg, "probe_traefik_replica_routers", withLabel(l, "provider", "kubernetes"), 100)
	}
	for _, want := range []string{"missing routers", "@kubernetes", "and 50 more", "missing_by_provider=kubernetes:100", "replica=" + servers[2].URL} {
		if !strings.Contains(res.logs, want) {
			t.Errorf("log lacks %q:\n%s", want, res.logs)
		}
	}
}

func TestTraefikParityReplicaFailures(t *testing.T) {
	table := traefik.Generate(120)
	for _, tc := range []struct {
		name     string
		mode     traefik.Mode
		settings []string
		reason   string
	}{
		{"html", traefik.HTML, nil, "want application/json"},
		{"truncated", traefik.Truncated, nil, "truncated JSON"},
		{"huge", traefik.Huge, []string{"max_response_bytes: 1MiB"}, "larger than max_response_bytes"},
		{"wrong content", traefik.WrongContent, nil, "unexpected JSON shape"},
		{"no next page", traefik.NoNextPage, nil, "no X-Next-Page"},
		{"garbled next page", traefik.GarbledNextPage, nil, `bad X-Next-Page \"two\"`},
		{"too many pages", traefik.OK, []string{"per_page: 50", "max_pages: 3"}, "more than max_pages (3)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			servers, target := startReplicas(t, table, table, table)
			servers[1].SetMode(tc.mode)
			if tc.name == "too many pages" {
				servers[1].SetTable(traefik.Generate(200))
			}
			res := runProbeDirect(t, ProbeTraefikParity, target, parityModule(t, "30s", tc.settings...), Env{})
			if res.ok {
				t.Fatal("probe succeeded with a broken replica")
			}
			if !strings.Contains(res.logs, tc.reason) {
				t.Errorf("log lacks %q:\n%s", tc.reason, res.logs)
			}
			mustMetric(t, res.reg, "probe_traefik_replicas_up", nil, 2)
			mustMetric(t, res.reg, "probe_traefik_replica_up", replicaLabels(servers[1].URL), 0)
			for _, i := range []int{0, 2} {
				l := replicaLabels(servers[i].URL)
				mustMetric(t, res.reg, "probe_traefik_replica_up", l, 1)
				mustMetric(t, res.reg, "probe_traefik_replica_missing_routers", l, 0)
			}
		})
	}
}

func TestTraefikParityReplicaDown(t *testing.T) {
	table := traefik.Generate(30)
	servers, target := startReplicas(t, table, table)
	down := traefik.DownURL()
	target += "," + down
	res := runProbeDirect(t, ProbeTraefikParity, target, parityModule(t, "30s"), Env{})
	if res.ok {
		t.Fatal("probe succeeded with a replica down")
	}
	mustMetric(t, res.reg, "probe_traefik_replicas", nil, 3)
	mustMetric(t, res.reg, "probe_traefik_replicas_up", nil, 2)
	mustMetric(t, res.reg, "probe_traefik_replica_up", replicaLabels(down), 0)
	if _, ok := metricValue(t, res.reg, "probe_traefik_replica_missing_routers", replicaLabels(down)); ok {
		t.Error("a down replica reports missing routers")
	}
	for _, s := range servers {
		mustMetric(t, res.reg, "probe_traefik_replica_up", replicaLabels(s.URL), 1)
	}
	if !strings.Contains(res.logs, "connection refused") {
		t.Errorf("log does not say why:\n%s", res.logs)
	}
}

func TestTraefikParitySlowReplicaBoundedByDeadline(t *testing.T) {
	table := traefik.Generate(30)
	servers, target := startReplicas(t, table, table, table)
	servers[2].SetMode(traefik.Slow)
	res := runProbeDirect(t, ProbeTraefikParity, target, parityModule(t, "1s"), Env{})
	if res.ok {
		t.Fatal("probe succeeded with a silent replica")
	}
	if res.elapsed > 1*time.Second+500*time.Millisecond {
		t.Errorf("probe took %v with a 1s timeout", res.elapsed)
	}
	mustMetric(t, res.reg, "probe_traefik_replica_up", replicaLabels(servers[2].URL), 0)
	mustMetric(t, res.reg, "probe_traefik_replica_up", replicaLabels(servers[0].URL), 1)
	mustMetric(t, res.reg, "probe_traefik_replica_up", replicaLabels(servers[1].URL), 1)
	if !strings.Contains(res.logs, "deadline") {
		t.Errorf("log does not name the deadline:\n%s", res.logs)
	}
}

func TestTraefikParityReference(t *testing.T) {
	base := traefik.Generate(60)
	extra := base.With(traefik.MakeRouter(traefik.RouterSpec{Name: "zz-new", Provider: "file", Rule: "Host(`new`)", Service: "backend"}))
	lessCRD := base.Without(func(r traefik.Router) bool { return r.Name == base.HTTP[5].Name })

	t.Run("majority", func(t *testing.T) {
		servers, target := startReplicas(t, base, base, extra)
		res := runProbeDirect(t, ProbeTraefikParity, target, parityModule(t, "30s"), Env{})
		if res.ok {
			t.Fatal("success with differing replicas")
		}
		mustMetric(t, res.reg, "probe_traefik_consensus_routers", nil, 60)
		mustMetric(t, res.reg, "probe_traefik_replica_extra_routers", replicaLabels(servers[2].URL), 1)
		mustMetric(t, res.reg, "probe_traefik_replica_missing_routers", replicaLabels(servers[2].URL), 0)
		mustMetric(t, res.reg, "probe_traefik_replica_extra_routers", replicaLabels(servers[0].URL), 0)
		mustMetric(t, res.reg, "probe_traefik_max_skew", nil, 1)
		if !strings.Contains(res.logs, "zz-new@file") || !strings.Contains(res.logs, "chosen_by=majority") {
			t.Errorf("log:\n%s", res.logs)
		}
	})
	t.Run("tie is the union", func(t *testing.T) {
		servers, target := startReplicas(t, extra, lessCRD)
		res := runProbeDirect(t, ProbeTraefikParity, target, parityModule(t, "30s"), Env{})
		if res.ok {
			t.Fatal("success with differing replicas")
		}
		mustMetric(t, res.reg, "probe_traefik_consensus_routers", nil, 61)
		mustMetric(t, res.reg, "probe_traefik_replica_missing_routers", replicaLabels(servers[0].URL), 0)
		mustMetric(t, res.reg, "probe_traefik_replica_missing_routers", replicaLabels(servers[1].URL), 2)
		mustMetric(t, res.reg, "probe_traefik_replica_extra_routers", replicaLabels(servers[1].URL), 0)
		mustMetric(t, res.reg, "probe_traefik_max_skew", nil, 2)
		if !strings.Contains(res.logs, "union of 2 tied tables") {
			t.Errorf("log:\n%s", res.logs)
		}
	})
	t.Run("single replica", func(t *testing.T) {
		_, target := startReplicas(t, base)
		if res := runProbeDirect(t, ProbeTraefikParity, target, parityModule(t, "30s"), Env{}); !res.ok {
			t.Fatalf("one healthy replica failed:\n%s", res.logs)
		}
	})
}

func TestTraefikParityBrokenIgnoredCompare(t *testing.T) {
	base := traefik.Generate(30)
	broken := traefik.MakeRouter(traefik.RouterSpec{Name: "broken", Provider: "file", Rule: "Host(`b`)", Service: "nope",
		Errors: []string{`the service "nope@file" does not exist`}})
	withBroken := base.With(broken)

	t.Run("broken counted, still identical", func(t *testing.T) {
		servers, target := startReplicas(t, withBroken, withBroken)
		res := runProbeDirect(t, ProbeTraefikParity, target, parityModule(t, "30s"), Env{})
		if !res.ok {
			t.Fatalf("failed:\n%s", res.logs)
		}
		mustMetric(t, res.reg, "probe_traefik_replica_broken_routers", replicaLabels(servers[0].URL), 1)
	})
	t.Run("ignored router", func(t *testing.T) {
		_, target := startReplicas(t, withBroken, base)
		if res := runProbeDirect(t, ProbeTraefikParity, target, parityModule(t, "30s"), Env{}); res.ok {
			t.Fatal("difference not seen")
		}
		res := runProbeDirect(t, ProbeTraefikParity, target, parityModule(t, "30s", `ignore_routers: "^broken@"`), Env{})
		if !res.ok {
			t.Fatalf("ignored router still compared:\n%s", res.logs)
		}
	})
	t.Run("compare rule", func(t *testing.T) {
		changed := base.With(traefik.MakeRouter(traefik.RouterSpec{Name: "x", Provider: "file", Rule: "Host(`old`)", Service: "s"}))
		changed2 := base.With(traefik.MakeRouter(traefik.RouterSpec{Name: "x", Provider: "file", Rule: "Host(`new`)", Service: "s"}))
		_, target := startReplicas(t, changed, changed2)
		if res := runProbeDirect(t, ProbeTraefikParity, target, parityModule(t, "30s"), Env{}); !res.ok {
			t.Fatalf("names only: failed:\n%s", res.logs)
		}
		res := runProbeDirect(t, ProbeTraefikParity, target, parityModule(t, "30s", "compare: [rule, service]"), Env{})
		if res.ok {
			t.Fatal("rule difference not seen")
		}
		if !strings.Contains(res.logs, "x@file rule=Host(`new`)") {
			t.Errorf("log:\n%s", res.logs)
		}
	})
}

func TestTraefikParityKubernetes(t *testing.T) {
	srv := traefik.Start(t, traefik.Generate(30))
	_, port, _ := net.SplitHostPort(srv.Addr)
	now := time.Now()
	pod := func(name string, phase corev1.PodPhase, ip string, age time.Duration) *corev1.Pod {
		p := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "traefik",
				Labels:            map[string]string{"app.kubernetes.io/name": "traefik"},
				CreationTimestamp: metav1.NewTime(now.Add(-age))},
			Status: corev1.PodStatus{Phase: phase, PodIP: ip},
		}
		if phase == corev1.PodRunning {
			st := metav1.NewTime(now.Add(-age))
			p.Status.StartTime = &st
			p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "traefik",
				State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: st}}}}
		}
		return p
	}
	terminating := pod("traefik-old", corev1.PodRunning, "127.0.0.1", time.Hour)
	terminating.DeletionTimestamp = &metav1.Time{Time: now}
	terminating.Finalizers = []string{"test"}
	other := pod("web-0", corev1.PodRunning, "127.0.0.1", time.Hour)
	other.Labels = map[string]string{"app": "web"}
	cs := fake.NewClientset(
		pod("traefik-a", corev1.PodRunning, "127.0.0.1", time.Hour),
		pod("traefik-b", corev1.PodRunning, "127.0.0.1", time.Hour),
		pod("traefik-new", corev1.PodRunning, "127.0.0.1", 10*time.Second),
		pod("traefik-pending", corev1.PodPending, "", 0),
		terminating, other,
	)
	env := Env{Kube: func() (kubernetes.Interface, error) { return cs, nil }}
	target := "k8s:traefik/app.kubernetes.io/name=traefik:" + port
	m := parityModule(t, "30s", "grace_period: 2m", "namespaces: [traefik]")
	if err := checkTraefikParityTarget(context.Background(), target, m, NewGuard(context.Background(), m.AllowedTargets)); err != nil {
		t.Fatal(err)
	}
	res := runProbeDirect(t, ProbeTraefikParity, target, m, env)
	if !res.ok {
		t.Fatalf("failed:\n%s", res.logs)
	}
	mustMetric(t, res.reg, "probe_traefik_replicas", nil, 3)
	mustMetric(t, res.reg, "probe_traefik_pods_skipped", nil, 2)
	for name, grace := range map[string]float64{"traefik-a": 0, "traefik-b": 0, "traefik-new": 1} {
		l := map[string]string{"replica": srv.Addr, "namespace": "traefik", "pod": name}
		mustMetric(t, res.reg, "probe_traefik_replica_up", l, 1)
		mustMetric(t, res.reg, "probe_traefik_replica_in_grace", l, grace)
		mustMetric(t, res.reg, "probe_traefik_replica_routers", withLabel(l, "provider", "kubernetes"), 10)
	}
	for _, want := range []string{"pod=traefik-pending reason=\"phase Pending\"", "pod=traefik-old reason=terminating"} {
		if !strings.Contains(res.logs, want) {
			t.Errorf("log lacks %q:\n%s", want, res.logs)
		}
	}

	t.Run("only young pods", func(t *testing.T) {
		cs := fake.NewClientset(pod("traefik-new", corev1.PodRunning, "127.0.0.1", time.Second))
		env := Env{Kube: func() (kubernetes.Interface, error) { return cs, nil }}
		res := runProbeDirect(t, ProbeTraefikParity, target, m, env)
		if res.ok {
			t.Fatal("success with nothing compared")
		}
		mustMetric(t, res.reg, "probe_traefik_replica_in_grace", map[string]string{"pod": "traefik-new"}, 1)
	})
	t.Run("no pods", func(t *testing.T) {
		env := Env{Kube: func() (kubernetes.Interface, error) { return fake.NewClientset(), nil }}
		res := runProbeDirect(t, ProbeTraefikParity, target, m, env)
		if res.ok || !strings.Contains(res.logs, "no replicas found") {
			t.Fatalf("ok=%v\n%s", res.ok, res.logs)
		}
		mustMetric(t, res.reg, "probe_traefik_replicas", nil, 0)
	})
	t.Run("no kubernetes", func(t *testing.T) {
		res := runProbeDirect(t, ProbeTraefikParity, target, m, Env{})
		if res.ok || !strings.Contains(res.logs, "no Kubernetes configuration") {
			t.Fatalf("ok=%v\n%s", res.ok, res.logs)
		}
	})
	t.Run("namespace not allowed", func(t *testing.T) {
		err := checkTraefikParityTarget(context.Background(), "k8s:kube-system/app=traefik:9000", m, NewGuard(context.Background(), m.AllowedTargets))
		var te *TargetError
		if !errors.As(err, &te) || !te.Forbidden {
			t.Fatalf("got %v, want a forbidden TargetError", err)
		}
	})
}

func TestTraefikParityDNS(t *testing.T) {
	table := traefik.Generate(30)
	srv := traefik.Start(t, table)
	_, port, _ := net.SplitHostPort(srv.Addr)
	m := parityModule(t, "30s")
	res := runProbeDirect(t, ProbeTraefikParity, "dns:localhost:"+port, m, Env{})
	// localhost may also resolve to ::1, where nothing listens: that
	// replica is down and the probe fails, but 127.0.0.1 is reported.
	mustMetric(t, res.reg, "probe_traefik_replica_up", replicaLabels(srv.Addr), 1)
	mustMetric(t, res.reg, "probe_traefik_replica_missing_routers", replicaLabels(srv.Addr), 0)
	if v6, ok := metricValue(t, res.reg, "probe_traefik_replica_up", replicaLabels(net.JoinHostPort("::1", port))); ok {
		if res.ok != (v6 == 1) {
			t.Errorf("success %v with ::1 up=%v", res.ok, v6)
		}
	} else if !res.ok {
		t.Errorf("failed with only 127.0.0.1:\n%s", res.logs)
	}

	t.Run("allowlist", func(t *testing.T) {
		m := testModule(t, "prober: traefik_parity\ntimeout: 5s\nallowed_targets: [10.0.0.0/8]\ntraefik_parity: {}")
		res := runProbeDirect(t, ProbeTraefikParity, "dns:localhost:"+port, m, Env{})
		if res.ok || !strings.Contains(res.logs, "allowed_targets") {
			t.Fatalf("ok=%v\n%s", res.ok, res.logs)
		}
		if srv.Requests() != 2 { // version + one page, from the first probe only
			t.Errorf("%d requests reached the server", srv.Requests())
		}
		_, target := startReplicas(t, table)
		res = runProbeDirect(t, ProbeTraefikParity, target, m, Env{})
		if res.ok || !strings.Contains(res.logs, "not in allowed_targets") {
			t.Fatalf("static list dialled outside the allowlist: ok=%v\n%s", res.ok, res.logs)
		}
	})
}

func TestTraefikParityBadTargets(t *testing.T) {
	m := parityModule(t, "30s", "namespaces: [traefik]")
	for _, target := range []string{
		"",
		"traefik",
		"k8s:traefik/app=traefik",
		"k8s:traefik/app=traefik:0",
		"k8s:traefik/app=traefik:Web_",
		"k8s:traefik/:9000",
		"k8s:Bad_NS/app=traefik:9000",
		"k8s:traefik/app in (:9000",
		"dns:traefik",
		"dns::9000",
		"dns:traefik:99999",
		"ftp://a:9000",
		"http://a:9000,",
		"http://a:9000,http://a:9000",
		"http://a:9000?x=1",
		"http://user:hunter2@a:9000",
		"ftp://user:hunter2@a:9000",
		"http://a:9000,http://user:hunter2@b:9000?x",
		"http://a:9000, http://:hunter2@b",
		"http://a:0",
		"http://:9000",
		"http://:",
		"http://a:9000,https://:443",
	} {
		err := checkTraefikParityTarget(context.Background(), target, m, NewGuard(context.Background(), m.AllowedTargets))
		var te *TargetError
		if !errors.As(err, &te) || te.Forbidden {
			t.Errorf("%q: got %v, want a 400 TargetError", target, err)
			continue
		}
		if strings.Contains(te.Reason, "hunter2") {
			t.Errorf("%q: reason leaks the password: %s", target, te.Reason)
		}
	}
	for _, target := range []string{
		"k8s:traefik/app.kubernetes.io/name=traefik:9000",
		"k8s:traefik/app=traefik,tier in (edge):9000",
		"dns:traefik-headless.traefik.svc.cluster.local:9000",
		"dns:[::1]:9000",
		"http://a:9000,https://b:9443/prefix/",
	} {
		if err := checkTraefikParityTarget(context.Background(), target, m, NewGuard(context.Background(), m.AllowedTargets)); err != nil {
			t.Errorf("%q: %v", target, err)
		}
	}
	allow := testModule(t, "prober: traefik_parity\nallowed_targets: [10.0.0.0/8]\ntraefik_parity: {}")
	var te *TargetError
	if err := checkTraefikParityTarget(context.Background(), "http://10.1.2.3:9000,http://192.168.1.1:9000", allow, NewGuard(context.Background(), allow.AllowedTargets)); !errors.As(err, &te) || !te.Forbidden {
		t.Errorf("address outside allowed_targets: %v", err)
	}
}

func TestTraefikParityConfig(t *testing.T) {
	m := testModule(t, "prober: traefik_parity\ntraefik_parity: {}")
	s := m.Settings.(*TraefikParitySettings)
	if s.PerPage != 1000 || s.MaxPages != 200 || s.MaxResponseBytes != 8<<20 || s.HTTPClientConfig.FollowRedirects || s.Scheme != "http" {
		t.Errorf("defaults: %+v", s)
	}
	for _, bad := range []string{"compare: [host]", "per_page: -1", `ignore_routers: "("`, "namespaces: [Bad_NS]", "grace_period: -1m", "nope: 1", "scheme: ftp"} {
		yml := "modules:\n  m:\n    prober: traefik_parity\n    traefik_parity:\n      " + bad + "\n"
		if _, err := config.Parse([]byte(yml), "test.yml"); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// A probe whose context is already cancelled returns at once.
func TestTraefikParityCancelled(t *testing.T) {
	_, target := startReplicas(t, traefik.Generate(10))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	m := parityModule(t, "30s")
	logs := &syncBuffer{}
	ok := ProbeTraefikParity(ctx, target, m, NewMetrics(), slog.New(slog.NewTextHandler(logs, nil)), Env{Guard: NewGuard(ctx, m.AllowedTargets)})
	if ok {
		t.Fatal("success with a cancelled context")
	}
	if !strings.Contains(logs.String(), "replica down") {
		t.Error(logs.String())
	}
}

// Through the /probe handler: the operator's curl when the alert fires.
func TestTraefikParityViaHandler(t *testing.T) {
	full := traefik.Generate(90)
	_, target := startReplicas(t, full, full, full.Without(traefik.ByProvider("kubernetes")))
	cfg, err := config.Parse([]byte(`
modules:
  traefik_parity:
    prober: traefik_parity
    timeout: 5s
    traefik_parity:
      namespaces: [traefik]
`), "test.yml")
	if err != nil {
		t.Fatal(err)
	}
	h := NewHandler(HandlerOptions{Config: func() *config.Config { return cfg }, Registerer: prometheus.NewRegistry()})
	probe := func(target string, debug bool) *httptest.ResponseRecorder {
		q := url.Values{"module": {"traefik_parity"}, "target": {target}}
		if debug {
			q.Set("debug", "true")
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/probe?"+q.Encode(), nil))
		return rec
	}
	rec := probe(target, true)
	body := rec.Body.String()
	for _, want := range []string{"probe_success 0", "missing routers", "missing_by_provider=kubernetes:30", `probe_traefik_replica_routers{namespace="",pod="",provider="kubernetes"`} {
		if !strings.Contains(body, want) {
			t.Errorf("debug output lacks %q:\n%s", want, body)
		}
	}
	if rec := probe("k8s:traefik/app=traefik", false); rec.Code != http.StatusBadRequest {
		t.Errorf("bad target: %d %s", rec.Code, rec.Body)
	}
	if rec := probe("k8s:kube-system/app=traefik:9000", false); rec.Code != http.StatusForbidden {
		t.Errorf("namespace outside the module: %d %s", rec.Code, rec.Body)
	}
}

// FuzzTraefikParityScanner checks the one-pass router scanner against
// encoding/json: same routers for every valid list, an error (never a
// panic) for anything else.
func FuzzTraefikParityScanner(f *testing.F) {
	// Small seeds only: Go's fuzzer slows to a crawl minimising inputs of
	// tens of kilobytes, so a page is cut down to its first routers.
	for _, name := range []string{"routers-page1.json", "tcp-routers.json", "routers-page4-past-end.json"} {
		data, err := os.ReadFile(filepath.Join(traefik.FixtureDir(), name))
		if err != nil {
			f.Fatal(err)
		}
		var routers []json.RawMessage
		if json.Unmarshal(data, &routers) == nil && len(routers) > 2 {
			data, _ = json.Marshal(routers[:2])
		}
		f.Add(data)
	}
	for _, s := range []string{`[]`, `[{"name":"a@file","error":null,"x":[1,{"y":"]"}]}]`, `[{"name":"a\u0040b","status":"disabled"}]`,
		`[{"name":"a","error":["e"],"status":"enabled","name":"b"}]`, `[{"name":1}]`, `[{"name":"a"}`, `[null]`, `{"message":"x"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		// A scanner loop that never ends would stall the fuzzer silently;
		// a panic reports the input.
		tm := time.AfterFunc(3*time.Second, func() { panic(fmt.Sprintf("WATCHDOG %q", data)) })
		defer tm.Stop()
		sc := parityScanner{intern: map[string]string{}, rule: true, service: true}
		var got []routerText
		err := sc.routers(data, func(r *parityRouter) {
			got = append(got, routerText{string(r.Name), r.Provider, string(r.Rule), string(r.Service), r.Broken})
		})
		if !json.Valid(data) || !utf8.Valid(data) {
			return // the scanner may be more lenient about numbers; it must only not panic
		}
		want, wantErr := referenceRouters(data)
		if (err != nil) != (wantErr != nil) {
			t.Fatalf("scanner err %v, encoding/json err %v for %q", err, wantErr, data)
		}
		if err == nil && !slices.Equal(got, want) {
			t.Fatalf("scanner %+v, encoding/json %+v for %q", got, want, data)
		}
	})
}

// referenceRouters decodes a router list with encoding/json, with exact
// key matching like Traefik's own output.
// routerText is a parityRouter with its fields as strings, to compare.
type routerText struct {
	Name, Provider, Rule, Service string
	Broken                        bool
}

func referenceRouters(data []byte) ([]routerText, error) {
	var objs []json.RawMessage
	if err := json.Unmarshal(data, &objs); err != nil {
		return nil, err
	}
	if objs == nil {
		// "null" decodes without error; Traefik always sends an array.
		return nil, errors.New("not a JSON array")
	}
	out := []routerText{}
	for _, o := range objs {
		var r routerText
		var status string
		var errs []string
		dsts := map[string]any{"name": &r.Name, "provider": &r.Provider, "rule": &r.Rule, "service": &r.Service, "status": &status, "error": &errs}
		// Key by key in document order, as a struct decode sees them: a
		// repeated key is decoded each time (a badly typed first one is
		// an error even if a later one is fine) and the last one wins.
		dec := json.NewDecoder(bytes.NewReader(o))
		if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
			return nil, errors.New("not an object")
		}
		for dec.More() {
			tok, err := dec.Token()
			if err != nil {
				return nil, err
			}
			var raw json.RawMessage
			if err := dec.Decode(&raw); err != nil {
				return nil, err
			}
			if dst, ok := dsts[tok.(string)]; ok {
				if string(raw) == "null" { // the scanner reads null as empty
					raw = json.RawMessage(`""`)
					if tok == "error" {
						raw = json.RawMessage(`[]`)
					}
				}
				if err := json.Unmarshal(raw, dst); err != nil {
					return nil, err
				}
			}
		}
		if r.Name == "" {
			return nil, errors.New("no name")
		}
		r.Broken = status == "disabled" || len(errs) > 0
		out = append(out, r)
	}
	return out, nil
}

// Pages are parsed once per probe and shared by the replicas that sent
// the same bytes. A replica whose table differs from some page on must
// still be compared router by router from there: here the last routers
// of one replica are gone, so its first pages match the others' and its
// later ones do not.
func TestTraefikParitySharedPages(t *testing.T) {
	full := traefik.Generate(300)
	cut := full.HTTP[len(full.HTTP)-40].Name
	short := full.Without(func(r traefik.Router) bool { return r.Name >= cut })
	servers, target := startReplicas(t, full, full, full, short)
	res := runProbeDirect(t, ProbeTraefikParity, target, parityModule(t, "30s", "per_page: 50"), Env{})
	if res.ok {
		t.Fatal("probe succeeded with a replica missing routers")
	}
	mustMetric(t, res.reg, "probe_traefik_replicas_up", nil, 4)
	mustMetric(t, res.reg, "probe_traefik_consensus_routers", nil, 300)
	bad := replicaLabels(servers[3].URL)
	// The cut removed internal routers too (they sort among the others);
	// those are never compared.
	missing, _ := metricValue(t, res.reg, "probe_traefik_replica_missing_routers", bad)
	if missing < 30 || missing > 40 {
		t.Errorf("short replica missing %v routers, want its last user routers (30–40)", missing)
	}
	for _, s := range servers[:3] {
		l := replicaLabels(s.URL)
		mustMetric(t, res.reg, "probe_traefik_replica_missing_routers", l, 0)
		mustMetric(t, res.reg, "probe_traefik_replica_extra_routers", l, 0)
		for _, p := range []string{"kubernetes", "kubernetescrd", "file"} {
			mustMetric(t, res.reg, "probe_traefik_replica_routers", withLabel(l, "provider", p), 100)
		}
	}
}

func TestParityPageSeenClaim(t *testing.T) {
	ctx := context.Background()
	seen := newParityPageSeen()
	page := []byte(`[{"name":"a@file","provider":"file"}]`)
	first, mine := seen.claim(ctx, "http", page)
	if !mine || first == nil {
		t.Fatal("the first claim of a page must be the caller's to parse")
	}
	first.ids, first.broken = []uint32{7}, 1
	first.providers["file"] = 1
	got := make(chan *parityPageRouters)
	go func() {
		p, mine := seen.claim(ctx, "http", page)
		if mine {
			p = nil
		}
		got <- p
	}()
	first.publish(true)
	if p := <-got; p != first {
		t.Fatalf("a second claim got %v, want the published page", p)
	}
	r := &parityReplica{providers: map[string]int{}}
	first.addTo(r)
	if len(r.ids) != 1 || r.ids[0] != 7 || r.broken != 1 || r.providers["file"] != 1 {
		t.Errorf("addTo: %+v", r)
	}
	// Another kind, or other bytes, is another page.
	if _, mine := seen.claim(ctx, "tcp", page); !mine {
		t.Error("the same bytes of another kind were taken as seen")
	}
	// A failed parse leaves each replica to parse for itself.
	bad := []byte(`[{"name":`)
	p, _ := seen.claim(ctx, "http", bad)
	p.publish(false)
	if p, mine := seen.claim(ctx, "http", bad); p != nil || mine {
		t.Errorf("after a failed parse: %v, %v; want nil, false", p, mine)
	}
	// A claim waiting on a parse gives up with its context.
	slow := []byte(`[]`)
	seen.claim(ctx, "http", slow)
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if p, mine := seen.claim(cctx, "http", slow); p != nil || mine {
		t.Errorf("cancelled wait: %v, %v", p, mine)
	}
}
