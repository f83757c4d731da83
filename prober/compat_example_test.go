package prober

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"

	"github.com/greybox-probe/greybox/config"
)

// Issue 15's must-show: examples/blackbox.yml, a blackbox_exporter file
// with every prober and option, answers through /probe, module by module,
// against local servers, with the metric names blackbox_exporter's prober
// emits in the same situation. The names were read off blackbox's source
// (prober/*.go at HEAD): which families each prober registers up front,
// and which only once it got that far (TLS after a handshake, probe_dns_serial
// for SOA, probe_expect_info for a labelled expect, chooseProtocol's three
// once the target is resolved).
//
// Several modules cannot succeed here, as written: they verify TLS against
// the system roots (and a server_name such as www.example.com), which no
// local test certificate satisfies, or they are built to fail
// (dns_udp's validators contradict each other). Those are probed all the
// same and their answer checked for the names blackbox emits on that
// failure; the row says why it fails and the log line that says so.

// exampleSeries is one series the answer must (or must not) carry.
type exampleSeries struct {
	name   string
	labels map[string]string
	value  float64
	// anyValue: only the series' presence is checked.
	anyValue bool
	absent   bool
}

type exampleProbe struct {
	target string
	ok     bool
	// names are the probe_* families blackbox emits here, besides the
	// handler's probe_success, probe_duration_seconds and
	// probe_timeout_seconds; the answer must carry exactly these plus the
	// prober's greybox additions (greyboxExtras).
	names  []string
	series []exampleSeries
	// log must appear in the probe's log: why it failed, or what it did.
	log   string
	check func(t *testing.T)
}

type exampleRow struct {
	prober string
	// needs skips the row where the machine cannot run it (ICMP, ::1).
	needs  func(t *testing.T)
	probes []exampleProbe
}

// Families blackbox registers, by the step that registers them.
var (
	exHandler = []string{"probe_success", "probe_duration_seconds", "probe_timeout_seconds"}
	// chooseProtocol, once a target is resolved.
	exIP      = []string{"probe_dns_lookup_time_seconds", "probe_ip_protocol", "probe_ip_addr_hash"}
	exHTTP    = []string{"probe_http_duration_seconds", "probe_http_content_length", "probe_http_uncompressed_body_length", "probe_http_redirects", "probe_http_ssl", "probe_http_status_code", "probe_http_version", "probe_failed_due_to_regex"}
	exHTTPTLS = []string{"probe_ssl_earliest_cert_expiry", "probe_tls_version_info", "probe_tls_cipher_info", "probe_ssl_last_chain_expiry_timestamp_seconds", "probe_ssl_last_chain_info"}
	// probeQueryResponses (tcp, unix): the two regexp/bytes gauges once
	// connected; after a handshake, the TLS families without
	// probe_tls_cipher_info.
	exQR    = []string{"probe_failed_due_to_regex", "probe_failed_due_to_bytes"}
	exQRTLS = []string{"probe_ssl_earliest_cert_expiry", "probe_tls_version_info", "probe_ssl_last_chain_expiry_timestamp_seconds", "probe_ssl_last_chain_info"}
	// The same with insecure_skip_verify: no verified chain, so no
	// probe_ssl_last_chain_expiry_timestamp_seconds. blackbox registers it
	// anyway, at year 1 (-62135596800); greybox leaves it out, as
	// TestTCPCompat's "tls insecure: no chain expiry" holds.
	exQRTLSUnverified = []string{"probe_ssl_earliest_cert_expiry", "probe_tls_version_info", "probe_ssl_last_chain_info"}
	exDNS             = []string{"probe_dns_duration_seconds", "probe_dns_answer_rrs", "probe_dns_authority_rrs", "probe_dns_additional_rrs", "probe_dns_query_succeeded"}
	exICMP            = []string{"probe_icmp_duration_seconds", "probe_icmp_reply_hop_limit"}
	exGRPC            = []string{"probe_grpc_duration_seconds", "probe_grpc_ssl", "probe_grpc_status_code", "probe_grpc_healthcheck_response"}
	// grpc's TLS families: no cipher, no chain expiry.
	exGRPCTLS = []string{"probe_ssl_earliest_cert_expiry", "probe_tls_version_info", "probe_ssl_last_chain_info"}
	exWS      = []string{"probe_websocket_status_code", "probe_websocket_connection_upgraded", "probe_websocket_failed_due_to_regex", "probe_websocket_duration_seconds"}
)

// greyboxExtras are families greybox adds to a prober's answer where
// blackbox has none; any other family not in a row's names fails the test.
// http: the body's bytes on the wire and whether body_size_limit cut it.
// tcp, unix, grpc: probe_tls_cipher_info after a handshake, as blackbox's
// http prober has it and its other probers do not.
var greyboxExtras = map[string][]string{
	"http": {"probe_http_body_bytes", "probe_http_body_truncated"},
	"tcp":  {"probe_tls_cipher_info"},
	"unix": {"probe_tls_cipher_info"},
	"grpc": {"probe_tls_cipher_info"},
}

func exNames(groups ...[]string) []string {
	var out []string
	for _, g := range groups {
		out = append(out, g...)
	}
	return out
}

func exPhases(name string, ps ...string) []exampleSeries {
	var out []exampleSeries
	for _, p := range ps {
		out = append(out, exampleSeries{name: name, labels: map[string]string{"phase": p}, anyValue: true})
	}
	return out
}

// exampleRecorder keeps the last request each path of a test server saw.
type exampleRecorder struct {
	mu   sync.Mutex
	reqs map[string]exampleRequest
}

type exampleRequest struct {
	method string
	header http.Header
	body   string
}

func (r *exampleRecorder) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		b, _ := io.ReadAll(io.LimitReader(req.Body, 1<<16))
		r.mu.Lock()
		if r.reqs == nil {
			r.reqs = map[string]exampleRequest{}
		}
		r.reqs[req.URL.Path] = exampleRequest{method: req.Method, header: req.Header.Clone(), body: string(b)}
		r.mu.Unlock()
		h.ServeHTTP(w, req)
	})
}

func (r *exampleRecorder) last(t *testing.T, path string) exampleRequest {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	req, ok := r.reqs[path]
	if !ok {
		t.Fatalf("the server saw no request for %s", path)
	}
	return req
}

// exampleSMTP is an ESMTP server as smtp_starttls and unix_socket expect
// it: 250-STARTTLS among the EHLO lines, then TLS, then 250-AUTH.
func exampleSMTP(cert *testCert) func(net.Conn) {
	return func(c net.Conn) {
		io.WriteString(c, "220 mail.greybox.test ESMTP Greybox-1.2.3\r\n")
		var rw io.ReadWriter = c
		r := bufio.NewReader(rw)
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			switch strings.TrimSpace(line) {
			case "EHLO prober":
				if _, secure := rw.(*tls.Conn); secure {
					io.WriteString(rw, "250-mail.greybox.test\r\n250-AUTH PLAIN\r\n250 8BITMIME\r\n")
				} else {
					io.WriteString(rw, "250-mail.greybox.test\r\n250-STARTTLS\r\n250 8BITMIME\r\n")
				}
			case "STARTTLS":
				io.WriteString(rw, "220 go ahead\r\n")
				tc := tls.Server(c, cert.serverConfig())
				if tc.Handshake() != nil {
					return
				}
				rw = tc
				r = bufio.NewReader(rw)
			case "QUIT":
				io.WriteString(rw, "221 bye\r\n")
				return
			}
		}
	}
}

// exampleIRC registers a client: PING after NICK and USER, 001 only for
// the matching PONG.
func exampleIRC(c net.Conn) {
	r := bufio.NewReader(c)
	for _, want := range []string{"NICK prober", "USER prober prober prober :prober"} {
		line, err := r.ReadString('\n')
		if err != nil || strings.TrimSpace(line) != want {
			io.WriteString(c, "ERROR :expected "+want+"\r\n")
			return
		}
	}
	io.WriteString(c, ":irc.greybox.test NOTICE * :Looking up your hostname\r\nPING :greybox42\r\n")
	line, err := r.ReadString('\n')
	if err != nil {
		return
	}
	if strings.TrimSpace(line) != "PONG greybox42" {
		io.WriteString(c, "ERROR :bad PONG\r\n")
		return
	}
	io.WriteString(c, ":irc.greybox.test 001 prober :Welcome\r\n")
	_, _ = io.Copy(io.Discard, c)
}

// tlsLines serves TLS with cert and greets with line.
func tlsLines(cert *testCert, line string) func(net.Conn) {
	return func(c net.Conn) {
		tc := tls.Server(c, cert.serverConfig())
		if tc.Handshake() != nil {
			return
		}
		io.WriteString(tc, line)
		_, _ = io.Copy(io.Discard, tc)
	}
}

// exampleZone answers the names examples/blackbox.yml's dns modules ask
// (www.prometheus.io, prometheus.io SOA, does-not-exist.prometheus.io),
// from this test's server only.
func exampleZone(w dns.ResponseWriter, r *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(r)
	m.Authoritative = true
	rr := func(s string) dns.RR {
		x, err := dns.NewRR(s)
		if err != nil {
			panic(err)
		}
		return x
	}
	q := r.Question[0]
	switch {
	case q.Name == "www.prometheus.io." && q.Qtype == dns.TypeAAAA:
		m.Answer = append(m.Answer, rr("www.prometheus.io. 300 IN AAAA ::1"))
	case q.Name == "www.prometheus.io.":
		m.Answer = append(m.Answer, rr("www.prometheus.io. 300 IN A 127.0.0.1"))
		m.Ns = append(m.Ns, rr("prometheus.io. 300 IN NS ns1.prometheus.io."))
		m.Extra = append(m.Extra, rr("ns1.prometheus.io. 300 IN A 192.0.2.53"))
	case q.Name == "prometheus.io." && q.Qtype == dns.TypeSOA:
		m.Answer = append(m.Answer, rr("prometheus.io. 300 IN SOA ns1.prometheus.io. hostmaster.prometheus.io. 2026120301 3600 600 86400 300"))
	case q.Name == "does-not-exist.prometheus.io.":
		m.Rcode = dns.RcodeNameError
		m.Ns = append(m.Ns, rr("prometheus.io. 300 IN SOA ns1.prometheus.io. hostmaster.prometheus.io. 2026120301 3600 600 86400 300"))
	default:
		// Anything else (the guard's own lookups): no such name.
		m.Rcode = dns.RcodeNameError
	}
	_ = w.WriteMsg(m)
}

// newExampleDNS serves exampleZone as newTestDNS serves testZone.
func newExampleDNS(t *testing.T) *testDNS {
	return serveTestDNS(t, func(*testDNS) dns.Handler { return dns.HandlerFunc(exampleZone) })
}

// newServiceGRPC is grpc-go's health service on ::1 with "service1"
// SERVING, as grpc_plain asks (ip6, no fallback), recording the metadata
// it got; nil with the reason where ::1 cannot be listened on.
func newServiceGRPC(t *testing.T) (*grpcHealthServer, error) {
	t.Helper()
	l, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		return nil, err
	}
	h := &grpcHealthServer{addr: l.Addr().String()}
	srv := grpc.NewServer(grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, next grpc.UnaryHandler) (any, error) {
		md, _ := metadata.FromIncomingContext(ctx)
		h.mu.Lock()
		h.md = md
		h.mu.Unlock()
		return next(ctx, req)
	}))
	hs := health.NewServer()
	hs.SetServingStatus("service1", healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(srv, hs)
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(l) }()
	t.Cleanup(func() { srv.Stop(); <-done })
	return h, nil
}

// newOriginWSServer greets and echoes as newWSServer's servers do, but
// accepts a cross-origin upgrade from origin (websocket_query sends
// Origin: https://example.com, which gorilla's default check refuses).
func newOriginWSServer(t *testing.T, origin string) *wsServer {
	t.Helper()
	return startWSServer(t, nil, websocket.Upgrader{CheckOrigin: func(r *http.Request) bool {
		o := r.Header.Get("Origin")
		return o == "" || o == origin
	}}, greetAndEcho)
}

func TestExampleBlackboxModules(t *testing.T) {
	cfg, err := config.Load("../examples/blackbox.yml")
	if err != nil {
		t.Fatal(err)
	}
	cert := newTestCert(t)
	d := newExampleDNS(t)

	// HTTP: one plain server for most modules, a TLS one (HTTP/2
	// offered), an HTTP/3 one, and the compression fixture.
	var rec exampleRecorder
	mux := http.NewServeMux()
	mux.Handle("/", okHandler("hello"))
	mux.HandleFunc("/versions", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Access-Control-Allow-Origin", "*")
		fmt.Fprint(w, "Download the latest version here")
	})
	mux.HandleFunc("/json", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(w, `{"status": "ok", "ready": true, "replicas": ["a", "b"]}`)
	})
	mux.HandleFunc("/modified", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Last-Modified", "Wed, 02 Dec 2026 10:00:00 GMT")
		fmt.Fprint(w, "hello")
	})
	plain := newHTTPCompatServer(t, rec.wrap(mux), nil, false)
	tlsHTTP := newHTTPCompatServer(t, okHandler("hello"), cert, true)
	h3 := "https://127.0.0.1:" + newHTTP3Server(t, okHandler("hello"), cert) + "/"
	const payload = "hello compressed world"
	comp := newHTTPCompatServer(t, compressedHandler(t, payload), nil, false)

	// TCP and unix line servers.
	ssh := newLineServer(t, "tcp", "127.0.0.1:0", writeLines("SSH-2.0-OpenSSH_9.6 Ubuntu-3ubuntu13\r\n"))
	smtp := newLineServer(t, "tcp", "127.0.0.1:0", exampleSMTP(cert))
	irc := newLineServer(t, "tcp", "127.0.0.1:0", exampleIRC)
	pop3s := newLineServer(t, "tcp", "127.0.0.1:0", tlsLines(cert, "+OK POP3 ready\r\n"))
	sockDir := t.TempDir()
	smtpSock, _ := unixSocket(t, sockDir, "smtp.sock", exampleSMTP(cert))
	tlsSock, _ := unixSocket(t, sockDir, "tls.sock", tlsLines(cert, "+OK tls\r\n"))

	dot := newDoTFront(t, cert, d.addr)

	grpcPlain, grpcPlainErr := newServiceGRPC(t)
	grpcPlainAddr := ""
	if grpcPlain != nil {
		grpcPlainAddr = "[::1]:" + portOf(grpcPlain.addr)
	}
	grpcTLS := newGRPCHealthServer(t, credentials.NewTLS(cert.serverConfig()))
	ws := newOriginWSServer(t, "https://example.com")

	// The unix modules list /run paths this test cannot serve on. Their
	// allowed_paths are enforced as written (a socket elsewhere is
	// refused before any dial), then pointed at this test's directory.
	hist := NewHistory(200, 0)
	h := NewHandler(HandlerOptions{
		Config: func() *config.Config { return cfg }, History: hist, TimeoutOffset: 500 * time.Millisecond,
		Registerer: prometheus.NewRegistry(), Resolver: d.resolver(),
	})
	for _, name := range []string{"unix_socket", "unix_tls"} {
		r := get(h, "/probe?module="+name+"&target="+url.QueryEscape(smtpSock), nil)
		if r.Code != http.StatusForbidden || !strings.Contains(r.Body.String(), "not in unix.allowed_paths") {
			t.Errorf("%s with the file's allowed_paths, socket %s: %d %s, want 403", name, smtpSock, r.Code, r.Body)
		}
		cfg.Modules[name].Settings.(*UnixSettings).AllowedPaths = []string{filepath.Join(sockDir, "*.sock")}
	}

	bodyFile, err := os.ReadFile("../examples/blackbox-body.json")
	if err != nil {
		t.Fatal(err)
	}
	hostPort := func(s *httptest.Server) string { return s.Listener.Addr().String() }
	basic := "Basic " + base64.StdEncoding.EncodeToString([]byte("prober:not-a-real-password"))
	v := func(name string, value float64) exampleSeries { return exampleSeries{name: name, value: value} }
	l := func(name string, labels map[string]string) exampleSeries {
		return exampleSeries{name: name, labels: labels, anyValue: true}
	}
	no := func(name string) exampleSeries { return exampleSeries{name: name, absent: true} }
	httpPhases := exPhases("probe_http_duration_seconds", "resolve", "connect", "processing", "transfer")
	httpOK := func(extra ...exampleSeries) []exampleSeries {
		return append(append([]exampleSeries{
			v("probe_http_status_code", 200), v("probe_http_ssl", 0), v("probe_http_version", 1.1),
			v("probe_http_redirects", 0), v("probe_failed_due_to_regex", 0),
			v("probe_ip_protocol", 4), v("probe_ip_addr_hash", hashOf("127.0.0.1")),
		}, httpPhases...), extra...)
	}
	dnsPhases := exPhases("probe_dns_duration_seconds", "resolve", "connect", "request")
	dnsCounts := func(an, ns, ar float64) []exampleSeries {
		return append([]exampleSeries{
			v("probe_dns_query_succeeded", 1), v("probe_dns_answer_rrs", an),
			v("probe_dns_authority_rrs", ns), v("probe_dns_additional_rrs", ar),
		}, dnsPhases...)
	}
	icmpWants := append(exPhases("probe_icmp_duration_seconds", "resolve", "setup", "rtt"), l("probe_icmp_reply_hop_limit", nil))
	grpcServing := func(serving string) []exampleSeries {
		var out []exampleSeries
		for _, s := range grpcServingStatuses() {
			out = append(out, exampleSeries{name: "probe_grpc_healthcheck_response", labels: map[string]string{"serving_status": s}, value: boolValue(s == serving)})
		}
		return append(out, exPhases("probe_grpc_duration_seconds", "resolve", "check")...)
	}
	wsPhases := func(ps ...string) []exampleSeries { return exPhases("probe_websocket_duration_seconds", ps...) }
	chainInfo := l("probe_ssl_last_chain_info", map[string]string{"subject": "CN=greybox.test", "issuer": "CN=greybox.test", "subjectalternative": "greybox.test", "serialnumber": "0abc"})
	unverified := "failed to verify certificate"

	rows := map[string]exampleRow{
		"http_2xx": {prober: "http", probes: []exampleProbe{{target: plain.URL + "/", ok: true, names: exNames(exHTTP, exIP), series: httpOK()},
			// Last-Modified adds blackbox's probe_http_last_modified_timestamp_seconds.
			{target: plain.URL + "/modified", ok: true, names: exNames(exHTTP, exIP, []string{"probe_http_last_modified_timestamp_seconds"}), series: httpOK(
				v("probe_http_last_modified_timestamp_seconds", float64(time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC).Unix())))}}},
		"http_post_2xx": {prober: "http", probes: []exampleProbe{{target: plain.URL + "/post", ok: true, names: exNames(exHTTP, exIP), series: httpOK(),
			check: func(t *testing.T) {
				r := rec.last(t, "/post")
				if r.method != http.MethodPost || r.body != string(bodyFile) || r.header.Get("Content-Type") != "application/json" {
					t.Errorf("server saw %s %q Content-Type %q; want POST of blackbox-body.json as application/json", r.method, r.body, r.header.Get("Content-Type"))
				}
			}}}},
		// fail_if_not_ssl: true, and no tls_config to trust a local
		// certificate: against a plain server that passes every other
		// check, the probe fails on that one.
		"http_versions_headers": {prober: "http", probes: []exampleProbe{{target: plain.URL + "/versions", ok: false, names: exNames(exHTTP, exIP),
			series: httpOK(), log: "not TLS and fail_if_not_ssl is set"}}},
		// server_name www.example.com verified against the system roots:
		// the TLS server's handshake fails (blackbox's http families,
		// none of TLS). Over http:// the rest of the module (PUT, body,
		// basic_auth, http_headers) is shown to reach the server.
		"http_tls_client": {prober: "http", probes: []exampleProbe{
			{target: tlsHTTP.URL + "/", ok: false, names: exNames(exHTTP, exIP), series: []exampleSeries{v("probe_http_ssl", 0), v("probe_http_status_code", 0), no("probe_tls_version_info")}, log: unverified},
			{target: plain.URL + "/put", ok: true, names: exNames(exHTTP, exIP), series: httpOK(), check: func(t *testing.T) {
				r := rec.last(t, "/put")
				if r.method != http.MethodPut || r.body != `{"ping": true}` || r.header.Get("Authorization") != basic || r.header.Get("X-Api-Key") != "not-a-real-key" {
					t.Errorf("server saw %s %q, Authorization %q, X-Api-Key %q", r.method, r.body, r.header.Get("Authorization"), r.header.Get("X-Api-Key"))
				}
			}},
		}},
		"http_bearer": {prober: "http", probes: []exampleProbe{{target: plain.URL + "/bearer", ok: true, names: exNames(exHTTP, exIP), series: httpOK(), check: func(t *testing.T) {
			if got := rec.last(t, "/bearer").header.Get("Authorization"); got != "Bearer not-a-real-token" {
				t.Errorf("Authorization %q", got)
			}
		}}}},
		// proxy_url is a fixed port (127.0.0.1:3128) this test does not
		// own, so the target is one no_proxy exempts: it is requested
		// directly. skip_resolve_phase_with_proxy: as in blackbox, no
		// resolve step and none of its families (blackbox decides that
		// from the config, not from no_proxy).
		"http_ip4_proxy": {prober: "http", probes: []exampleProbe{{target: plain.URL + "/direct", ok: true, names: exHTTP, series: []exampleSeries{
			v("probe_http_status_code", 200), no("probe_ip_protocol"), no("probe_dns_lookup_time_seconds"),
		}}}},
		// Go's environment proxy never applies to loopback.
		"http_proxy_from_environment": {prober: "http", probes: []exampleProbe{{target: plain.URL + "/", ok: true, names: exNames(exHTTP, exIP), series: httpOK()}}},
		"http_gzip": {prober: "http", probes: []exampleProbe{{target: comp.URL + "/gzip", ok: true, names: exNames(exHTTP, exIP), series: httpOK(
			v("probe_http_uncompressed_body_length", float64(len(payload))))}}},
		"http_br_accept": {prober: "http", probes: []exampleProbe{{target: comp.URL + "/br", ok: true, names: exNames(exHTTP, exIP), series: httpOK(
			v("probe_http_uncompressed_body_length", float64(len(payload))))}}},
		"http_json_cel": {prober: "http", probes: []exampleProbe{{target: plain.URL + "/json", ok: true, names: exNames(exHTTP, exIP, []string{"probe_failed_due_to_cel"}), series: httpOK(
			v("probe_failed_due_to_cel", 0))}}},
		// No tls_config: the HTTP/3 server's certificate is not trusted.
		"http3": {prober: "http", probes: []exampleProbe{{target: h3, ok: false, names: exNames(exHTTP, exIP), series: []exampleSeries{
			v("probe_http_ssl", 0), no("probe_tls_version_info"),
		}, log: unverified}}},
		"http_source": {prober: "http", probes: []exampleProbe{{target: plain.URL + "/", ok: true, names: exNames(exHTTP, exIP), series: httpOK()}}},

		"tcp_with_leftover_http": {prober: "tcp", probes: []exampleProbe{{target: hostPort(plain), ok: true, names: exNames(exQR, exIP), series: []exampleSeries{v("probe_ip_protocol", 4)}}}},
		"tcp_connect":            {prober: "tcp", probes: []exampleProbe{{target: ssh.Addr(), ok: true, names: exNames(exQR, exIP), series: []exampleSeries{v("probe_failed_due_to_regex", 0), no("probe_tls_version_info")}}}},
		"tcp_connect_ip4": {prober: "tcp", probes: []exampleProbe{{target: ssh.Addr(), ok: true, names: exNames(exQR, exIP), series: []exampleSeries{
			v("probe_ip_protocol", 4), v("probe_ip_addr_hash", hashOf("127.0.0.1")),
		}}}},
		"ssh_banner": {prober: "tcp", probes: []exampleProbe{{target: ssh.Addr(), ok: true, names: exNames(exQR, exIP, []string{"probe_expect_info"}), series: []exampleSeries{
			v("probe_failed_due_to_regex", 0),
			{name: "probe_expect_info", labels: map[string]string{"ssh_version": "OpenSSH_9.6", "ssh_comments": "Ubuntu-3ubuntu13"}, value: 1},
		}}}},
		"ssh_banner_bytes": {prober: "tcp", probes: []exampleProbe{{target: ssh.Addr(), ok: true, names: exNames(exQR, exIP), series: []exampleSeries{v("probe_failed_due_to_bytes", 0)}}}},
		// The dialogue runs up to STARTTLS; the handshake then verifies
		// 127.0.0.1 against the system roots and fails.
		"smtp_starttls": {prober: "tcp", probes: []exampleProbe{{target: smtp.Addr(), ok: false, names: exNames(exQR, exIP), series: []exampleSeries{
			v("probe_failed_due_to_regex", 0), no("probe_tls_version_info"),
		}, log: unverified}}},
		"irc_banner": {prober: "tcp", probes: []exampleProbe{{target: irc.Addr(), ok: true, names: exNames(exQR, exIP), series: []exampleSeries{v("probe_failed_due_to_regex", 0)}}}},
		// tls: true with server_name pop.example.com, verified: the dial's
		// handshake fails, before blackbox registers anything but
		// chooseProtocol's families.
		"pop3s_banner": {prober: "tcp", probes: []exampleProbe{{target: pop3s.Addr(), ok: false, names: exIP, log: unverified}}},

		// The dialogue's labelled expect matches, then STARTTLS's
		// handshake (server_name mail.example.com, system roots) fails.
		"unix_socket": {prober: "unix", probes: []exampleProbe{{target: smtpSock, ok: false, names: exNames(exQR, []string{"probe_expect_info"}), series: []exampleSeries{
			{name: "probe_expect_info", labels: map[string]string{"version": "Greybox-1.2.3"}, value: 1},
			v("probe_failed_due_to_regex", 0), no("probe_tls_version_info"), no("probe_ip_protocol"),
		}, log: unverified}}},
		// insecure_skip_verify: TLS families without the verified chain's
		// expiry (see exQRTLSUnverified).
		"unix_tls": {prober: "unix", probes: []exampleProbe{{target: tlsSock, ok: true, names: exNames(exQR, exQRTLSUnverified), series: []exampleSeries{
			v("probe_ssl_earliest_cert_expiry", float64(cert.notAfter.Unix())),
			{name: "probe_tls_version_info", labels: map[string]string{"version": "TLS 1.3"}, value: 1},
			chainInfo, no("probe_ssl_last_chain_expiry_timestamp_seconds"),
		}}}},

		// Built to fail: fail_if_matches_regexp and
		// fail_if_not_matches_regexp on the same 127.0.0.1 answer.
		"dns_udp": {prober: "dns", probes: []exampleProbe{{target: d.addr, ok: false, names: exNames(exDNS, exIP), series: dnsCounts(1, 1, 1), log: "fail_if_matches_regexp"}}},
		"dns_soa": {prober: "dns", probes: []exampleProbe{{target: d.addr, ok: true, names: exNames(exDNS, exIP, []string{"probe_dns_serial"}), series: append(dnsCounts(1, 0, 0),
			v("probe_dns_serial", 2026120301))}}},
		"dns_tcp": {prober: "dns", probes: []exampleProbe{{target: d.addr, ok: true, names: exNames(exDNS, exIP), series: append(dnsCounts(1, 1, 1),
			v("probe_ip_protocol", 4), v("probe_ip_addr_hash", hashOf("127.0.0.1")))}}},
		// server_name dns.example.com, system roots: the handshake fails.
		"dns_over_tls": {prober: "dns", probes: []exampleProbe{{target: dot.Addr(), ok: false, names: exNames(exDNS, exIP), series: append(dnsPhases,
			v("probe_dns_query_succeeded", 0)), log: unverified}}},
		"dns_nxdomain": {prober: "dns", probes: []exampleProbe{{target: d.addr, ok: true, names: exNames(exDNS, exIP), series: dnsCounts(0, 1, 0)}}},

		"icmp": {prober: "icmp", needs: func(t *testing.T) { icmpUsable(t, false); icmpUsable(t, true) }, probes: []exampleProbe{
			{target: "127.0.0.1", ok: true, names: exNames(exICMP, exIP), series: append(icmpWants, v("probe_ip_protocol", 4), v("probe_ip_addr_hash", hashOf("127.0.0.1")))},
			{target: "::1", ok: true, names: exNames(exICMP, exIP), series: append(icmpWants, v("probe_ip_protocol", 6), v("probe_ip_addr_hash", hashOf("::1")))},
		}},
		"icmp_ip4_ttl": {prober: "icmp", needs: func(t *testing.T) { icmpUsable(t, false) }, probes: []exampleProbe{
			{target: "127.0.0.1", ok: true, names: exNames(exICMP, exIP), series: append(icmpWants, v("probe_ip_protocol", 4))},
		}},

		// tls: true without tls_config: the certificate is not trusted,
		// so no server answer and no serving status.
		"grpc": {prober: "grpc", probes: []exampleProbe{{target: grpcTLS.addr, ok: false, names: exNames(exGRPC, exIP), series: append(grpcServing(""),
			v("probe_grpc_ssl", 0), v("probe_grpc_status_code", 14), no("probe_tls_version_info"))}}},
		// ip_protocol_fallback: false with the default ip6: a server on ::1.
		"grpc_plain": {prober: "grpc", needs: func(t *testing.T) {
			if grpcPlain == nil {
				t.Skipf("no gRPC server on ::1: %v", grpcPlainErr)
			}
		}, probes: []exampleProbe{{target: grpcPlainAddr, ok: true, names: exNames(exGRPC, exIP), series: append(grpcServing("SERVING"),
			v("probe_grpc_ssl", 0), v("probe_grpc_status_code", 0), v("probe_ip_protocol", 6), v("probe_ip_addr_hash", hashOf("::1"))), check: func(t *testing.T) {
			if got := grpcPlain.lastMD().Get("x-api-key"); !slices.Equal(got, []string{"my-key"}) {
				t.Errorf("x-api-key metadata %q", got)
			}
		}}}},
		"grpc_tls": {prober: "grpc", probes: []exampleProbe{{target: grpcTLS.addr, ok: true, names: exNames(exGRPC, exIP, exGRPCTLS), series: append(grpcServing("SERVING"),
			v("probe_grpc_ssl", 1), v("probe_grpc_status_code", 0),
			v("probe_ssl_earliest_cert_expiry", float64(cert.notAfter.Unix())),
			exampleSeries{name: "probe_tls_version_info", labels: map[string]string{"version": "TLS 1.3"}, value: 1},
			chainInfo)}}},

		"websocket": {prober: "websocket", probes: []exampleProbe{{target: ws.wsURL("/"), ok: true, names: exNames(exWS, exIP), series: append(wsPhases("resolve", "connect", "processing"),
			v("probe_websocket_status_code", 101), v("probe_websocket_connection_upgraded", 1), v("probe_ip_protocol", 4))}}},
		"websocket_query": {prober: "websocket", probes: []exampleProbe{{target: ws.wsURL("/query"), ok: true, names: exNames(exWS, exIP), series: append(wsPhases("resolve", "connect", "processing", "transfer"),
			v("probe_websocket_status_code", 101), v("probe_websocket_connection_upgraded", 1), v("probe_websocket_failed_due_to_regex", 0)),
			check: func(t *testing.T) {
				h := ws.lastHeader()
				if h.Get("Origin") != "https://example.com" || h.Get("X-Api-Key") != "not-a-real-key" || h.Get("Authorization") != basic {
					t.Errorf("upgrade headers Origin %q, X-Api-Key %q, Authorization %q", h.Get("Origin"), h.Get("X-Api-Key"), h.Get("Authorization"))
				}
			}}}},
	}

	// One row per module of the file, no row for a module it lacks.
	for name, m := range cfg.Modules {
		row, ok := rows[name]
		if !ok {
			t.Errorf("module %s of examples/blackbox.yml has no row here", name)
			continue
		}
		if row.prober != m.Prober {
			t.Errorf("module %s: row for prober %s, the file's is %s", name, row.prober, m.Prober)
		}
	}
	for name := range rows {
		if _, ok := cfg.Modules[name]; !ok {
			t.Errorf("row %s: no such module in examples/blackbox.yml", name)
		}
	}

	moduleNames := make([]string, 0, len(rows))
	for name := range rows {
		moduleNames = append(moduleNames, name)
	}
	sort.Strings(moduleNames)
	for _, name := range moduleNames {
		row := rows[name]
		t.Run(name, func(t *testing.T) {
			if _, ok := cfg.Modules[name]; !ok {
				t.Skip("not in the file")
			}
			if row.needs != nil {
				row.needs(t)
			}
			for _, p := range row.probes {
				t.Run(strings.NewReplacer("/", "_").Replace(p.target), func(t *testing.T) {
					runExampleProbe(t, h, hist, name, row.prober, p)
				})
			}
		})
	}
}

func runExampleProbe(t *testing.T, h http.Handler, hist *History, module, prober string, p exampleProbe) {
	t.Helper()
	r := get(h, "/probe?module="+module+"&target="+url.QueryEscape(p.target), nil)
	logs := ""
	if e, ok := hist.Newest(module, p.target); ok {
		logs = e.Debug()
	}
	if r.Code != http.StatusOK {
		t.Fatalf("/probe answered %d: %s", r.Code, r.Body)
	}
	defer func() {
		if t.Failed() {
			t.Logf("answer and log:\n%s", logs)
		}
	}()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := parser.TextToMetricFamilies(strings.NewReader(r.Body.String()))
	if err != nil {
		t.Fatalf("answer does not parse: %v\n%s", err, r.Body)
	}
	success := 0.0
	if p.ok {
		success = 1
	}
	if got := exampleValue(mfs, "probe_success", nil); got == nil || *got != success {
		t.Errorf("probe_success is not %v", success)
	}

	want := map[string]bool{}
	for _, n := range exNames(exHandler, p.names) {
		want[n] = true
	}
	extras := map[string]bool{}
	for _, n := range greyboxExtras[prober] {
		extras[n] = true
	}
	for n := range want {
		if _, ok := mfs[n]; !ok {
			t.Errorf("answer lacks %s", n)
		}
	}
	for n := range mfs {
		if !want[n] && !extras[n] {
			t.Errorf("answer has %s, which blackbox does not emit here", n)
		}
	}
	for _, s := range p.series {
		got := exampleValue(mfs, s.name, s.labels)
		switch {
		case s.absent && got != nil:
			t.Errorf("%s%v present, want absent", s.name, s.labels)
		case s.absent:
		case got == nil:
			t.Errorf("%s%v missing", s.name, s.labels)
		case !s.anyValue && *got != s.value:
			t.Errorf("%s%v = %v, want %v", s.name, s.labels, *got, s.value)
		}
	}
	if p.log != "" && !strings.Contains(logs, p.log) {
		t.Errorf("probe log lacks %q", p.log)
	}
	if p.check != nil {
		p.check(t)
	}
}

// exampleValue is the value of the first series of name whose labels
// include labels, or nil.
func exampleValue(mfs map[string]*dto.MetricFamily, name string, labels map[string]string) *float64 {
	mf, ok := mfs[name]
	if !ok {
		return nil
	}
	for _, m := range mf.GetMetric() {
		if labelsMatch(m, labels) {
			var v float64
			switch {
			case m.Gauge != nil:
				v = m.GetGauge().GetValue()
			case m.Counter != nil:
				v = m.GetCounter().GetValue()
			default:
				v = m.GetUntyped().GetValue()
			}
			return &v
		}
	}
	return nil
}
