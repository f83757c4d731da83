package prober

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// Hostile peers for the blackbox-compatible probers: each accepts and then
// says nothing (or too much), and each probe must end by its deadline with
// a reason; and a target outside allowed_targets is a 403 before any dial.

func TestHostileBlackboxProbers(t *testing.T) {
	const timeout = 400 * time.Millisecond
	silent := func(c net.Conn, stop <-chan struct{}) { <-stop }
	udpSilent := func(t *testing.T) string {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { pc.Close() })
		return pc.LocalAddr().String() // reads nothing, answers nothing
	}
	for _, tc := range []struct {
		name    string
		fn      ProbeFunc
		module  string
		serve   func(c net.Conn, stop <-chan struct{})
		target  func(t *testing.T, addr string) string
		reasons []string
	}{
		{name: "tcp expect, silent server", fn: probeTCP, module: "tcp: {query_response: [{expect: '^220'}]}", serve: silent,
			reasons: []string{"did not match before the probe deadline"}},
		{name: "tcp endless line", fn: probeTCP, module: "tcp: {query_response: [{expect: '^220'}]}",
			serve:   func(c net.Conn, stop <-chan struct{}) { endless(c, stop, []byte(strings.Repeat("x", 4096))) },
			reasons: []string{"a line longer than 64 KiB"}},
		{name: "tcp tls handshake never completes", fn: probeTCP, module: "tcp: {tls: true}",
			serve: func(c net.Conn, stop <-chan struct{}) { io.Copy(io.Discard, c) }, reasons: []string{"TLS handshake failed"}},
		{name: "tcp starttls never completes", fn: probeTCP, module: "tcp: {query_response: [{expect: '^220', starttls: true}]}",
			serve: func(c net.Conn, stop <-chan struct{}) { io.WriteString(c, "220 go\r\n"); io.Copy(io.Discard, c) }, reasons: []string{"starttls handshake failed"}},
		{name: "tcp plaintext injected before starttls", fn: probeTCP, module: "tcp: {query_response: [{expect: '^220', starttls: true}]}",
			serve: func(c net.Conn, stop <-chan struct{}) { io.WriteString(c, "220 go\r\n250 injected\r\n"); <-stop }, reasons: []string{"server sent data before the TLS handshake"}},
		{name: "dns over tcp, silent", fn: probeDNS, module: "dns: {query_name: example.test, transport_protocol: tcp}", serve: silent,
			reasons: []string{"probe deadline reached"}},
		{name: "dns over udp, silent", fn: probeDNS, module: "dns: {query_name: example.test}",
			target: func(t *testing.T, _ string) string { return udpSilent(t) }, reasons: []string{"probe deadline reached"}},
		{name: "dns over tls, handshake never completes", fn: probeDNS, module: "dns: {query_name: example.test, transport_protocol: tcp, dns_over_tls: true}",
			serve: func(c net.Conn, stop <-chan struct{}) { io.Copy(io.Discard, c) }, reasons: []string{"DNS over TLS handshake"}},
		{name: "grpc, silent", fn: probeGRPC, module: "grpc: {}", serve: silent,
			reasons: []string{"did not answer before the probe deadline", "health check failed"}},
		{name: "grpc tls, silent", fn: probeGRPC, module: "grpc: {tls: true}", serve: silent,
			reasons: []string{"did not answer before the probe deadline", "health check failed"}},
		{name: "websocket handshake, silent", fn: probeWebsocket, module: "websocket: {}", serve: silent,
			target: func(_ *testing.T, addr string) string { return "ws://" + addr + "/" }, reasons: []string{"upgrade did not finish before the probe deadline"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := ""
			if tc.serve != nil {
				p := newHostilePeer(t, tc.serve)
				defer p.Close()
				addr = p.Addr()
			}
			target := addr
			if tc.target != nil {
				target = tc.target(t, addr)
			}
			prober := strings.SplitN(tc.module, ":", 2)[0]
			m := testModule(t, fmt.Sprintf("prober: %s\ntimeout: %v\nallowed_targets: [127.0.0.0/8]\n%s", prober, timeout, tc.module))
			r := runProbeDirect(t, tc.fn, target, m, Env{})
			assertBoundedFailure(t, r, timeout, tc.reasons...)
		})
	}
}

// A correct upgrade, then silence: blackbox's read after the upgrade has
// no deadline and hangs here.
func TestHostileWebSocketSilentAfterUpgrade(t *testing.T) {
	srv := newWSServer(t, nil, func(c *websocket.Conn) { _, _, _ = c.ReadMessage() })
	m := testModule(t, "prober: websocket\ntimeout: 400ms\nwebsocket: {query_response: [{expect: x}]}")
	r := runProbeDirect(t, probeWebsocket, srv.wsURL("/"), m, Env{})
	assertBoundedFailure(t, r, 400*time.Millisecond, "probe deadline reached")
	mustMetric(t, r.reg, "probe_websocket_connection_upgraded", nil, 1)
}

// A target outside allowed_targets answers 403 and nothing is dialled.
func TestBlackboxProbersAllowlist(t *testing.T) {
	var dialled atomic.Int32
	l, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Skipf("cannot listen on 127.0.0.2: %v", err)
	}
	defer l.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			dialled.Add(1)
			c.Close()
		}
	}()
	defer func() { l.Close(); <-done }()
	port := portOf(l.Addr().String())
	var b strings.Builder
	b.WriteString("modules:\n")
	for _, p := range []string{"tcp", "dns", "icmp", "grpc", "websocket"} {
		settings := ""
		if p == "dns" {
			settings = "\n    dns: {query_name: example.test, transport_protocol: tcp}"
		}
		fmt.Fprintf(&b, "  %s:\n    prober: %s\n    allowed_targets: [127.0.0.1, localhost]%s\n", p, p, settings)
	}
	h, _, _ := newTestHandler(t, b.String(), 10)
	for _, c := range []struct{ module, target string }{
		{"tcp", "127.0.0.2:" + port},
		{"dns", "127.0.0.2:" + port},
		{"dns", "[::1]:" + port},
		{"icmp", "127.0.0.2"},
		{"icmp", "::1"},
		{"grpc", "127.0.0.2:" + port},
		{"grpc", "http://127.0.0.2:" + port},
		{"websocket", "ws://127.0.0.2:" + port + "/"},
	} {
		rec := get(h, "/probe?module="+c.module+"&target="+url.QueryEscape(c.target), nil)
		if rec.Code != http.StatusForbidden || !strings.Contains(rec.Body.String(), "allowed_targets") {
			t.Errorf("%s %s: %d %s, want 403 naming allowed_targets", c.module, c.target, rec.Code, rec.Body)
		}
	}
	for _, c := range []struct{ module, target string }{
		{"tcp", "127.0.0.2"},             // no port
		{"tcp", "127.0.0.2:99999"},       // bad port
		{"icmp", "127.0.0.1:80"},         // a port
		{"grpc", "http://u:p@127.0.0.1"}, // credentials
		{"websocket", "http://127.0.0.1/"},
		{"dns", "http://127.0.0.1/"},
	} {
		rec := get(h, "/probe?module="+c.module+"&target="+url.QueryEscape(c.target), nil)
		if rec.Code != http.StatusBadRequest {
			t.Errorf("%s %q: %d %s, want 400", c.module, c.target, rec.Code, rec.Body)
		}
	}
	if n := dialled.Load(); n != 0 {
		t.Errorf("the denied address got %d connections", n)
	}
}
