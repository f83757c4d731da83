package prober

import (
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestHTTPProber(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("/ok", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "all good") })
	mux.HandleFunc("/error", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "Internal Server Error", http.StatusInternalServerError)
	})
	mux.HandleFunc("/teapot", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusTeapot) })
	mux.HandleFunc("/big", func(w http.ResponseWriter, r *http.Request) { w.Write(make([]byte, 4096)) })
	mux.HandleFunc("/redirect", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/ok", http.StatusFound) })
	mux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		user, pass, _ := r.BasicAuth()
		fmt.Fprintf(w, "method=%s body=%s x-probe=%s user=%s pass-ok=%t", r.Method, body, r.Header.Get("X-Probe"), user, pass == "s3cret")
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()

	for _, tc := range []struct {
		name    string
		path    string
		module  string
		success bool
		metrics map[string]float64
		logHas  string
	}{
		{name: "200 is success", path: "/ok", module: "prober: http", success: true,
			metrics: map[string]float64{"probe_http_status_code": 200, "probe_http_body_bytes": 8, "probe_http_ssl": 0, "probe_http_version": 1.1}},
		{name: "500 fails", path: "/error", module: "prober: http", success: false,
			metrics: map[string]float64{"probe_http_status_code": 500}, logHas: "invalid HTTP status code"},
		{name: "listed status code", path: "/teapot", module: "prober: http\nhttp: {valid_status_codes: [418]}", success: true},
		{name: "unlisted status code", path: "/ok", module: "prober: http\nhttp: {valid_status_codes: [418]}", success: false},
		{name: "body must not match", path: "/ok", module: "prober: http\nhttp: {fail_if_body_matches_regexp: ['good']}", success: false,
			metrics: map[string]float64{"probe_failed_due_to_regex": 1}},
		{name: "body must match", path: "/ok", module: "prober: http\nhttp: {fail_if_body_not_matches_regexp: ['^all']}", success: true,
			metrics: map[string]float64{"probe_failed_due_to_regex": 0}},
		{name: "body must match, does not", path: "/ok", module: "prober: http\nhttp: {fail_if_body_not_matches_regexp: ['nope']}", success: false},
		{name: "body over limit", path: "/big", module: "prober: http\nhttp: {body_size_limit: 1KiB}", success: false,
			metrics: map[string]float64{"probe_http_body_truncated": 1, "probe_http_body_bytes": 1024}},
		{name: "redirect followed", path: "/redirect", module: "prober: http", success: true,
			metrics: map[string]float64{"probe_http_redirects": 1, "probe_http_status_code": 200}},
		{name: "redirect not followed", path: "/redirect", module: "prober: http\nhttp: {valid_status_codes: [302], http_client_config: {follow_redirects: false}}", success: true,
			metrics: map[string]float64{"probe_http_status_code": 302}},
		{name: "fail if not ssl", path: "/ok", module: "prober: http\nhttp: {fail_if_not_ssl: true}", success: false},
		{name: "method, body, headers, basic auth", path: "/echo",
			module:  "prober: http\nhttp:\n  method: POST\n  body: hello\n  headers: {X-Probe: yes}\n  fail_if_body_not_matches_regexp: ['method=POST body=hello x-probe=yes user=u pass-ok=true']\n  http_client_config: {basic_auth: {username: u, password: s3cret}}",
			success: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := testModule(t, tc.module)
			res := runProbeDirect(t, ProbeHTTP, srv.URL+tc.path, m, Env{})
			if res.ok != tc.success {
				t.Errorf("success = %v, want %v\nlogs:\n%s", res.ok, tc.success, res.logs)
			}
			for name, want := range tc.metrics {
				mustMetric(t, res.reg, name, nil, want)
			}
			if tc.logHas != "" && !strings.Contains(res.logs, tc.logHas) {
				t.Errorf("logs lack %q:\n%s", tc.logHas, res.logs)
			}
			if strings.Contains(res.logs, "s3cret") {
				t.Error("password leaked into the probe log")
			}
		})
	}
}

func TestHTTPProberTLS(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "secure") }))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the strict case below fails the handshake on purpose
	srv.StartTLS()
	defer srv.Close()
	m := testModule(t, "prober: http\nhttp: {fail_if_not_ssl: true, http_client_config: {tls_config: {insecure_skip_verify: true}}}")
	res := runProbeDirect(t, ProbeHTTP, srv.URL, m, Env{})
	if !res.ok {
		t.Fatalf("TLS probe failed:\n%s", res.logs)
	}
	mustMetric(t, res.reg, "probe_http_ssl", nil, 1)
	want := float64(srv.Certificate().NotAfter.Unix())
	mustMetric(t, res.reg, "probe_ssl_earliest_cert_expiry", nil, want)
	if v, _ := metricValue(t, res.reg, "probe_http_duration_seconds", map[string]string{"phase": "tls"}); v <= 0 {
		t.Errorf("tls phase = %v, want > 0", v)
	}

	// Without trusting the test CA the handshake must fail, not be skipped.
	strict := testModule(t, "prober: http")
	if res := runProbeDirect(t, ProbeHTTP, srv.URL, strict, Env{}); res.ok {
		t.Error("probe trusted an unknown CA")
	}
}

// A target that accepts the request and never answers must not hold the
// probe past its deadline.
func TestHTTPProberStalledTargetHonoursDeadline(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)

	m := testModule(t, "prober: http\ntimeout: 300ms")
	res := runProbeDirect(t, ProbeHTTP, srv.URL, m, Env{})
	if res.ok {
		t.Fatal("stalled target reported success")
	}
	// Generous slack: this asserts "bounded by the deadline", not speed.
	if res.elapsed > 300*time.Millisecond+5*time.Second {
		t.Fatalf("probe took %v with a 300ms budget", res.elapsed)
	}
	if !strings.Contains(res.logs, "deadline exceeded") {
		t.Errorf("log does not say the deadline was hit:\n%s", res.logs)
	}
}

// The guard checks every address dialled, including after a redirect.
func TestHTTPProberRedirectOutsideAllowlistIsNotDialled(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "http://127.0.0.2:1/elsewhere", http.StatusFound)
	}))
	defer srv.Close()
	m := testModule(t, "prober: http\nallowed_targets: ['127.0.0.1/32']")
	res := runProbeDirect(t, ProbeHTTP, srv.URL, m, Env{})
	if res.ok {
		t.Fatal("redirect to a forbidden address succeeded")
	}
	if !strings.Contains(res.logs, "127.0.0.2 is not in allowed_targets") {
		t.Errorf("log does not explain the refusal:\n%s", res.logs)
	}
}
