package prober

import (
	"bytes"
	"compress/flate"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/andybalholm/brotli"
)

// The http rows of the compatibility table: blackbox_exporter's http
// options against local servers, asserting blackbox's metric names and
// values.

// newHTTPCompatServer serves h on 127.0.0.1: plain, TLS with cert, or
// TLS with HTTP/2 offered.
func newHTTPCompatServer(t *testing.T, h http.Handler, cert *testCert, h2 bool) *httptest.Server {
	t.Helper()
	s := httptest.NewUnstartedServer(h)
	if cert == nil {
		s.Start()
	} else {
		s.TLS = cert.serverConfig()
		s.EnableHTTP2 = h2
		s.StartTLS()
	}
	t.Cleanup(s.Close)
	return s
}

func okHandler(body string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, body) })
}

func TestHTTPCompat(t *testing.T) {
	cert := newTestCert(t)
	mux := http.NewServeMux()
	mux.Handle("/", okHandler("hello"))
	mux.HandleFunc("/redirect", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/", http.StatusFound) })
	plain := newHTTPCompatServer(t, mux, nil, false)
	tls1 := newHTTPCompatServer(t, okHandler("hello"), cert, false)
	h2 := newHTTPCompatServer(t, okHandler("hello"), cert, true)

	tlsWants := func(verified bool) []want {
		return []want{
			{name: "probe_http_ssl", value: 1},
			{name: "probe_ssl_earliest_cert_expiry", value: float64(cert.notAfter.Unix())},
			{name: "probe_tls_version_info", labels: map[string]string{"version": "TLS 1.3"}, value: 1},
			{name: "probe_tls_cipher_info", labels: map[string]string{"cipher": "TLS_AES_128_GCM_SHA256"}, value: 1},
			{name: "probe_ssl_last_chain_info", labels: map[string]string{"subject": "CN=greybox.test", "issuer": "CN=greybox.test", "subjectalternative": "greybox.test", "serialnumber": "0abc"}, value: 1},
			{name: "probe_ssl_last_chain_expiry_timestamp_seconds", value: float64(cert.notAfter.Unix()), absent: !verified},
		}
	}
	caClient := fmt.Sprintf("http_client_config: {tls_config: {ca_file: %s}}", cert.caFile)

	runCompat(t, ProbeHTTP, nil, []compatCase{
		{name: "plain: no TLS metrics", module: "prober: http", target: plain.URL, ok: true, wants: []want{
			{name: "probe_http_ssl", value: 0},
			{name: "probe_tls_version_info", absent: true},
			{name: "probe_ssl_last_chain_info", absent: true},
			{name: "probe_ssl_last_chain_expiry_timestamp_seconds", absent: true},
		}},
		{name: "tls verified", module: "prober: http\nhttp: {" + caClient + "}", target: tls1.URL, ok: true, wants: tlsWants(true)},
		{name: "tls insecure: no chain expiry", module: "prober: http\nhttp: {http_client_config: {tls_config: {insecure_skip_verify: true}}}", target: tls1.URL, ok: true, wants: tlsWants(false)},
		{name: "tls max_version", module: "prober: http\nhttp: {http_client_config: {tls_config: {insecure_skip_verify: true, max_version: TLS12}}}", target: tls1.URL, ok: true, wants: []want{
			{name: "probe_tls_version_info", labels: map[string]string{"version": "TLS 1.2"}, value: 1},
		}},
		{name: "tls untrusted", module: "prober: http", target: tls1.URL, ok: false, wants: []want{
			{name: "probe_tls_version_info", absent: true},
		}},
		{name: "blackbox's inline client keys", module: fmt.Sprintf("prober: http\nhttp: {tls_config: {ca_file: %s}}", cert.caFile), target: tls1.URL, ok: true, wants: tlsWants(true)},
		{name: "inline follow_redirects and no_follow_redirects", module: "prober: http\nhttp: {no_follow_redirects: true, valid_status_codes: [302]}", target: plain.URL + "/redirect", ok: true, wants: []want{
			{name: "probe_http_status_code", value: 302}, {name: "probe_http_redirects", value: 0},
		}},
		{name: "http2", module: "prober: http\nhttp: {" + caClient + "}", target: h2.URL, ok: true, wants: append(tlsWants(true), want{name: "probe_http_version", value: 2})},
	})
}

// headerServer answers with two X-Multi values and a Last-Modified.
func headerServer(t *testing.T) *httptest.Server {
	return newHTTPCompatServer(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Add("X-Multi", "a")
		w.Header().Add("X-Multi", "b")
		w.Header().Set("Last-Modified", "Wed, 02 Dec 2026 10:00:00 GMT")
		fmt.Fprint(w, "ok")
	}), nil, false)
}

func TestHTTPCompatVersionsAndHeaders(t *testing.T) {
	cert := newTestCert(t)
	plain := headerServer(t)
	h2 := newHTTPCompatServer(t, okHandler("hello"), cert, true)
	ca := fmt.Sprintf("tls_config: {ca_file: %s}", cert.caFile)
	lastMod := float64(time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC).Unix())
	runCompat(t, ProbeHTTP, nil, []compatCase{
		{name: "HTTP/2 in valid_http_versions", module: "prober: http\nhttp: {valid_http_versions: [HTTP/1.1, HTTP/2.0], " + ca + "}", target: h2.URL, ok: true, wants: []want{
			{name: "probe_http_version", value: 2},
		}},
		{name: "inline enable_http2: false", module: "prober: http\nhttp: {enable_http2: false, valid_http_versions: [HTTP/1.1], " + ca + "}", target: h2.URL, ok: true, wants: []want{
			{name: "probe_http_version", value: 1.1},
		}},
		{name: "HTTP/2 not in valid_http_versions", module: "prober: http\nhttp: {valid_http_versions: [HTTP/1.1], " + ca + "}", target: h2.URL, ok: false, log: "invalid HTTP version"},
		{name: "HTTP/1.1 not in valid_http_versions", module: "prober: http\nhttp: {valid_http_versions: [HTTP/2.0]}", target: plain.URL, ok: false, wants: []want{
			{name: "probe_http_version", value: 1.1},
		}},
		{name: "last modified", module: "prober: http", target: plain.URL, ok: true, wants: []want{
			{name: "probe_http_last_modified_timestamp_seconds", value: lastMod},
			{name: "probe_failed_due_to_regex", value: 0},
		}},
		{name: "header matches one of several values", module: "prober: http\nhttp: {fail_if_header_matches: [{header: X-Multi, regexp: '^b$'}]}", target: plain.URL, ok: false, wants: []want{
			{name: "probe_failed_due_to_regex", value: 1},
		}, log: "header matched"},
		{name: "header matches none", module: "prober: http\nhttp: {fail_if_header_matches: [{header: X-Multi, regexp: '^c$'}]}", target: plain.URL, ok: true, wants: []want{
			{name: "probe_failed_due_to_regex", value: 0},
		}},
		{name: "missing header fails", module: "prober: http\nhttp: {fail_if_header_matches: [{header: X-Absent, regexp: 'x'}]}", target: plain.URL, ok: false, log: "missing required header"},
		{name: "missing header allowed", module: "prober: http\nhttp: {fail_if_header_not_matches: [{header: X-Absent, regexp: 'x', allow_missing: true}]}", target: plain.URL, ok: true},
		{name: "not_matches: one value matching is enough, name case-insensitive", module: "prober: http\nhttp: {fail_if_header_not_matches: [{header: x-multi, regexp: '^b$'}]}", target: plain.URL, ok: true},
		{name: "not_matches: none matches", module: "prober: http\nhttp: {fail_if_header_not_matches: [{header: X-Multi, regexp: '^c'}]}", target: plain.URL, ok: false, wants: []want{
			{name: "probe_failed_due_to_regex", value: 1},
		}, log: "header did not match"},
	})
}

func TestHTTPCompatIPProtocol(t *testing.T) {
	d := newTestDNS(t)
	from := newHTTPCompatServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "from "+r.RemoteAddr) }), nil, false)
	port := portOf(from.Listener.Addr().String())
	// A forward proxy that answers itself: the request line shows what it
	// was asked for, and nothing leaves the machine.
	proxy := newHTTPCompatServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "proxied "+r.URL.String()) }), nil, false)
	runCompat(t, ProbeHTTP, d, []compatCase{
		{name: "ip4 preferred, dual-stack name", module: "prober: http\nhttp: {preferred_ip_protocol: ip4}", target: "http://dual.test:" + port + "/", ok: true, wants: []want{
			{name: "probe_ip_protocol", value: 4}, {name: "probe_ip_addr_hash", value: hashOf("127.0.0.1")},
		}},
		{name: "ip6 preferred is dialled, not tried after ip4", module: "prober: http\nhttp: {preferred_ip_protocol: ip6}", target: "http://dual.test:" + port + "/", ok: false, wants: []want{
			{name: "probe_ip_protocol", value: 6}, {name: "probe_ip_addr_hash", value: hashOf("::1")},
		}, log: "[::1]:" + port},
		{name: "ip6 preferred, v4-only name falls back", module: "prober: http\nhttp: {ip_protocol_fallback: true}", target: "http://v4.test:" + port + "/", ok: true, wants: []want{
			{name: "probe_ip_protocol", value: 4},
		}},
		{name: "no fallback", module: "prober: http\nhttp: {ip_protocol_fallback: false}", target: "http://v4.test:" + port + "/", ok: false, log: "has no ip6 address", wants: []want{
			{name: "probe_ip_protocol", value: 0},
		}},
		// No ip6-first selection, but blackbox's metrics all the same: the
		// address Go's dialer connected to (the server is on 127.0.0.1 only).
		{name: "without the options: the address connected to", module: "prober: http", target: "http://dual.test:" + port + "/", ok: true, wants: []want{
			{name: "probe_ip_protocol", value: 4}, {name: "probe_ip_addr_hash", value: hashOf("127.0.0.1")},
		}},
		{name: "without the options, refused: no connection", module: "prober: http", target: "http://v4.test:1/", ok: false, wants: []want{
			{name: "probe_ip_protocol", value: 0}, {name: "probe_ip_addr_hash", value: 0},
		}},
		{name: "source_ip_address", module: "prober: http\nhttp: {source_ip_address: 127.0.0.3, fail_if_body_not_matches_regexp: ['^from 127\\.0\\.0\\.3:']}", target: from.URL, ok: true, wants: []want{
			{name: "probe_ip_protocol", value: 4},
		}},
		{name: "default source", module: "prober: http\nhttp: {fail_if_body_not_matches_regexp: ['^from 127\\.0\\.0\\.3:']}", target: from.URL, ok: false},
		{name: "proxy: target still resolved", module: fmt.Sprintf("prober: http\nhttp: {preferred_ip_protocol: ip4, proxy_url: %q, fail_if_body_not_matches_regexp: ['^proxied http://dual\\.test:1/']}", proxy.URL),
			target: "http://dual.test:1/", ok: true, wants: []want{
				{name: "probe_ip_protocol", value: 4},
			}},
		{name: "skip_resolve_phase_with_proxy", module: fmt.Sprintf("prober: http\nhttp: {preferred_ip_protocol: ip4, skip_resolve_phase_with_proxy: true, proxy_url: %q, fail_if_body_not_matches_regexp: ['^proxied http://dual\\.test:1/']}", proxy.URL),
			target: "http://dual.test:1/", ok: true, wants: []want{
				{name: "probe_ip_protocol", absent: true}, {name: "probe_dns_lookup_time_seconds", absent: true},
			}},
		{name: "skip_resolve_phase_with_proxy without a proxy resolves", module: "prober: http\nhttp: {preferred_ip_protocol: ip4, skip_resolve_phase_with_proxy: true}", target: "http://dual.test:" + port + "/", ok: true, wants: []want{
			{name: "probe_ip_protocol", value: 4},
		}},
	})
}

// compressed serves payload encoded as enc when the request accepts it.
func compressedHandler(t *testing.T, payload string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		enc := strings.TrimPrefix(r.URL.Path, "/")
		if enc == "plain" {
			fmt.Fprint(w, payload)
			return
		}
		if !strings.Contains(r.Header.Get("Accept-Encoding"), enc) {
			http.Error(w, "Accept-Encoding "+r.Header.Get("Accept-Encoding"), http.StatusNotAcceptable)
			return
		}
		var buf bytes.Buffer
		var wc io.WriteCloser
		switch enc {
		case "gzip":
			wc = gzip.NewWriter(&buf)
		case "deflate":
			wc, _ = flate.NewWriter(&buf, flate.BestCompression)
		case "br":
			wc = brotli.NewWriter(&buf)
		case "identity":
			buf.WriteString(payload)
		}
		if wc != nil {
			io.WriteString(wc, payload)
			wc.Close()
			w.Header().Set("Content-Encoding", enc)
		}
		w.Write(buf.Bytes())
	})
}

func TestHTTPCompatCompression(t *testing.T) {
	const payload = "hello compressed world"
	srv := newHTTPCompatServer(t, compressedHandler(t, payload), nil, false)
	var cases []compatCase
	for _, enc := range []string{"gzip", "br", "deflate", "identity"} {
		cases = append(cases, compatCase{name: enc, module: "prober: http\nhttp: {compression: " + enc + ", fail_if_body_not_matches_regexp: ['^hello compressed world$']}",
			target: srv.URL + "/" + enc, ok: true, wants: []want{
				{name: "probe_http_uncompressed_body_length", value: float64(len(payload))},
			}})
	}
	cases = append(cases,
		compatCase{name: "Accept-Encoding set by the module", module: "prober: http\nhttp: {compression: gzip, headers: {Accept-Encoding: 'br;q=1.0, gzip;q=0.9'}}", target: srv.URL + "/gzip", ok: true, wants: []want{
			{name: "probe_http_uncompressed_body_length", value: float64(len(payload))},
		}},
		compatCase{name: "gzip expected, plain sent", module: "prober: http\nhttp: {compression: gzip}", target: srv.URL + "/plain", ok: false, log: "cannot be decompressed"},
		compatCase{name: "no compression: length is what was read", module: "prober: http", target: srv.URL + "/plain", ok: true, wants: []want{
			{name: "probe_http_uncompressed_body_length", value: float64(len(payload))},
			{name: "probe_http_body_bytes", value: float64(len(payload))},
		}},
	)
	runCompat(t, ProbeHTTP, nil, cases)
}

// A gzip stream that never ends (zeros compress about 1000:1): the probe
// must stop at body_size_limit of decompressed bytes and hold no more.
func TestHTTPCompressionBomb(t *testing.T) {
	srv := newHTTPCompatServer(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Encoding", "gzip")
		zw := gzip.NewWriter(w)
		zeros := make([]byte, 64<<10)
		for {
			if _, err := zw.Write(zeros); err != nil {
				return
			}
		}
	}), nil, false)
	const limit = 1 << 20
	// The regexp makes the probe keep the body in memory: the worst case.
	m := testModule(t, "prober: http\nhttp: {compression: gzip, body_size_limit: 1MiB, fail_if_body_matches_regexp: ['x']}")
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	r := runProbeDirect(t, ProbeHTTP, srv.URL, m, Env{})
	runtime.ReadMemStats(&after)
	if r.ok {
		t.Fatalf("bomb probe succeeded:\n%s", r.logs)
	}
	mustMetric(t, r.reg, "probe_http_body_truncated", nil, 1)
	mustMetric(t, r.reg, "probe_http_uncompressed_body_length", nil, limit)
	wire, _ := metricValue(t, r.reg, "probe_http_body_bytes", nil)
	if wire <= 0 || wire >= limit/10 {
		t.Errorf("wire bytes %v: want the compressed size, far below the %d decompressed", wire, limit)
	}
	// Everything allocated during the probe, server side included: a few
	// MiB for the limit's buffer and the codecs, not the stream.
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 32<<20 {
		t.Errorf("probe allocated %d MiB for a %d MiB limit", alloc>>20, limit>>20)
	}
}

func TestHTTPCompatCEL(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("/json", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, `{"status": "ok", "items": [1, 2, 3]}`) })
	mux.HandleFunc("/text", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "not json") })
	mux.HandleFunc("/list", func(w http.ResponseWriter, _ *http.Request) {
		var b strings.Builder
		b.WriteString("[0")
		for i := 1; i < 3000; i++ {
			fmt.Fprintf(&b, ",%d", i)
		}
		b.WriteString("]")
		fmt.Fprint(w, b.String())
	})
	srv := newHTTPCompatServer(t, mux, nil, false)
	runCompat(t, ProbeHTTP, nil, []compatCase{
		{name: "not_matches holds", module: `prober: http
http: {fail_if_body_json_not_matches_cel: 'body.status == "ok" && size(body.items) == 3'}`, target: srv.URL + "/json", ok: true, wants: []want{
			{name: "probe_failed_due_to_cel", value: 0},
		}},
		{name: "matches fails the probe", module: `prober: http
http: {fail_if_body_json_matches_cel: 'body.status == "ok"'}`, target: srv.URL + "/json", ok: false, wants: []want{
			{name: "probe_failed_due_to_cel", value: 1},
		}, log: "body matched fail_if_body_json_matches_cel"},
		{name: "not JSON", module: `prober: http
http: {fail_if_body_json_not_matches_cel: 'true'}`, target: srv.URL + "/text", ok: false, wants: []want{
			{name: "probe_failed_due_to_cel", value: 1},
		}, log: "body is not JSON"},
		{name: "missing field is an evaluation error", module: `prober: http
http: {fail_if_body_json_not_matches_cel: 'body.nope == 1'}`, target: srv.URL + "/json", ok: false, wants: []want{
			{name: "probe_failed_due_to_cel", value: 1},
		}, log: "no such key"},
		// A deadline far away (the race detector slows CEL several
		// times): the cost limit is what stops it.
		{name: "cost limit", module: `prober: http
timeout: 60s
http: {fail_if_body_json_not_matches_cel: 'body.all(x, body.all(y, x >= 0))'}`, target: srv.URL + "/list", ok: false, wants: []want{
			{name: "probe_failed_due_to_cel", value: 1},
		}, log: "cost limit"},
		{name: "no CEL: no CEL metric", module: "prober: http", target: srv.URL + "/json", ok: true, wants: []want{
			{name: "probe_failed_due_to_cel", absent: true},
		}},
	})
}

func TestHTTPCELHonoursDeadline(t *testing.T) {
	p, err := compileCEL("k", "body.all(x, body.all(y, x >= 0))")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	list := make([]any, 100)
	for i := range list {
		list[i] = float64(i)
	}
	if _, err := p.eval(ctx, list); err == nil {
		t.Fatal("evaluation on a cancelled context succeeded")
	}
}

func TestHTTPConfigErrors(t *testing.T) {
	dir := t.TempDir()
	bodyFile := filepath.Join(dir, "body.json")
	if err := os.WriteFile(bodyFile, []byte(`{"q": 1}`), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ yml, want string }{
		{"http: {valid_http_versions: [HTTP/2]}", `valid_http_versions: "HTTP/2" is not one of HTTP/1.0, HTTP/1.1, HTTP/2.0`},
		{"http: {valid_http_versions: [HTTP/3.0]}", "valid_http_versions: HTTP/3.0 needs enable_http3: true"},
		{"http: {enable_http3: true}", "enable_http3: enable_http2 must be set to false"},
		{"http: {fail_if_header_matches: [{regexp: x}]}", "fail_if_header_matches[0]: header must be set"},
		{"http: {fail_if_header_not_matches: [{header: X}]}", "fail_if_header_not_matches[0]: regexp must be set"},
		{"http: {fail_if_header_matches: [{header: X, regexp: '('}]}", "invalid regular expression"},
		{"http: {preferred_ip_protocol: ipv4}", `preferred_ip_protocol "ipv4" must be ip4 or ip6`},
		{"http: {source_ip_address: 10.0.0}", `source_ip_address "10.0.0" is not an IP address`},
		{"http: {compression: zstd}", `compression "zstd" must be one of gzip, br, deflate, identity`},
		{"http: {compression: gzip, headers: {Accept-Encoding: 'br, identity'}}", "compression gzip: header Accept-Encoding: br, identity does not accept it"},
		{"http: {compression: gzip, headers: {accept-encoding: 'gzip;q=0'}}", "does not accept it"},
		{"http: {fail_if_body_json_matches_cel: 'body.status =='}", `fail_if_body_json_matches_cel: "body.status ==" does not compile`},
		{"http: {fail_if_body_json_not_matches_cel: '1 + 2'}", `fail_if_body_json_not_matches_cel: "1 + 2" evaluates to int, not bool`},
		{"http: {body: x, body_file: " + bodyFile + "}", "body and body_file cannot both be set"},
		{"http: {body_file: /nonexistent/body}", "http.body_file: "},
		{"http: {body_file: body.json}", "http.body_file: "},
		{"http: {tls_config: {insecure_skip_verify: true}, http_client_config: {follow_redirects: false}}", "cannot both be used"},
		{"http: {tls_config: {ca_file: /nonexistent/ca.pem}}", "/nonexistent/ca.pem"},
		{"http: {body_size_limit: -1}", "must not be negative"},
		{"http: {no_such_key: 1}", "no_such_key"},
	} {
		_, err := parseModule("prober: http\n" + c.yml)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want %q", c.yml, err, c.want)
		}
	}
	m, err := parseModule("prober: http\nhttp: {method: POST, body_file: " + bodyFile + "}")
	if err != nil {
		t.Fatal(err)
	}
	if got := m.Settings.(*HTTPSettings).bodyFromFile; got != `{"q": 1}` {
		t.Errorf("body_file read as %q", got)
	}
	// Inline client keys end up in http_client_config: rendered once,
	// secrets redacted.
	m, err = parseModule("prober: http\nhttp: {basic_auth: {username: u, password: inline-s3cret}, proxy_url: http://127.0.0.1:3128, proxy_connect_header: {X-P: [proxy-s3cret]}}")
	if err != nil {
		t.Fatal(err)
	}
	if y := m.YAML(); strings.Contains(y, "s3cret") || strings.Count(y, "basic_auth:") != 1 || !strings.Contains(y, "http_client_config:") {
		t.Errorf("rendered module:\n%s", y)
	}
}

// The cost limit leaves room for the ordinary use: one check of every
// item of a large list.
func TestHTTPCELCostLimitAllowsALinearCheck(t *testing.T) {
	p, err := compileCEL("k", `body.items.all(i, i.ok == true && i.name != "")`)
	if err != nil {
		t.Fatal(err)
	}
	items := make([]any, 10000)
	for i := range items {
		items[i] = map[string]any{"ok": true, "name": fmt.Sprint("item", i)}
	}
	if ok, err := p.eval(context.Background(), map[string]any{"items": items}); err != nil || !ok {
		t.Fatalf("= %v, %v", ok, err)
	}
}
