package prober

import (
	"encoding/pem"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/greybox-probe/greybox/internal/testpeer/ttyd"
)

func TestParseHostname(t *testing.T) {
	for _, tc := range []struct {
		in, host, sni, err string
	}{
		{in: "terminal.example.com", host: "terminal.example.com", sni: "terminal.example.com"},
		{in: "Terminal.Example.COM.", host: "terminal.example.com", sni: "terminal.example.com"},
		{in: "terminal.example.com:8443", host: "terminal.example.com:8443", sni: "terminal.example.com"},
		{in: "10.0.0.5", host: "10.0.0.5", sni: "10.0.0.5"},
		{in: "[::1]:8080", host: "[::1]:8080", sni: "::1"},
		{in: "::1", host: "[::1]", sni: "::1"},
		{in: "[::1]", host: "[::1]", sni: "::1"},
		{in: "bücher.example", host: "xn--bcher-kva.example", sni: "xn--bcher-kva.example"},
		{in: "", err: "empty"},
		{in: "http://evil.example", err: "port"},
		{in: "evil.example/path", err: "not a DNS name"},
		{in: "user@evil.example", err: "not a DNS name"},
		{in: "a b.example", err: "spaces or control characters"},
		{in: "evil.example\r\nX-Injected: 1", err: "spaces or control characters"},
		{in: "evil.example:0", err: "port"},
		{in: "evil.example:99999", err: "port"},
		{in: "evil.example:+80", err: "port"},
		{in: "[evil.example]:80", err: "brackets"},
		{in: "[::1", err: "not host or host:port"},
		{in: "fe80::1%eth0", err: "zone"},
		{in: strings.Repeat("a", 300), err: "limit"},
		{in: strings.Repeat("a", 64) + ".example", err: "labels of at most 63"},
	} {
		h, err := ParseHostname(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParseHostname(%q) = %+v, %v; want error containing %q", tc.in, h, err, tc.err)
			}
			if err != nil && strings.ContainsAny(err.Error(), "\r\n") {
				t.Errorf("ParseHostname(%q): error has a line break: %q", tc.in, err)
			}
			continue
		}
		if err != nil || h.Host != tc.host || h.ServerName != tc.sni {
			t.Errorf("ParseHostname(%q) = %+v, %v; want host %q, server name %q", tc.in, h, err, tc.host, tc.sni)
		}
	}
}

const hostnameConfig = `
modules:
  http_2xx:
    prober: http
    timeout: 5s
  http_pinned:
    prober: http
    http:
      headers: {host: pinned.example}
  http_sni_pinned:
    prober: http
    http:
      http_client_config: {tls_config: {server_name: pinned.example}}
  http_local:
    prober: http
    allowed_targets: ["127.0.0.1"]
  token:
    prober: ttyd_token
    timeout: 5s
  ws:
    prober: ttyd_ws
    timeout: 5s
  block:
    prober: test_block
`

// The hostname parameter reaches the backend behind a host-routing front
// with the target's address dialled: without it the front has no router.
func TestHostnameParameterRoutes(t *testing.T) {
	backend := ttyd.NewServer(ttyd.Options{})
	defer backend.Close()
	bu, _ := url.Parse(backend.URL)
	front := ttyd.NewHostFront(map[string]*url.URL{"terminal.example.com": bu}, false)
	defer front.Close()
	h, _, _ := newTestHandler(t, hostnameConfig, 10)

	for _, tc := range []struct {
		module, hostname string
		success          bool
	}{
		{"token", "", false},
		{"token", "terminal.example.com", true},
		{"ws", "", false},
		{"ws", "terminal.example.com", true},
		{"http_2xx", "", false},
		{"http_2xx", "TERMINAL.example.com", true},
		{"http_local", "terminal.example.com", true},
	} {
		t.Run(tc.module+"/"+tc.hostname, func(t *testing.T) {
			q := url.Values{"module": {tc.module}, "target": {front.URL}}
			if tc.hostname != "" {
				q.Set("hostname", tc.hostname)
			}
			before := front.Requests("terminal.example.com")
			rec := get(h, "/probe?"+q.Encode()+"&debug=true", nil)
			if rec.Code != http.StatusOK {
				t.Fatalf("status %d: %s", rec.Code, rec.Body)
			}
			if got := strings.Contains(rec.Body.String(), "probe_success 1"); got != tc.success {
				t.Fatalf("success = %v, want %v:\n%s", got, tc.success, rec.Body)
			}
			if reached := front.Requests("terminal.example.com") > before; reached != (tc.hostname != "") {
				t.Errorf("front saw Host terminal.example.com: %v, want %v", reached, tc.hostname != "")
			}
			if tc.module == "ws" && tc.success {
				nextSession(t, backend)
			}
		})
	}
}

// Over TLS the hostname is the server name: sent as SNI and verified
// against the certificate (httptest's is for example.com).
func TestHostnameParameterIsTheTLSServerName(t *testing.T) {
	backend := ttyd.NewServer(ttyd.Options{})
	defer backend.Close()
	bu, _ := url.Parse(backend.URL)
	front := ttyd.NewHostFront(map[string]*url.URL{"example.com": bu}, true)
	defer front.Close()
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: front.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := strings.ReplaceAll(`
modules:
  http_tls:
    prober: http
    timeout: 5s
    http: {http_client_config: {tls_config: {ca_file: CA}}}
  ws_tls:
    prober: ttyd_ws
    timeout: 5s
    ttyd_ws: {http_client_config: {tls_config: {ca_file: CA}}}
`, "CA", ca)
	h, _, _ := newTestHandler(t, cfg, 10)
	for _, tc := range []struct {
		module, hostname string
		success          bool
		logHas           string
	}{
		{"http_tls", "example.com", true, ""},
		{"http_tls", "other.example", false, "certificate is valid for"},
		{"ws_tls", "example.com", true, ""},
		{"ws_tls", "other.example", false, "certificate is valid for"},
	} {
		t.Run(tc.module+"/"+tc.hostname, func(t *testing.T) {
			q := url.Values{"module": {tc.module}, "target": {front.URL}, "hostname": {tc.hostname}, "debug": {"true"}}
			n := len(front.ServerNames())
			rec := get(h, "/probe?"+q.Encode(), nil)
			body := rec.Body.String()
			if got := strings.Contains(body, "probe_success 1"); got != tc.success {
				t.Fatalf("success = %v, want %v:\n%s", got, tc.success, body)
			}
			if !strings.Contains(body, tc.logHas) {
				t.Errorf("debug output lacks %q:\n%s", tc.logHas, body)
			}
			names := front.ServerNames()[n:]
			if len(names) == 0 || slices.ContainsFunc(names, func(s string) bool { return s != tc.hostname }) {
				t.Errorf("SNI sent = %q, want only %q", names, tc.hostname)
			}
			if tc.module == "ws_tls" && tc.success {
				nextSession(t, backend)
			}
		})
	}
}

func TestHostnameParameterRefusals(t *testing.T) {
	h, _, hist := newTestHandler(t, hostnameConfig, 10)
	for _, tc := range []struct {
		query, reason string
	}{
		{"module=block&target=x&hostname=a.example", `module "block" (prober test_block) does not take a hostname parameter`},
		{"module=http_2xx&target=http://127.0.0.1:1&hostname=a.example%2Fx", "not a DNS name"},
		{"module=http_2xx&target=http://127.0.0.1:1&hostname=a.example%0d%0aX:1", "control characters"},
		{"module=http_pinned&target=http://127.0.0.1:1&hostname=a.example", "module sets header Host: pinned.example"},
		{"module=http_sni_pinned&target=http://127.0.0.1:1&hostname=a.example", "tls_config.server_name: pinned.example"},
	} {
		rec := get(h, "/probe?"+tc.query, nil)
		if rec.Code != http.StatusBadRequest || !strings.Contains(rec.Body.String(), tc.reason) {
			t.Errorf("%s: %d %q, want 400 with %q", tc.query, rec.Code, rec.Body, tc.reason)
		}
	}
	// The module's own pin agreeing with the parameter is no contradiction.
	rec := get(h, "/probe?module=http_pinned&target=http://127.0.0.1:1&hostname=PINNED.example", nil)
	if rec.Code != http.StatusOK {
		t.Errorf("agreeing Host pin: %d %s", rec.Code, rec.Body)
	}
	// The hostname does not widen allowed_targets: the target is what is dialled.
	rec = get(h, "/probe?module=http_local&target=http://127.0.0.2:1&hostname=127.0.0.1", nil)
	if rec.Code != http.StatusForbidden {
		t.Errorf("denied target with an allowed hostname: %d %s", rec.Code, rec.Body)
	}
	if len(hist.List()) == 0 {
		t.Error("refusals are not in the history")
	}
}

// A probe's hostname stays its own: the shared module keeps no Host.
func TestHostnameParameterLeavesTheModuleAlone(t *testing.T) {
	h, _, _ := newTestHandler(t, hostnameConfig, 10)
	cfg := h.opts.Config()
	before := cfg.Modules["http_pinned"].Settings.(*HTTPSettings)
	headers := len(before.Headers)
	get(h, "/probe?module=http_pinned&target=http://127.0.0.1:1&hostname=pinned.example", nil)
	get(h, "/probe?module=http_2xx&target=http://127.0.0.1:1&hostname=a.example", nil)
	if s := cfg.Modules["http_2xx"].Settings.(*HTTPSettings); len(s.Headers) != 0 || s.HTTPClientConfig.TLSConfig.ServerName != "" {
		t.Errorf("module http_2xx changed: headers %v, server name %q", s.Headers, s.HTTPClientConfig.TLSConfig.ServerName)
	}
	if len(before.Headers) != headers {
		t.Errorf("module http_pinned headers changed: %v", before.Headers)
	}
}

// Whatever a scrape sends as hostname, what reaches a request is a bare
// host[:port] that parses back to itself.
func FuzzParseHostname(f *testing.F) {
	for _, s := range []string{"terminal.example.com", "a.example:8443", "[::1]:80", "10.0.0.1", "bücher.example", "x\r\nHost: y", "[a.example]:1", "a/b", "a@b", "::ffff:1.2.3.4"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		h, err := ParseHostname(s)
		if err != nil {
			if strings.ContainsAny(err.Error(), "\r\n") {
				t.Fatalf("error with a line break: %q", err)
			}
			return
		}
		if strings.ContainsAny(h.Host, "/?#@ \t\r\n\\") || h.ServerName == "" || strings.ContainsAny(h.ServerName, "[]/?#@ \t\r\n\\") {
			t.Fatalf("ParseHostname(%q) = %+v", s, h)
		}
		again, err := ParseHostname(h.Host)
		if err != nil || again != h {
			t.Fatalf("ParseHostname(%q) = %+v, but its Host parses to %+v, %v", s, h, again, err)
		}
	})
}
