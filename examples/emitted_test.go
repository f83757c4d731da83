package examples_test

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/greybox-probe/greybox/config"
	"github.com/greybox-probe/greybox/internal/testpeer/traefik"
	"github.com/greybox-probe/greybox/internal/testpeer/ttyd"
	"github.com/greybox-probe/greybox/prober"
	"github.com/greybox-probe/greybox/remediate"
	"github.com/greybox-probe/greybox/server"
)

// emittedMetricNames is the set of metric names greybox really produces:
// every prober is run through the /probe handler against the test peers
// (with settings that reach its optional metrics), and the server's and the
// remediator's own collectors are described. A metric renamed in code but
// not in an alert or dashboard fails here instead of paging nobody.
func emittedMetricNames(t *testing.T) map[string]bool {
	t.Helper()
	names := map[string]bool{"up": true}

	// greybox's own /metrics, after one probe so its vectors have series.
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") }))
	defer target.Close()
	srvReg := prometheus.NewRegistry()
	cfg, err := config.Parse([]byte("modules:\n  m: {prober: http}\n"), "emitted.yml")
	if err != nil {
		t.Fatal(err)
	}
	srv := server.New(server.Options{Config: cfg, Logger: slog.New(slog.DiscardHandler), Registry: srvReg, HistorySize: 1})
	srv.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/probe?module=m&target="+url.QueryEscape(target.URL), nil))
	mfs, err := srvReg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		addFamily(names, mf.GetName(), mf.GetType())
	}
	names["greybox_build_info"] = true // versioncollector, registered by cmd/greybox

	// The remediator's own metrics, vectors included.
	remediate.NewMetrics(&describingRegisterer{names: names})
	names["greybox_remediator_build_info"] = true

	for name := range probeMetricNames(t) {
		names[name] = true
	}
	// The variants above exist to reach optional metrics; if one stops
	// reaching its metric the set is quietly smaller, so check a witness
	// of each.
	for _, want := range []string{
		"probe_ssl_earliest_cert_expiry", "probe_ttyd_token_redirect_allowed", "probe_ttyd_ws_expect_matched",
		"probe_ttyd_ws_first_frame_seconds", "probe_k8s_dependency_ready", "probe_k8s_log_matched_lines",
		"probe_traefik_replica_missing_routers", "probe_traefik_replica_in_grace", "probe_replica_success",
		"greybox_probe_requests_total", "greybox_probe_duration_seconds_bucket", "greybox_remediator_actions_total",
	} {
		if !names[want] {
			t.Errorf("emitted metrics lack %s: a probe variant no longer reaches it", want)
		}
	}
	return names
}

// probeMetricNames runs one probe per prober (and variant) and collects
// the names of what came back.
func probeMetricNames(t *testing.T) map[string]bool {
	t.Helper()
	names := map[string]bool{}

	tlsTarget := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") }))
	t.Cleanup(tlsTarget.Close)

	term := ttyd.NewServer(ttyd.Options{Writable: true})
	t.Cleanup(term.Close)
	fwd := ttyd.NewForwardAuth(ttyd.ForwardAuthOptions{AuthURL: "https://auth.example.com/start"})
	t.Cleanup(fwd.Close)

	replicas := []*traefik.Server{
		traefik.Start(t, traefik.Fixtures()),
		traefik.Start(t, traefik.Fixtures()),
		traefik.Start(t, traefik.Fixtures().Without(traefik.ByProvider("kubernetes"))),
	}
	static := make([]string, len(replicas))
	for i, r := range replicas {
		static[i] = r.URL
	}
	_, replicaPort, _ := strings.Cut(strings.TrimPrefix(replicas[0].URL, "http://"), ":")

	kube := emittedFakeCluster()
	bb := startBlackboxPeers(t)
	yml := fmt.Sprintf(`
modules:
  http_tls:
    prober: http
    http: {http_client_config: {tls_config: {insecure_skip_verify: true}}}
  token:
    prober: ttyd_token
  token_pinned:
    prober: ttyd_token
    ttyd_token: {valid_status_codes: [302], redirect_host: auth.example.com}
  ws:
    prober: ttyd_ws
    ttyd_ws: {send: "echo hi\r", expect: "hi"}
  token_via:
    prober: ttyd_token
    via: {replicas: "%s"}
  logs:
    prober: k8s_log_errors
    k8s_log_errors:
      container: app
      patterns: [boom]
      dependencies: [{name: db, kind: Deployment}]
  parity_static:
    prober: traefik_parity
  parity_k8s:
    prober: traefik_parity
    traefik_parity: {grace_period: 1m}
  tcp:
    prober: tcp
    tcp: {query_response: [{expect: "^SSH-([^-]+)-", labels: [{name: version, value: "${1}"}]}]}
  unix:
    prober: unix
    unix: {allowed_paths: [%q], query_response: [{expect: "^SSH-"}]}
  dns:
    prober: dns
    dns: {query_name: example.test, transport_protocol: udp}
  grpc:
    prober: grpc
  websocket:
    prober: websocket
  icmp:
    prober: icmp
`, strings.TrimPrefix(term.URL, "http://"), bb.unixPath)
	cfg, err := config.Parse([]byte(yml), "emitted.yml")
	if err != nil {
		t.Fatal(err)
	}
	h := prober.NewHandler(prober.HandlerOptions{
		Config: func() *config.Config { return cfg },
		Kube:   func() (kubernetes.Interface, error) { return kube, nil },
	})
	for module, target := range map[string]string{
		"http_tls":      tlsTarget.URL,
		"token":         term.URL,
		"token_pinned":  fwd.URL,
		"ws":            term.URL,
		"token_via":     term.URL,
		"logs":          "default/app=web",
		"parity_static": strings.Join(static, ","),
		"parity_k8s":    "k8s:default/app=traefik:" + replicaPort,
		"tcp":           bb.tcp,
		"unix":          bb.unixPath,
		"dns":           bb.dns,
		"grpc":          bb.grpc,
		"websocket":     bb.websocket,
		"icmp":          "127.0.0.1",
	} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/probe?module="+module+"&target="+url.QueryEscape(target), nil))
		if rec.Code != http.StatusOK {
			t.Fatalf("probe %s: %d %s", module, rec.Code, rec.Body)
		}
		parser := expfmt.NewTextParser(model.LegacyValidation)
		mfs, err := parser.TextToMetricFamilies(rec.Body)
		if err != nil {
			t.Fatalf("probe %s: %v", module, err)
		}
		for name, mf := range mfs {
			addFamily(names, name, mf.GetType())
		}
	}
	return names
}

// blackboxPeers are local servers for the blackbox probers: an SSH-like
// banner on TCP and on a unix socket, a DNS server, a gRPC health server
// and a WebSocket endpoint.
type blackboxPeers struct {
	tcp, unixPath, dns, grpc, websocket string
}

func startBlackboxPeers(t *testing.T) blackboxPeers {
	t.Helper()
	var p blackboxPeers
	banner := func(l net.Listener) {
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				_, _ = io.WriteString(c, "SSH-2.0-OpenSSH_9.2\r\n")
				c.Close()
			}
		}()
		t.Cleanup(func() { l.Close() })
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	banner(l)
	p.tcp = l.Addr().String()
	p.unixPath = filepath.Join(t.TempDir(), "banner.sock")
	ul, err := net.Listen("unix", p.unixPath)
	if err != nil {
		t.Fatal(err)
	}
	banner(ul)

	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	up := make(chan struct{})
	ds := &dns.Server{PacketConn: pc, NotifyStartedFunc: func() { close(up) }, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		if rr, err := dns.NewRR("example.test. 60 IN A 192.0.2.1"); err == nil {
			m.Answer = append(m.Answer, rr)
		}
		_ = w.WriteMsg(m)
	})}
	go func() { _ = ds.ActivateAndServe() }()
	<-up
	t.Cleanup(func() { _ = ds.Shutdown() })
	p.dns = pc.LocalAddr().String()

	gl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	healthpb.RegisterHealthServer(gs, health.NewServer())
	go func() { _ = gs.Serve(gl) }()
	t.Cleanup(gs.Stop)
	p.grpc = gl.Addr().String()

	ws := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		up := websocket.Upgrader{}
		if c, err := up.Upgrade(w, r, nil); err == nil {
			c.Close()
		}
	}))
	t.Cleanup(ws.Close)
	p.websocket = "ws" + strings.TrimPrefix(ws.URL, "http")
	return p
}

// emittedFakeCluster has a pod with a log for k8s_log_errors, a ready
// dependency, and a Traefik pod at 127.0.0.1 for discovery (young, so the
// grace-period series appears too).
func emittedFakeCluster() kubernetes.Interface {
	ready := []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
	one := int32(1)
	cs := fake.NewClientset(
		&corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "web-1", Namespace: "default", Labels: map[string]string{"app": "web"}, CreationTimestamp: metav1.NewTime(time.Now().Add(-time.Hour))},
			Spec:       corev1.PodSpec{NodeName: "n", Containers: []corev1.Container{{Name: "app"}}},
			Status:     corev1.PodStatus{Phase: corev1.PodRunning, Conditions: ready, ContainerStatuses: []corev1.ContainerStatus{{Name: "app", Ready: true}}},
		},
		&corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "traefik-1", Namespace: "default", Labels: map[string]string{"app": "traefik"}, CreationTimestamp: metav1.NewTime(time.Now())},
			Spec:       corev1.PodSpec{NodeName: "n", Containers: []corev1.Container{{Name: "traefik"}}},
			Status:     corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "127.0.0.1", Conditions: ready},
		},
		&appsv1.Deployment{
			ObjectMeta: metav1.ObjectMeta{Name: "db", Namespace: "default", Generation: 1},
			Spec:       appsv1.DeploymentSpec{Replicas: &one},
			Status:     appsv1.DeploymentStatus{ReadyReplicas: 1, ObservedGeneration: 1},
		},
	)
	cs.PrependReactor("get", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if a.GetSubresource() != "log" {
			return false, nil, nil
		}
		return true, &runtime.Unknown{Raw: []byte("ok\nboom\nok\n")}, nil
	})
	return cs
}

func addFamily(names map[string]bool, name string, typ dto.MetricType) {
	names[name] = true
	if typ == dto.MetricType_HISTOGRAM || typ == dto.MetricType_SUMMARY {
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			names[name+suffix] = true
		}
	}
}

var fqNameRE = regexp.MustCompile(`fqName: "([^"]+)"`)

// describingRegisterer records the names of everything registered through
// it, including vectors that have no series yet.
type describingRegisterer struct {
	prometheus.Registerer
	names map[string]bool
}

func (d *describingRegisterer) Register(c prometheus.Collector) error {
	d.describe(c)
	return nil
}

func (d *describingRegisterer) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		d.describe(c)
	}
}

func (d *describingRegisterer) describe(c prometheus.Collector) {
	ch := make(chan *prometheus.Desc, 16)
	go func() { c.Describe(ch); close(ch) }()
	for desc := range ch {
		if m := fqNameRE.FindStringSubmatch(desc.String()); m != nil {
			d.names[m[1]] = true
		}
	}
}

// The blackbox probers are in the emitted set too, so an alert or panel
// on their metrics is checked like the rest.
func TestBlackboxProbersEmitted(t *testing.T) {
	names := emittedMetricNames(t)
	for _, name := range []string{
		"probe_expect_info", "probe_failed_due_to_regex", "probe_dns_answer_rrs", "probe_dns_duration_seconds",
		"probe_grpc_healthcheck_response", "probe_grpc_duration_seconds", "probe_websocket_connection_upgraded",
		"probe_websocket_duration_seconds", "probe_icmp_duration_seconds", "probe_ip_protocol",
	} {
		if !names[name] {
			t.Errorf("%s is not emitted by any prober run", name)
		}
	}
}
