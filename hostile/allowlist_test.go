package hostile

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
)

// A second hop must not slip past allowed_targets: with a proxy the dial
// reaches only the proxy, so the destination behind it (target, redirect,
// upgrade, replica, oauth2 token_url, Host header) is checked by name and,
// where it resolves, by address; the proxy itself must be allowed too.
func TestAllowlistSecondHops(t *testing.T) {
	proxy := newPeer(t, "127.0.0.1:0", func(p *peer, c net.Conn, first string) {
		// The one request a test lets through is answered with a
		// redirect to a denied address, to try the redirect hop.
		if strings.Contains(first, "/start") {
			_, _ = io.WriteString(c, "HTTP/1.1 302 Found\r\nLocation: http://"+loopback2+":9/secret\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
			return
		}
		badGateway(p, c, first)
	})
	token := newPeer(t, loopback2+":0", badGateway)
	backend, hits := okServer(t)
	_, bport, _ := net.SplitHostPort(backend.Listener.Addr().String())

	yml := fmt.Sprintf(`
modules:
  http_proxy:
    prober: http
    timeout: 2s
    allowed_targets: [127.0.0.1/32, allowed.invalid]
    http:
      http_client_config: {proxy_url: %[1]q, follow_redirects: true}
  http_proxy_host_header:
    prober: http
    timeout: 2s
    allowed_targets: [127.0.0.1/32]
    http:
      headers: {Host: denied.invalid}
      http_client_config: {proxy_url: %[1]q}
  http_proxy_not_allowed:
    prober: http
    timeout: 2s
    allowed_targets: [127.0.0.2/32]
    http:
      http_client_config: {proxy_url: %[1]q}
  http_oauth2:
    prober: http
    timeout: 2s
    allowed_targets: [127.0.0.1/32]
    http:
      http_client_config:
        oauth2: {client_id: greybox, client_secret: s3cret, token_url: "http://%[2]s/token"}
  token_proxy:
    prober: ttyd_token
    timeout: 2s
    allowed_targets: [127.0.0.1/32, allowed.invalid]
    ttyd_token:
      http_client_config: {proxy_url: %[1]q}
  ws_proxy:
    prober: ttyd_ws
    timeout: 2s
    allowed_targets: [127.0.0.1/32, allowed.invalid]
    ttyd_ws:
      fetch_token: false
      http_client_config: {proxy_url: %[1]q}
  ws_proxy_host_header:
    prober: ttyd_ws
    timeout: 2s
    allowed_targets: [127.0.0.1/32]
    ttyd_ws:
      fetch_token: false
      headers: {Host: denied.invalid}
      http_client_config: {proxy_url: %[1]q}
  parity_v2:
    prober: traefik_parity
    timeout: 2s
    allowed_targets: [127.0.0.2/32]
  parity_proxy:
    prober: traefik_parity
    timeout: 2s
    allowed_targets: [127.0.0.1/32, allowed.invalid]
    traefik_parity:
      http_client_config: {proxy_url: %[1]q}
`, proxy.url(), token.addr())
	gb := newGreybox(t, yml, gbOptions{})

	refused := []struct{ name, module, target string }{
		{"denied address behind a proxy", "http_proxy", "http://" + loopback2 + ":9/"},
		{"name that does not resolve here, behind a proxy", "http_proxy", "http://denied.invalid/"},
		{"IDNA form of a denied name", "http_proxy", "http://ｄｅｎｉｅｄ。invalid/"},
		{"ttyd_token: denied address behind a proxy", "token_proxy", "http://" + loopback2 + ":9"},
		{"ttyd_token: unverifiable name behind a proxy", "token_proxy", "https://denied.invalid"},
		{"ttyd_ws: denied address behind a proxy", "ws_proxy", "http://" + loopback2 + ":9"},
		{"ttyd_ws: unverifiable name behind a proxy (CONNECT)", "ws_proxy", "https://denied.invalid"},
		// localhost resolves (from /etc/hosts) to addresses outside 127.0.0.2/32.
		{"traefik_parity: static replica whose name resolves to a denied address", "parity_v2", "http://" + loopback2 + ":9,http://localhost:9"},
		{"traefik_parity: static replica behind a proxy", "parity_proxy", "http://127.0.0.1:9000,http://denied.invalid:9000"},
	}
	for _, tc := range refused {
		t.Run(tc.name, func(t *testing.T) {
			code, body := gb.probe(t, tc.module, tc.target)
			if code != http.StatusForbidden {
				t.Fatalf("status %d, want 403: %s", code, body)
			}
			if !strings.Contains(body, "allowed_targets") {
				t.Errorf("403 does not say why: %q", body)
			}
		})
	}
	if n := proxy.accepted(); n != 0 {
		t.Fatalf("the proxy was asked for a refused destination: %v", proxy.firstLines())
	}

	failed := []struct{ name, module, target, log string }{
		// The target is allowed; the redirect the proxy answers with is not.
		{"redirect behind a proxy", "http_proxy", "http://127.0.0.1:" + bport + "/start", "not in allowed_targets"},
		{"Host header behind a proxy", "http_proxy_host_header", "http://127.0.0.1:" + bport + "/", "denied.invalid"},
		{"the proxy itself is not allowed", "http_proxy_not_allowed", "http://" + loopback2 + ":9/", "not in allowed_targets"},
		{"oauth2 token_url outside the allowlist", "http_oauth2", backend.URL, "oauth2 token_url"},
		{"ttyd_ws: Host header behind a proxy", "ws_proxy_host_header", "http://127.0.0.1:" + bport, "denied.invalid"},
	}
	for _, tc := range failed {
		t.Run(tc.name, func(t *testing.T) {
			before := len(proxy.firstLines())
			code, body := gb.probe(t, tc.module, tc.target)
			if code != http.StatusOK {
				t.Fatalf("status %d: %s", code, body)
			}
			assertSuccess(t, body, 0)
			debug := gb.debug(t, tc.module, tc.target)
			if !strings.Contains(debug, tc.log) {
				t.Errorf("debug output does not name %q:\n%s", tc.log, debug)
			}
			for _, l := range proxy.firstLines()[before:] {
				if strings.Contains(l, loopback2) || strings.Contains(l, "denied.invalid") {
					t.Errorf("the proxy was asked for a denied destination: %q", l)
				}
			}
		})
	}
	if n := token.accepted(); n != 0 {
		t.Errorf("the oauth2 token endpoint outside the allowlist was dialled %d times", n)
	}
	if n := hits.get(); n != 0 {
		t.Errorf("the backend was reached %d times though every case here should stop before it", n)
	}

	// What is allowed by name goes to the proxy, which resolves it: the
	// CONNECT (ttyd_ws) and the absolute-form request (http) name it.
	t.Run("allowed name goes through the proxy", func(t *testing.T) {
		before := len(proxy.firstLines())
		gb.probe(t, "http_proxy", "http://allowed.invalid/")
		gb.probe(t, "ws_proxy", "http://allowed.invalid")
		lines := strings.Join(proxy.firstLines()[before:], "\n")
		for _, want := range []string{"GET http://allowed.invalid/ HTTP/1.1", "CONNECT allowed.invalid:80 HTTP/1.1"} {
			if !strings.Contains(lines, want) {
				t.Errorf("proxy did not receive %q; it got:\n%s", want, lines)
			}
		}
	})
}

// Without a proxy the dial is the check: a redirect or a replica at a
// denied address is never connected to, whatever the prober.
func TestAllowlistDirectHops(t *testing.T) {
	denied := newPeer(t, loopback2+":0", badGateway)
	redirect := func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "http://"+denied.addr()+"/", http.StatusFound)
	}
	srv := newLoopbackHTTP(t, http.HandlerFunc(redirect))
	yml := `
modules:
  http_follow:
    prober: http
    timeout: 2s
    allowed_targets: [127.0.0.1/32]
    http: {http_client_config: {follow_redirects: true}}
  token_follow:
    prober: ttyd_token
    timeout: 2s
    allowed_targets: [127.0.0.1/32]
    ttyd_token: {http_client_config: {follow_redirects: true}}
  parity:
    prober: traefik_parity
    timeout: 2s
    allowed_targets: [127.0.0.1/32]
`
	gb := newGreybox(t, yml, gbOptions{})
	for _, m := range []string{"http_follow", "token_follow"} {
		code, body := gb.probe(t, m, srv.URL)
		if code != http.StatusOK {
			t.Fatalf("%s: status %d: %s", m, code, body)
		}
		assertSuccess(t, body, 0)
	}
	if code, body := gb.probe(t, "parity", srv.URL+",http://"+denied.addr()); code != http.StatusForbidden {
		t.Fatalf("parity with a denied replica: %d %s", code, body)
	}
	if n := denied.accepted(); n != 0 {
		t.Fatalf("a denied address was dialled %d times: %v", n, denied.firstLines())
	}
}
