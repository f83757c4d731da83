package prober

import (
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/greybox-probe/greybox/config"
	"github.com/greybox-probe/greybox/internal/testpeer/ttyd"
)

const viaHost = "terminal.example.invalid"

// viaFronts is the incident: three Traefik replicas in front of one ttyd,
// the second without the terminal's router.
type viaFronts struct {
	backend *ttyd.Server
	fronts  []*ttyd.HostFront
	addrs   []string // host:port of each front
}

func newViaFronts(t *testing.T) *viaFronts {
	t.Helper()
	f := &viaFronts{backend: ttyd.NewServer(ttyd.Options{})}
	t.Cleanup(f.backend.Close)
	bu, _ := url.Parse(f.backend.URL)
	for i := range 3 {
		routes := map[string]*url.URL{viaHost: bu}
		if i == 1 {
			routes = map[string]*url.URL{}
		}
		front := ttyd.NewHostFront(routes, false)
		t.Cleanup(front.Close)
		f.fronts = append(f.fronts, front)
		f.addrs = append(f.addrs, front.Listener.Addr().String())
	}
	return f
}

func (f *viaFronts) static() string { return strings.Join(f.addrs, ",") }

func viaConfig(modules string) string { return "modules:\n" + modules }

// probeVia runs module through the handler and returns the debug answer
// and the metrics answer of a second identical probe.
func probeVia(t *testing.T, h http.Handler, module, target string) (debug string, metrics map[string]float64) {
	t.Helper()
	q := url.Values{"module": {module}, "target": {target}}
	rec := get(h, "/probe?"+q.Encode(), nil)
	if rec.Code != http.StatusOK {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	metrics = parseExposition(t, rec.Body.String())
	q.Set("debug", "true")
	rec = get(h, "/probe?"+q.Encode(), nil)
	return rec.Body.String(), metrics
}

// parseExposition flattens an exposition into "name{l="v",…}" → value,
// labels sorted by name as the text format writes them.
func parseExposition(t *testing.T, body string) map[string]float64 {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("%v\n%s", err, body)
	}
	out := map[string]float64{}
	for name, mf := range mfs {
		for _, m := range mf.Metric {
			var ls []string
			for _, l := range m.Label {
				ls = append(ls, l.GetName()+"="+strconv.Quote(l.GetValue()))
			}
			key := name
			if len(ls) > 0 {
				key += "{" + strings.Join(ls, ",") + "}"
			}
			switch {
			case m.Gauge != nil:
				out[key] = m.Gauge.GetValue()
			case m.Counter != nil:
				out[key] = m.Counter.GetValue()
			case m.Untyped != nil:
				out[key] = m.Untyped.GetValue()
			}
		}
	}
	return out
}

// hasLine reports whether one line of log has every part.
func hasLine(log string, parts ...string) bool {
	for line := range strings.SplitSeq(log, "\n") {
		if !slices.ContainsFunc(parts, func(p string) bool { return !strings.Contains(line, p) }) {
			return true
		}
	}
	return false
}

func replicaKey(name, addr, pod string) string {
	if pod == "" {
		return name + `{namespace="",pod="",replica="` + addr + `"}`
	}
	return name + `{namespace="traefik",pod="` + pod + `",replica="` + addr + `"}`
}

func wantMetric(t *testing.T, m map[string]float64, key string, want float64) {
	t.Helper()
	got, ok := m[key]
	if !ok {
		var keys []string
		for k := range m {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		t.Fatalf("no %s in:\n%s", key, strings.Join(keys, "\n"))
	}
	if got != want {
		t.Errorf("%s = %v, want %v", key, got, want)
	}
}

// Through all three replicas the probe fails and names the one without
// the router; every replica got the user's Host header; ttyd_ws's
// upgrade stayed on the replicas that route it.
func TestViaNamesTheUnroutedReplica(t *testing.T) {
	f := newViaFronts(t)
	h, _, hist := newTestHandler(t, viaConfig(`
  token:
    prober: ttyd_token
    timeout: 5s
    via: {replicas: "`+f.static()+`"}
  ws:
    prober: ttyd_ws
    timeout: 5s
    via: {replicas: "`+f.static()+`", min_success: all}
`), 10)
	target := "http://" + viaHost
	for _, module := range []string{"token", "ws"} {
		t.Run(module, func(t *testing.T) {
			before := make([]int, 3)
			for i, fr := range f.fronts {
				before[i] = fr.Requests(viaHost)
			}
			debug, m := probeVia(t, h, module, target)
			wantMetric(t, m, "probe_success", 0)
			wantMetric(t, m, "probe_replicas", 3)
			wantMetric(t, m, "probe_replicas_succeeded", 2)
			for i, a := range f.addrs {
				wantMetric(t, m, replicaKey("probe_replica_success", a, ""), boolValue(i != 1))
				if _, ok := m[replicaKey("probe_replica_duration_seconds", a, "")]; !ok {
					t.Errorf("no duration for %s", a)
				}
			}
			// The prober's own metrics are the failing replica's.
			routed := "probe_ttyd_token_routed"
			if module == "ws" {
				routed = "probe_ttyd_ws_routed"
			}
			wantMetric(t, m, routed, 0)
			for i, fr := range f.fronts {
				if fr.Requests(viaHost) <= before[i] {
					t.Errorf("front %d saw no request for Host %s", i, viaHost)
				}
			}
			bad := f.addrs[1]
			if !hasLine(debug, `level=ERROR msg="replica failed"`, "replica="+bad, `reason="404 page not found: the replica has no router for this host"`) {
				t.Errorf("debug output does not name %s with its reason:\n%s", bad, debug)
			}
			if module == "ws" {
				for range 4 { // two replicas, two probes
					if s := nextSession(t, f.backend); !s.InitReceived {
						t.Errorf("session without init: %+v", s)
					}
				}
			}
			e, _ := hist.Newest(module, target)
			if e == nil || !strings.Contains(e.Reason, "2 of 3 replicas succeeded") || !strings.Contains(e.Reason, bad+": 404 page not found") {
				t.Errorf("history reason = %+v", e)
			}
		})
	}
}

func TestViaMinSuccess(t *testing.T) {
	f := newViaFronts(t)
	for _, tc := range []struct {
		min     string
		success bool
	}{
		{"2", true}, {"3", false}, {"4", false}, {"60%", true}, {"67%", false}, {"all", false},
	} {
		t.Run(tc.min, func(t *testing.T) {
			h, _, _ := newTestHandler(t, viaConfig(`
  token:
    prober: ttyd_token
    timeout: 5s
    via: {replicas: "`+f.static()+`", min_success: "`+tc.min+`"}
`), 10)
			debug, m := probeVia(t, h, "token", "http://"+viaHost)
			wantMetric(t, m, "probe_success", boolValue(tc.success))
			wantMetric(t, m, "probe_replicas_succeeded", 2)
			wantMetric(t, m, replicaKey("probe_replica_success", f.addrs[1], ""), 0)
			if tc.success {
				// A failing replica is still named, as a warning.
				if !hasLine(debug, `level=WARN msg="replica failed"`, "replica="+f.addrs[1], "no router for this host") {
					t.Errorf("debug output:\n%s", debug)
				}
				wantMetric(t, m, "probe_ttyd_token_routed", 1)
			}
		})
	}
}

// Pods found through the clientset, by a named container port each
// resolves for itself; pods that cannot take traffic are left out.
func TestViaKubernetesDiscovery(t *testing.T) {
	f := newViaFronts(t)
	pod := func(name, addr string) *corev1.Pod {
		_, port, _ := net.SplitHostPort(addr)
		n, _ := strconv.Atoi(port)
		return &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "traefik", Labels: map[string]string{"app.kubernetes.io/name": "traefik"}},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "traefik",
				Ports: []corev1.ContainerPort{{Name: "traefik", ContainerPort: 9000}, {Name: "web", ContainerPort: int32(n)}}}}},
			Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "127.0.0.1"},
		}
	}
	old := pod("traefik-old", f.addrs[0])
	old.DeletionTimestamp, old.Finalizers = &metav1.Time{Time: time.Now()}, []string{"test"}
	pending := pod("traefik-pending", f.addrs[0])
	pending.Status = corev1.PodStatus{Phase: corev1.PodPending}
	cs := fake.NewClientset(pod("traefik-a", f.addrs[0]), pod("traefik-b", f.addrs[1]), pod("traefik-c", f.addrs[2]), old, pending)

	m := testModule(t, `prober: ttyd_token
timeout: 5s
via: {replicas: "k8s:traefik/app.kubernetes.io/name=traefik:web"}
ttyd_token: {}`)
	env := Env{Kube: func() (kubernetes.Interface, error) { return cs, nil }}
	res := runProbeDirect(t, probeFor(Spec{Probe: probeTTYDToken}, m), "http://"+viaHost, m, env)
	if res.ok {
		t.Fatalf("success through a replica without the router:\n%s", res.logs)
	}
	mustMetric(t, res.reg, "probe_replicas", nil, 3)
	mustMetric(t, res.reg, "probe_replicas_succeeded", nil, 2)
	for i, name := range []string{"traefik-a", "traefik-b", "traefik-c"} {
		mustMetric(t, res.reg, "probe_replica_success", map[string]string{"replica": f.addrs[i], "namespace": "traefik", "pod": name}, boolValue(i != 1))
	}
	for _, want := range []string{
		"pod=traefik-old reason=terminating",
		`pod=traefik-pending reason="phase Pending"`,
		"(pod traefik/traefik-b): 404 page not found: the replica has no router for this host",
	} {
		if !strings.Contains(res.logs, want) {
			t.Errorf("log lacks %q:\n%s", want, res.logs)
		}
	}

	t.Run("no such port", func(t *testing.T) {
		m := testModule(t, "prober: ttyd_token\ntimeout: 5s\nvia: {replicas: \"k8s:traefik/app.kubernetes.io/name=traefik:websecure\"}")
		res := runProbeDirect(t, probeFor(Spec{Probe: probeTTYDToken}, m), "http://"+viaHost, m, env)
		if res.ok || !strings.Contains(res.logs, `no container port named \"websecure\"`) || !strings.Contains(res.logs, "no replicas found") {
			t.Fatalf("ok=%v\n%s", res.ok, res.logs)
		}
		mustMetric(t, res.reg, "probe_replicas", nil, 0)
	})
}

// allowed_targets applies to every replica: a denied one fails with the
// reason and is not dialled; the others are probed as usual. The target's
// host, which the replicas route by, must be allowed too.
func TestViaAllowlist(t *testing.T) {
	f := newViaFronts(t)
	_, port, _ := net.SplitHostPort(f.addrs[1])
	denied := net.JoinHostPort("127.0.0.2", port)
	replicas := f.addrs[0] + "," + denied + "," + f.addrs[2]
	h, _, _ := newTestHandler(t, viaConfig(`
  token:
    prober: ttyd_token
    timeout: 5s
    allowed_targets: ["127.0.0.1", "`+viaHost+`"]
    via: {replicas: "`+replicas+`", min_success: 2}
`), 10)
	before := f.fronts[1].Requests(viaHost)
	debug, m := probeVia(t, h, "token", "http://"+viaHost)
	wantMetric(t, m, "probe_success", 1)
	wantMetric(t, m, replicaKey("probe_replica_success", denied, ""), 0)
	wantMetric(t, m, replicaKey("probe_replica_success", f.addrs[0], ""), 1)
	if !strings.Contains(debug, "replica="+denied) || !strings.Contains(debug, "not dialled: target address 127.0.0.2 is not in allowed_targets") {
		t.Errorf("debug output:\n%s", debug)
	}
	if strings.Contains(debug, "connection refused") {
		t.Errorf("the denied replica was dialled:\n%s", debug)
	}
	if f.fronts[1].Requests(viaHost) != before {
		t.Error("the front behind the denied address got a request")
	}

	rec := get(h, "/probe?module=token&target=http://other.example.invalid", nil)
	if rec.Code != http.StatusForbidden || !strings.Contains(rec.Body.String(), "other.example.invalid") {
		t.Errorf("target host outside allowed_targets: %d %s", rec.Code, rec.Body)
	}
}

// Over TLS each replica gets the target's server name, not its address;
// the certificate is checked against it.
func TestViaKeepsTheTargetsServerName(t *testing.T) {
	backend := ttyd.NewServer(ttyd.Options{})
	t.Cleanup(backend.Close)
	bu, _ := url.Parse(backend.URL)
	var fronts []*ttyd.HostFront
	var addrs []string
	for range 2 {
		fr := ttyd.NewHostFront(map[string]*url.URL{"example.com": bu}, true)
		t.Cleanup(fr.Close)
		fronts = append(fronts, fr)
		addrs = append(addrs, fr.Listener.Addr().String())
	}
	ca := filepath.Join(t.TempDir(), "ca.pem")
	var pems []byte
	for _, fr := range fronts {
		pems = append(pems, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: fr.Certificate().Raw})...)
	}
	if err := os.WriteFile(ca, pems, 0o600); err != nil {
		t.Fatal(err)
	}
	h, _, _ := newTestHandler(t, viaConfig(`
  http_tls:
    prober: http
    timeout: 5s
    via: {replicas: "`+strings.Join(addrs, ",")+`"}
    http: {http_client_config: {tls_config: {ca_file: `+ca+`}}}
  ws_tls:
    prober: ttyd_ws
    timeout: 5s
    via: {replicas: "`+strings.Join(addrs, ",")+`"}
    ttyd_ws: {http_client_config: {tls_config: {ca_file: `+ca+`}}}
`), 10)
	for _, module := range []string{"http_tls", "ws_tls"} {
		debug, m := probeVia(t, h, module, "https://example.com")
		wantMetric(t, m, "probe_success", 1)
		wantMetric(t, m, "probe_replicas_succeeded", 2)
		for _, fr := range fronts {
			names := fr.ServerNames()
			if len(names) == 0 || slices.ContainsFunc(names, func(s string) bool { return s != "example.com" }) {
				t.Errorf("%s: SNI %q, want only example.com\n%s", module, names, debug)
			}
		}
	}
	// With the hostname parameter, that is the name each replica gets.
	q := url.Values{"module": {"http_tls"}, "target": {"https://other.invalid"}, "hostname": {"example.com"}}
	if rec := get(h, "/probe?"+q.Encode(), nil); !strings.Contains(rec.Body.String(), "probe_success 1") {
		t.Errorf("hostname with via:\n%s", rec.Body)
	}
}

func TestViaConfigErrors(t *testing.T) {
	for _, tc := range []struct{ module, want string }{
		{"prober: traefik_parity\nvia: {replicas: \"127.0.0.1:1\"}\ntraefik_parity: {}", "test.yml:5: module \"m\": prober traefik_parity cannot be sent through replicas (via: works with http, ttyd_token, ttyd_ws"},
		{"prober: http\nvia: {replicas: \"\"}", "test.yml:5: module \"m\": via.replicas is required"},
		{"prober: http\nvia: {replicas: \"127.0.0.1\"}", `test.yml:5: module "m": via: replicas "127.0.0.1": "127.0.0.1" is not host:port`},
		{"prober: http\nvia: {replicas: \"a:1,a:1\"}", "listed twice"},
		{"prober: http\nvia: {replicas: \"k8s:traefik/app=traefik:Web_\"}", "neither a number nor a port name"},
		{"prober: http\nvia: {replicas: \"dns:traefik:0\"}", "bad port"},
		{"prober: http\nvia:\n  replicas: a:1\n  min_success: 0", "test.yml:7: module \"m\": min_success \"0\" must be all"},
		{"prober: http\nvia:\n  replicas: a:1\n  min_success: 120%", "at most 100%"},
		{"prober: http\nvia:\n  replicas: a:1\n  min_sucess: 2", "test.yml:7: module \"m\": unknown key \"min_sucess\""},
		{"prober: http\nvia: [a]", "via must be a mapping"},
		{"prober: http\nvia: {replicas: \"a:1\"}\nhttp: {http_client_config: {proxy_url: \"http://127.0.0.1:3128\"}}", "cannot be combined with http_client_config.proxy_url"},
	} {
		var b strings.Builder
		b.WriteString("modules:\n  m:\n")
		for _, line := range strings.Split(tc.module, "\n") {
			b.WriteString("    " + line + "\n")
		}
		_, err := config.Parse([]byte("\n"+b.String()), "test.yml")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s:\n got %v\nwant %q", tc.module, err, tc.want)
		}
	}
	// A valid via renders back (debug output and history show it).
	m := testModule(t, "prober: http\nvia: {replicas: \"a:1,b:2\", min_success: 50%}")
	if y := m.YAML(); !strings.Contains(y, "replicas: a:1,b:2") || !strings.Contains(y, "min_success: 50%") {
		t.Errorf("rendered:\n%s", y)
	}
}

// BenchmarkVia measures a ttyd_token probe through the handler straight to
// one front (the Service's view) and through n fronts with via, all before
// one fake ttyd: what each replica adds to a probe.
func BenchmarkVia(b *testing.B) {
	backend := ttyd.NewServer(ttyd.Options{})
	b.Cleanup(backend.Close)
	bu, _ := url.Parse(backend.URL)
	var addrs []string
	for range 10 {
		f := ttyd.NewHostFront(map[string]*url.URL{viaHost: bu}, false)
		b.Cleanup(f.Close)
		addrs = append(addrs, f.Listener.Addr().String())
	}
	yml := "modules:\n  direct:\n    prober: ttyd_token\n    ttyd_token: {headers: {Host: " + viaHost + "}}\n"
	for _, n := range []int{1, 3, 10} {
		yml += fmt.Sprintf("  via%d:\n    prober: ttyd_token\n    via: {replicas: %q}\n", n, strings.Join(addrs[:n], ","))
	}
	cfg, err := config.Parse([]byte(yml), "bench.yml")
	if err != nil {
		b.Fatal(err)
	}
	h := NewHandler(HandlerOptions{Config: func() *config.Config { return cfg }})
	for _, tc := range []struct{ module, target string }{
		{"direct", "http://" + addrs[0]}, {"via1", "http://" + viaHost}, {"via3", "http://" + viaHost}, {"via10", "http://" + viaHost},
	} {
		b.Run(tc.module, func(b *testing.B) {
			path := "/probe?" + url.Values{"module": {tc.module}, "target": {tc.target}}.Encode()
			b.ReportAllocs()
			for b.Loop() {
				if rec := get(h, path, nil); !strings.Contains(rec.Body.String(), "probe_success 1") {
					b.Fatalf("%s:\n%s", tc.module, rec.Body)
				}
			}
		})
	}
}

// A replica that accepts and never answers costs only itself: the others
// are reported, the probe answers by its deadline with the prober done
// (no overrun), and its reason says it ran out of time.
func TestViaSilentReplica(t *testing.T) {
	f := newViaFronts(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var held []net.Conn
	accepted := make(chan struct{})
	go func() {
		defer close(accepted)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			held = append(held, c)
		}
	}()
	t.Cleanup(func() {
		l.Close()
		<-accepted
		for _, c := range held {
			c.Close()
		}
	})
	replicas := f.addrs[0] + "," + l.Addr().String() + "," + f.addrs[2]
	h, reg, _ := newTestHandler(t, viaConfig(`
  token:
    prober: ttyd_token
    timeout: 1s
    via: {replicas: "`+replicas+`", min_success: 2}
`), 10)
	debug, m := probeVia(t, h, "token", "http://"+viaHost)
	wantMetric(t, m, "probe_success", 1)
	wantMetric(t, m, replicaKey("probe_replica_success", l.Addr().String(), ""), 0)
	wantMetric(t, m, replicaKey("probe_replica_success", f.addrs[0], ""), 1)
	if !hasLine(debug, `msg="replica failed"`, "replica="+l.Addr().String(), "deadline") {
		t.Errorf("debug output:\n%s", debug)
	}
	if v, ok := metricValue(t, reg, "greybox_probe_overruns_total", nil); !ok || v != 0 {
		t.Errorf("greybox_probe_overruns_total = %v (present %v), want 0", v, ok)
	}
}

// Whatever via.replicas says, parsing it neither panics nor accepts a
// replica greybox could not dial as given.
func FuzzViaReplicas(f *testing.F) {
	for _, s := range []string{"k8s:traefik/app.kubernetes.io/name=traefik:websecure", "k8s:traefik/app=traefik:8000",
		"dns:traefik.traefik.svc:8443", "127.0.0.1:1,[::1]:2", "a:1,a:1", "k8s:traefik/app in (:9000", "dns::0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, spec string) {
		set, err := parseViaReplicas(spec)
		if err != nil {
			if strings.ContainsAny(err.Error(), "\r\n") && !strings.ContainsAny(spec, "\r\n") {
				t.Errorf("multi-line error for %q: %v", spec, err)
			}
			return
		}
		if set.discovered != nil {
			return
		}
		for _, r := range set.static {
			if _, _, err := net.SplitHostPort(r); err != nil {
				t.Fatalf("%q: accepted replica %q: %v", spec, r, err)
			}
		}
	})
}
