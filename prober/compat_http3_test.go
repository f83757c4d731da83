package prober

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"

	"github.com/greybox-probe/greybox/config"
)

// newHTTP3Server serves h over HTTP/3 on 127.0.0.1 (UDP) with cert until
// the test ends, and returns its port.
func newHTTP3Server(t *testing.T, h http.Handler, cert *testCert) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Skipf("cannot listen on udp 127.0.0.1: %v", err)
	}
	srv := &http3.Server{Handler: h, TLSConfig: http3.ConfigureTLSConfig(cert.serverConfig())}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(pc)
	}()
	t.Cleanup(func() {
		_ = srv.Close()
		_ = pc.Close()
		<-done
	})
	_, port, _ := net.SplitHostPort(pc.LocalAddr().String())
	return port
}

func TestHTTP3Compat(t *testing.T) {
	cert := newTestCert(t)
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintf(w, "hello over %s", r.Proto) })
	mux.HandleFunc("/missing", http.NotFound)
	mux.HandleFunc("/redirect", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/", http.StatusFound) })
	port := newHTTP3Server(t, mux, cert)
	mux.HandleFunc("/elsewhere", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "https://127.0.0.2:"+port+"/", http.StatusFound)
	})
	base := "https://127.0.0.1:" + port
	// No server on this port: the QUIC handshake gets no answer.
	silent, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { silent.Close() })

	// blackbox's spelling: inline client keys, enable_http2 off.
	module := func(extra string) string {
		return fmt.Sprintf("prober: http\nhttp: {enable_http3: true, enable_http2: false, tls_config: {ca_file: %s, server_name: greybox.test}%s}", cert.caFile, extra)
	}
	tlsWants := []want{
		{name: "probe_http_version", value: 3},
		{name: "probe_http_status_code", value: 200},
		{name: "probe_http_ssl", value: 1},
		{name: "probe_ssl_earliest_cert_expiry", value: float64(cert.notAfter.Unix())},
		{name: "probe_ssl_last_chain_expiry_timestamp_seconds", value: float64(cert.notAfter.Unix())},
		{name: "probe_tls_version_info", labels: map[string]string{"version": "TLS 1.3"}, value: 1},
		{name: "probe_ssl_last_chain_info", labels: map[string]string{"subject": "CN=greybox.test", "subjectalternative": "greybox.test"}, value: 1},
		{name: "probe_http_content_length", value: float64(len("hello over HTTP/3.0"))},
		{name: "probe_ip_protocol", value: 4},
	}
	runCompat(t, ProbeHTTP, nil, []compatCase{
		{name: "http3", module: module(""), target: base + "/", ok: true, wants: tlsWants},
		{name: "valid_http_versions HTTP/3.0", module: module(", valid_http_versions: [HTTP/3.0], fail_if_body_not_matches_regexp: ['over HTTP/3\\.0$']"), target: base + "/", ok: true},
		{name: "http:// target is probed over https://", module: module(""), target: "http://127.0.0.1:" + port + "/", ok: true,
			wants: []want{{name: "probe_http_version", value: 3}}, log: "probing the http:// target over https://"},
		{name: "status code", module: module(""), target: base + "/missing", ok: false, wants: []want{
			{name: "probe_http_status_code", value: 404}, {name: "probe_http_version", value: 3},
		}, log: "invalid HTTP status code"},
		{name: "redirect followed", module: module(""), target: base + "/redirect", ok: true, wants: []want{
			{name: "probe_http_redirects", value: 1}, {name: "probe_http_status_code", value: 200},
		}},
		{name: "follow_redirects false", module: module(", follow_redirects: false, valid_status_codes: [302]"), target: base + "/redirect", ok: true, wants: []want{
			{name: "probe_http_status_code", value: 302},
		}},
		{name: "chosen address", module: module(", preferred_ip_protocol: ip4, ip_protocol_fallback: false, source_ip_address: 127.0.0.1"), target: base + "/", ok: true, wants: []want{
			{name: "probe_ip_protocol", value: 4}, {name: "probe_http_version", value: 3},
		}},
		{name: "redirect outside allowed_targets", module: "allowed_targets: [127.0.0.1]\n" + module(""), target: base + "/elsewhere", ok: false, log: "not in allowed_targets"},
		{name: "untrusted", module: "prober: http\nhttp: {enable_http3: true, enable_http2: false}", target: base + "/", ok: false, wants: []want{
			{name: "probe_tls_version_info", absent: true},
		}, log: "HTTP request failed"},
		{name: "no answer: the deadline", module: "timeout: 300ms\n" + module(""), target: "https://" + silent.LocalAddr().String() + "/", ok: false, log: "HTTP request failed"},
	})
}

func TestHTTP3ConfigErrors(t *testing.T) {
	for _, c := range []struct{ yml, want string }{
		{"http: {enable_http3: true}", "enable_http2 must be set to false"},
		{"http: {enable_http3: true, enable_http2: false, valid_http_versions: [HTTP/2.0, HTTP/3.0]}", `"HTTP/2.0" with enable_http3`},
		{"http: {enable_http3: true, enable_http2: false, proxy_url: 'http://127.0.0.1:3128'}", "proxy_url"},
		{"http: {enable_http3: true, enable_http2: false, basic_auth: {username: u, password: p}}", "basic_auth is not applied over HTTP/3"},
		{"http: {enable_http3: true, http_client_config: {enable_http2: false, authorization: {credentials: c}}}", "authorization"},
	} {
		_, err := parseModule("prober: http\n" + c.yml)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want %q", c.yml, err, c.want)
		}
	}
	for _, ok := range []string{
		"http: {enable_http3: true, enable_http2: false, valid_http_versions: [HTTP/3.0]}",
		"http: {enable_http3: true, http_client_config: {enable_http2: false, follow_redirects: false}}",
	} {
		if _, err := parseModule("prober: http\n" + ok); err != nil {
			t.Errorf("%s refused: %v", ok, err)
		}
	}
}

// A probe that gets no QUIC answer ends by its deadline, its socket
// closed and no goroutine of quic-go's left (TestMain checks).
func TestHTTP3SilentPeerDeadline(t *testing.T) {
	silent, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	const timeout = 300 * time.Millisecond
	m := testModule(t, fmt.Sprintf("prober: http\ntimeout: %v\nhttp: {enable_http3: true, enable_http2: false, tls_config: {insecure_skip_verify: true}}", timeout))
	r := runProbeDirect(t, ProbeHTTP, "https://"+silent.LocalAddr().String()+"/", m, Env{})
	assertBoundedFailure(t, r, timeout, "HTTP request failed")
}

// The QUIC dial itself asks the guard: an address outside allowed_targets
// gets no packet even if a request's own check were skipped.
func TestHTTP3DialChecksAllowlist(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	m := testModule(t, "prober: http\nallowed_targets: [127.0.0.2]\nhttp: {enable_http3: true, enable_http2: false}")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	d := &http3Dialer{g: NewGuard(ctx, m.AllowedTargets), s: m.Settings.(*HTTPSettings)}
	defer d.close()
	_, err = d.dial(ctx, pc.LocalAddr().String(), &tls.Config{NextProtos: []string{http3.NextProtoH3}}, &quic.Config{})
	var fe *config.ForbiddenError
	if !errors.As(err, &fe) {
		t.Fatalf("dial to 127.0.0.1 with allowed_targets [127.0.0.2]: %v, want a ForbiddenError", err)
	}
	if len(d.open) != 0 {
		t.Errorf("%d sockets opened for a denied address", len(d.open))
	}
}
