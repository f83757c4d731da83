package prober

import (
	"context"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// Fuzzers for the blackbox-compatible probers' inputs: targets (query
// parameters anyone can send), module sections (config), and what a TCP
// server says back. Seed corpora run as plain tests.

// FuzzBlackboxTargets: a target parser either refuses with a TargetError
// or returns a host that cannot smuggle a path, credentials or a line
// break into a dial or a log line.
func FuzzBlackboxTargets(f *testing.F) {
	for _, s := range []string{
		"127.0.0.1:22", "[::1]:53", "::1", "localhost", "example.com:99999", "http://u:p@h:1/",
		"https://grpc.example:443", "ws://127.0.0.1/x?token=1", "wss://[::1]:8443/", "h:0", "h:+1",
		"[", "]:1", "a b:1", "host\n:1", "%zz", "ws://", "http://[::1", "1.2.3.4:080",
		"/run/a.sock", "/run/../etc/a.sock", "/run/a\x00.sock", "@abstract", "run/a.sock", "/run//a.sock", "/var/run/app.sock",
	} {
		f.Add(s)
	}
	unix := &UnixSettings{AllowedPaths: []string{"/run/*.sock", "/var/run/app.sock"}}
	f.Fuzz(func(t *testing.T, target string) {
		check := func(what, host, port string, err error) {
			if err != nil {
				if _, ok := err.(*TargetError); !ok {
					t.Fatalf("%s(%q): error %T %v, want a TargetError", what, target, err, err)
				}
				return
			}
			if host == "" || strings.ContainsAny(host, "/@?# \r\n") {
				t.Fatalf("%s(%q) accepted host %q", what, target, host)
			}
			if port != "" && checkPort(port) != nil {
				t.Fatalf("%s(%q) accepted port %q", what, target, port)
			}
		}
		h, p, err := splitHostPortTarget(target)
		check("splitHostPortTarget", h, p, err)
		h, p, err = dnsTarget(target, false)
		check("dnsTarget", h, p, err)
		h, err = icmpTarget(target)
		check("icmpTarget", h, "", err)
		h, p, err = grpcTarget(target, true)
		check("grpcTarget", h, p, err)
		if u, err := websocketTarget(target); err == nil {
			check("websocketTarget", u.Hostname(), u.Port(), nil)
		} else {
			check("websocketTarget", "", "", err)
		}
		// A socket path is dialled only if it and what it resolves to
		// are absolute, clean, short enough and in allowed_paths.
		if path, err := allowedSocket(target, unix); err != nil {
			if _, ok := err.(*TargetError); !ok {
				t.Fatalf("allowedSocket(%q): error %T %v, want a TargetError", target, err, err)
			}
		} else if !filepath.IsAbs(path) || filepath.Clean(path) != path || strings.ContainsRune(path, 0) ||
			len(target) > maxUnixPath || !pathAllowed(unix.AllowedPaths, target) || !pathAllowed(unix.AllowedPaths, path) {
			t.Fatalf("allowedSocket(%q) accepted, dialling %q", target, path)
		}
	})
}

// FuzzBlackboxModules: any section either fails to load with an error or
// loads into settings the prober can run with (defaults filled in).
func FuzzBlackboxModules(f *testing.F) {
	for _, s := range []string{
		"prober: tcp\ntcp: {query_response: [{expect: '^(a)', labels: [{name: x, value: '${1}'}]}]}",
		"prober: dns\ndns: {query_name: a.test, query_type: mx, valid_rcodes: [nxdomain]}",
		"prober: icmp\nicmp: {ttl: 300}",
		"prober: grpc\ngrpc: {metadata: {K: [v]}}",
		"prober: websocket\nwebsocket: {headers: {X: {values: [a]}}, query_response: [{expect: a, send: b}]}",
		"prober: dns\ndns: {query_name: '..'}",
		"prober: tcp\ntcp: {preferred_ip_protocol: ip6, ip_protocol_fallback: false, source_ip_address: '::1'}",
		"prober: http\nhttp: {compression: br, headers: {Accept-Encoding: 'br;q=0.5'}, fail_if_body_json_matches_cel: 'body.a == 1'}",
		"prober: http\nhttp: {tls_config: {insecure_skip_verify: true}, fail_if_header_matches: [{header: X, regexp: a}], valid_http_versions: [HTTP/2.0]}",
		"prober: http\nhttp: {ip_protocol_fallback: false, skip_resolve_phase_with_proxy: true, proxy_url: 'http://127.0.0.1:1'}",
		"prober: tcp\nhttp: {method: GET}\nunix: {}",
		"prober: unix\nunix: {allowed_paths: [/run/*.sock], query_response: [{expect: '^(a)', labels: [{name: x, value: '${1}'}], starttls: true}], tls_config: {server_name: a.test}}",
		"prober: unix\ntcp: {source_ip_address: nope}\nunix: {tls: true, tls_config: {insecure_skip_verify: true}}",
		"prober: http\nhttp: {enable_http3: true, enable_http2: false, valid_http_versions: [HTTP/3.0], basic_auth: {username: u}}",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, yml string) {
		m, err := parseModule(yml)
		if err != nil || m == nil {
			return
		}
		switch s := m.Settings.(type) {
		case *TCPSettings:
			if s.PreferredIPProtocol != "ip4" && s.PreferredIPProtocol != "ip6" {
				t.Fatalf("tcp loaded with preferred_ip_protocol %q", s.PreferredIPProtocol)
			}
		case *DNSSettings:
			if s.TransportProtocol != "udp" && s.TransportProtocol != "tcp" || len(s.validRcodes) == 0 || s.qtype == 0 {
				t.Fatalf("dns loaded half-validated: %+v", s)
			}
		case *ICMPSettings:
			if s.TTL < 0 || s.TTL > 255 {
				t.Fatalf("icmp loaded with ttl %d", s.TTL)
			}
		case *HTTPSettings:
			if s.Inline != nil || s.BodySizeLimit <= 0 || s.selectAddr && s.ipProtocol.PreferredIPProtocol == "" ||
				s.FailIfBodyJSONMatchesCEL != "" && s.celMatch == nil || s.FailIfBodyJSONNotMatchesCEL != "" && s.celNotMatch == nil {
				t.Fatalf("http loaded half-validated: %+v", s)
			}
			if s.EnableHTTP3 && (s.HTTPClientConfig.EnableHTTP2 || s.HTTPClientConfig.BasicAuth != nil ||
				slices.ContainsFunc(s.ValidHTTPVersions, func(v string) bool { return v != "HTTP/3.0" })) ||
				!s.EnableHTTP3 && slices.Contains(s.ValidHTTPVersions, "HTTP/3.0") {
				t.Fatalf("http loaded an HTTP/3 setting blackbox's rules refuse: %+v", s)
			}
		case *UnixSettings:
			for _, p := range s.AllowedPaths {
				if _, err := filepath.Match(p, ""); err != nil || !filepath.IsAbs(p) || filepath.Clean(p) != p {
					t.Fatalf("unix loaded with allowed_paths entry %q", p)
				}
			}
			starttls := slices.ContainsFunc(s.QueryResponse, func(qr QueryResponse) bool { return qr.StartTLS })
			if (s.TLS || starttls) && s.TLSConfig.ServerName == "" && !s.TLSConfig.InsecureSkipVerify {
				t.Fatalf("unix loaded TLS with no name to verify: %+v", s)
			}
		case *WebsocketSettings:
			if s.ReadLimit <= 0 {
				t.Fatalf("websocket loaded with read_limit %d", s.ReadLimit)
			}
		}
	})
}

// FuzzTCPQueryResponse: whatever a server sends, the dialogue ends (by
// EOF here) without a panic, and a match's labels are exactly the
// configured names.
func FuzzTCPQueryResponse(f *testing.F) {
	for _, s := range []string{"220 ok\r\n250 fine\n", "", "\x00\x01\x02", strings.Repeat("x", 70000), "220 \xff\xfe\n", "\r\n\r\n"} {
		f.Add(s)
	}
	m := testModule(f, `prober: tcp
tcp:
  query_response:
    - expect: "^220 (.*)$"
      labels: [{name: banner, value: "${1}"}]
      send: "HELO ${1}"
    - expect_bytes: "250"
    - expect: "fine"`)
	s := m.Settings.(*TCPSettings)
	f.Fuzz(func(t *testing.T, answer string) {
		client, server := net.Pipe()
		done := make(chan struct{})
		go func() {
			defer close(done)
			go io.Copy(io.Discard, server)
			_, _ = io.WriteString(server, answer)
			server.Close()
		}()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		reg := NewMetrics()
		ok := runQueryResponses(ctx, client, s, "127.0.0.1", &tlsMetrics{reg: reg}, reg, slog.New(slog.DiscardHandler))
		client.Close()
		<-done
		if ok && !strings.Contains(answer, "fine") {
			t.Fatalf("dialogue succeeded on %q", answer)
		}
		if _, err := reg.Gather(); err != nil {
			t.Fatalf("metrics do not gather: %v", err)
		}
	})
}
