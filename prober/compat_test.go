package prober

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/miekg/dns"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"

	"github.com/greybox-probe/greybox/config"
)

// The compatibility table: for each blackbox-compatible prober and option,
// a probe against a local server, asserting the metric names and values
// blackbox_exporter documents (and, where greybox fixes a blackbox defect,
// the fixed behaviour).

// want is one series: name{labels} == value. A negative absent means the
// series must not exist.
type want struct {
	name   string
	labels map[string]string
	value  float64
	absent bool
}

type compatCase struct {
	name   string
	module string
	target string
	ok     bool
	wants  []want
	// log must appear in the probe log (the reason an operator reads).
	log string
	// check runs after the probe, for what the server saw.
	check func(t *testing.T)
}

func runCompat(t *testing.T, fn ProbeFunc, d *testDNS, cases []compatCase) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := testModule(t, c.module)
			ctx, cancel := context.WithTimeout(context.Background(), time.Duration(m.Timeout))
			defer cancel()
			g := NewGuard(ctx, m.AllowedTargets)
			if d != nil {
				g.resolver = d.resolver()
			}
			r := runProbeDirect(t, fn, c.target, m, Env{Guard: g})
			if r.ok != c.ok {
				t.Fatalf("success = %v, want %v\n%s", r.ok, c.ok, r.logs)
			}
			for _, w := range c.wants {
				if w.absent {
					if _, ok := metricValue(t, r.reg, w.name, w.labels); ok {
						t.Errorf("%s%v present, want absent", w.name, w.labels)
					}
					continue
				}
				mustMetric(t, r.reg, w.name, w.labels, w.value)
			}
			if c.log != "" && !strings.Contains(r.logs, c.log) {
				t.Errorf("log lacks %q:\n%s", c.log, r.logs)
			}
			if c.check != nil {
				c.check(t)
			}
			if t.Failed() {
				t.Logf("probe log:\n%s", r.logs)
			}
		})
	}
}

func hashOf(ip string) float64 { return ipHash(netip.MustParseAddr(ip)) }

// writeLines is a server that sends lines and then echoes what it reads
// until the client hangs up.
func writeLines(lines ...string) func(net.Conn) {
	return func(c net.Conn) {
		for _, l := range lines {
			if _, err := io.WriteString(c, l); err != nil {
				return
			}
		}
		_, _ = io.Copy(io.Discard, c)
	}
}

// smtpLike answers a banner, EHLO, and optionally STARTTLS then a line
// over TLS.
func smtpLike(cert *testCert) func(net.Conn) {
	return func(c net.Conn) {
		io.WriteString(c, "220 mail.greybox.test ESMTP Greybox-1.2.3\r\n")
		r := bufio.NewReader(c)
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			switch strings.TrimSpace(line) {
			case "EHLO prober":
				io.WriteString(c, "250-mail.greybox.test\r\n250 STARTTLS\r\n")
			case "STARTTLS":
				io.WriteString(c, "220 go ahead\r\n")
				tc := tls.Server(c, cert.serverConfig())
				if tc.Handshake() != nil {
					return
				}
				io.WriteString(tc, "250 secure hello\r\n")
				_, _ = io.Copy(io.Discard, tc)
				return
			}
		}
	}
}

func TestTCPCompat(t *testing.T) {
	cert := newTestCert(t)
	d := newTestDNS(t)
	plain := newLineServer(t, "tcp", "127.0.0.1:0", writeLines("SSH-2.0-OpenSSH_9.6\r\n"))
	_, port, _ := net.SplitHostPort(plain.Addr())
	v6 := newLineServer(t, "tcp6", "[::1]:0", writeLines("hello\n"))
	_, port6, _ := net.SplitHostPort(v6.Addr())
	smtp := newLineServer(t, "tcp", "127.0.0.1:0", smtpLike(cert))
	split := newLineServer(t, "tcp", "127.0.0.1:0", writeLines("\x00\x01\x02\x03"))
	tlsSrv := newLineServer(t, "tcp", "127.0.0.1:0", func(c net.Conn) {
		tc := tls.Server(c, cert.serverConfig())
		if tc.Handshake() != nil {
			return
		}
		io.WriteString(tc, "+OK tls\r\n")
		_, _ = io.Copy(io.Discard, tc)
	})
	banner := newLineServer(t, "tcp", "127.0.0.1:0", func(c net.Conn) { io.WriteString(c, "SSH-2.0-OpenSSH_9.6\r\n") })
	closed := newLineServer(t, "tcp", "127.0.0.1:0", func(net.Conn) {})
	closedAddr := closed.Addr()
	closed.Close()
	// The server tells the probe where it came from: the probe's expect
	// is the assertion, with no race against Accept.
	source := newLineServer(t, "tcp", "127.0.0.1:0", func(c net.Conn) { io.WriteString(c, "from "+c.RemoteAddr().String()+"\n") })

	tlsWants := func(verified bool) []want { return tlsMetricWants(cert, verified) }

	runCompat(t, probeTCP, d, []compatCase{
		{name: "connect", module: "prober: tcp", target: plain.Addr(), ok: true, wants: []want{
			{name: "probe_ip_protocol", value: 4},
			{name: "probe_ip_addr_hash", value: hashOf("127.0.0.1")},
			{name: "probe_failed_due_to_regex", value: 0},
			{name: "probe_tls_version_info", absent: true},
		}},
		{name: "connection refused", module: "prober: tcp", target: closedAddr, ok: false, log: "dialing TCP failed"},
		{name: "ipv6 literal", module: "prober: tcp", target: "[::1]:" + port6, ok: true, wants: []want{
			{name: "probe_ip_protocol", value: 6}, {name: "probe_ip_addr_hash", value: hashOf("::1")},
		}},
		{name: "ip6 preferred, dual-stack name", module: "prober: tcp", target: "dual.test:" + port6, ok: true, wants: []want{
			{name: "probe_ip_protocol", value: 6},
		}},
		{name: "ip4 preferred, dual-stack name", module: "prober: tcp\ntcp: {preferred_ip_protocol: ip4}", target: "dual.test:" + port, ok: true, wants: []want{
			{name: "probe_ip_protocol", value: 4},
		}},
		{name: "ip6 preferred, v4-only name falls back", module: "prober: tcp", target: "v4.test:" + port, ok: true, wants: []want{
			{name: "probe_ip_protocol", value: 4},
		}},
		{name: "no fallback", module: "prober: tcp\ntcp: {ip_protocol_fallback: false}", target: "v4.test:" + port, ok: false, log: "has no ip6 address"},
		{name: "expect and labels", module: `prober: tcp
tcp:
  query_response:
    - expect: "^220 ([^ ]+) ESMTP (.+)$"
      labels: [{name: host, value: "${1}"}, {name: version, value: "${2}"}]
    - send: "EHLO prober"
    - expect: "^250 STARTTLS"`, target: smtp.Addr(), ok: true, wants: []want{
			{name: "probe_expect_info", labels: map[string]string{"host": "mail.greybox.test", "version": "Greybox-1.2.3"}, value: 1},
			{name: "probe_failed_due_to_regex", value: 0},
		}},
		{name: "expect does not match", module: `prober: tcp
tcp: {query_response: [{expect: "^SSH-1"}]}`, target: banner.Addr(), ok: false, wants: []want{
			{name: "probe_failed_due_to_regex", value: 1},
		}, log: "did not match"},
		{name: "expect_bytes", module: `prober: tcp
tcp: {query_response: [{expect_bytes: "\x00\x01\x02\x03"}]}`, target: split.Addr(), ok: true, wants: []want{
			{name: "probe_failed_due_to_bytes", value: 0},
		}},
		{name: "expect_bytes mismatch", module: `prober: tcp
tcp: {query_response: [{expect_bytes: "SSH-1"}]}`, target: plain.Addr(), ok: false, wants: []want{
			{name: "probe_failed_due_to_bytes", value: 1},
		}},
		{name: "starttls", module: fmt.Sprintf(`prober: tcp
tcp:
  query_response:
    - expect: "^220 "
    - send: "EHLO prober"
    - expect: "^250 STARTTLS"
    - send: "STARTTLS"
    - expect: "^220 go ahead"
      starttls: true
    - expect: "^250 secure"
  tls_config: {ca_file: %s, server_name: greybox.test}`, cert.caFile), target: smtp.Addr(), ok: true, wants: tlsWants(true)},
		{name: "tls verified", module: fmt.Sprintf("prober: tcp\ntcp: {tls: true, tls_config: {ca_file: %s}, query_response: [{expect: '^\\+OK'}]}", cert.caFile),
			target: tlsSrv.Addr(), ok: true, wants: tlsWants(true)},
		{name: "tls insecure: no chain expiry", module: "prober: tcp\ntcp: {tls: true, tls_config: {insecure_skip_verify: true}}",
			target: tlsSrv.Addr(), ok: true, wants: tlsWants(false)},
		{name: "tls untrusted", module: "prober: tcp\ntcp: {tls: true}", target: tlsSrv.Addr(), ok: false, log: "TLS handshake failed"},
		{name: "tls max_version", module: "prober: tcp\ntcp: {tls: true, tls_config: {insecure_skip_verify: true, max_version: TLS12}}", target: tlsSrv.Addr(), ok: true, wants: []want{
			{name: "probe_tls_version_info", labels: map[string]string{"version": "TLS 1.2"}, value: 1},
		}},
		{name: "source_ip_address", module: "prober: tcp\ntcp: {source_ip_address: 127.0.0.3, query_response: [{expect: '^from 127\\.0\\.0\\.3:'}]}", target: source.Addr(), ok: true},
		{name: "default source", module: "prober: tcp\ntcp: {query_response: [{expect: '^from 127\\.0\\.0\\.3:'}]}", target: source.Addr(), ok: false},
	})
}

// expect_bytes arriving in two reads, then a line: blackbox's single Read
// fails the first, and its scanner-then-raw-read mix loses the second.
// net.Pipe hands each write to exactly one read, so the split is certain.
func TestTCPQueryResponseShortReads(t *testing.T) {
	client, server := net.Pipe()
	defer client.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer server.Close()
		for _, part := range []string{"\x00\x01", "\x02\x03banner line\n"} {
			if _, err := io.WriteString(server, part); err != nil {
				return
			}
		}
	}()
	m := testModule(t, `prober: tcp
tcp: {query_response: [{expect_bytes: "\x00\x01\x02\x03"}, {expect: "^banner (line)$"}]}`)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	logs := &syncBuffer{}
	reg := NewMetrics()
	ok := runQueryResponses(ctx, client, m.Settings.(*TCPSettings), "127.0.0.1", &tlsMetrics{reg: reg}, reg, slog.New(slog.NewTextHandler(logs, nil)))
	<-done
	if !ok {
		t.Fatalf("split answer failed:\n%s", logs)
	}
}

// parseModule parses one module named m, returning the load error.
func parseModule(yml string) (*config.Module, error) {
	var b strings.Builder
	b.WriteString("modules:\n  m:\n")
	for _, line := range strings.Split(strings.TrimSpace(yml), "\n") {
		b.WriteString("    " + line + "\n")
	}
	cfg, err := config.Parse([]byte(b.String()), "test.yml")
	if err != nil {
		return nil, err
	}
	return cfg.Modules["m"], nil
}

func TestTCPConfigErrors(t *testing.T) {
	for _, c := range []struct{ yml, want string }{
		{"tcp: {preferred_ip_protocol: ipv4}", `preferred_ip_protocol "ipv4" must be ip4 or ip6`},
		{"tcp: {source_ip_address: 10.0.0}", `source_ip_address "10.0.0" is not an IP address`},
		{"tcp: {query_response: [{expect: a, expect_bytes: b}]}", "expect and expect_bytes are mutually exclusive"},
		{"tcp: {query_response: [{send: a, labels: [{name: x, value: y}]}]}", "labels need an expect regexp"},
		{"tcp: {query_response: [{expect: a, labels: [{name: 'bad-name', value: y}]}]}", `"bad-name" is not a valid label name`},
		{"tcp: {query_response: [{expect: a, labels: [{name: x, value: y}]}, {expect: b, labels: [{name: z, value: y}]}]}", "only one set of label names"},
		{"tcp: {query_response: [{expect: '('}]}", "invalid regular expression"},
		{"tcp: {tls_config: {ca_file: /nonexistent/ca.pem}}", "tcp.tls_config.ca_file: /nonexistent/ca.pem"},
		{"tcp: {expect: x}", "expect"},
	} {
		_, err := parseModule("prober: tcp\n" + c.yml)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want %q", c.yml, err, c.want)
		}
	}
}

func TestDNSCompat(t *testing.T) {
	d := newTestDNS(t)
	cert := newTestCert(t)
	dot := newDoTFront(t, cert, d.addr)
	lastQ := func(check func(t *testing.T, q *dnsMsg, network string)) func(t *testing.T) {
		return func(t *testing.T) {
			q, n := d.last()
			if q == nil {
				t.Fatal("the server saw no query")
			}
			check(t, q, n)
		}
	}
	counts := func(an, ns, ar float64) []want {
		return []want{
			{name: "probe_dns_query_succeeded", value: 1},
			{name: "probe_dns_answer_rrs", value: an},
			{name: "probe_dns_authority_rrs", value: ns},
			{name: "probe_dns_additional_rrs", value: ar},
		}
	}
	mod := func(extra string) string {
		return "prober: dns\ndns:\n  query_name: example.test\n  query_type: A\n" + extra
	}
	runCompat(t, probeDNS, d, []compatCase{
		{name: "A over udp", module: mod(""), target: d.addr, ok: true, wants: append(counts(2, 1, 1),
			want{name: "probe_ip_protocol", value: 4},
			want{name: "probe_ip_addr_hash", value: hashOf("127.0.0.1")},
			want{name: "probe_dns_serial", absent: true}),
			check: lastQ(func(t *testing.T, q *dnsMsg, n string) {
				if n != "udp" || !q.RecursionDesired || q.IsEdns0() != nil || q.Question[0].Qclass != 1 {
					t.Errorf("query over %s, rd=%v, edns=%v, class=%d; want udp, rd, no EDNS, IN", n, q.RecursionDesired, q.IsEdns0(), q.Question[0].Qclass)
				}
			})},
		{name: "over tcp, no recursion", module: mod("  transport_protocol: tcp\n  recursion_desired: false"), target: d.addr, ok: true, wants: counts(2, 1, 1),
			check: lastQ(func(t *testing.T, q *dnsMsg, n string) {
				if n != "tcp" || q.RecursionDesired {
					t.Errorf("query over %s rd=%v, want tcp without rd", n, q.RecursionDesired)
				}
			})},
		{name: "dnssec sets DO", module: mod("  dnssec: true"), target: d.addr, ok: true, wants: []want{{name: "probe_dns_authenticated_data", value: 0}},
			check: lastQ(func(t *testing.T, q *dnsMsg, _ string) {
				if o := q.IsEdns0(); o == nil || !o.Do() || o.UDPSize() != 4096 {
					t.Errorf("EDNS0 %v, want DO and 4096", o)
				}
			})},
		{name: "edns_udp_size", module: mod("  edns_udp_size: 1232"), target: d.addr, ok: true,
			check: lastQ(func(t *testing.T, q *dnsMsg, _ string) {
				if o := q.IsEdns0(); o == nil || o.Do() || o.UDPSize() != 1232 {
					t.Errorf("EDNS0 %v, want 1232 without DO", o)
				}
			})},
		{name: "SOA serial", module: "prober: dns\ndns: {query_name: example.test, query_type: SOA}", target: d.addr, ok: true, wants: []want{{name: "probe_dns_serial", value: 2026120201}}},
		{name: "query_class CH", module: "prober: dns\ndns: {query_name: example.test, query_type: MX, query_class: CH}", target: d.addr, ok: true, wants: counts(1, 0, 0)},
		{name: "NXDOMAIN fails by default", module: "prober: dns\ndns: {query_name: nx.test, query_type: A}", target: d.addr, ok: false, wants: counts(0, 1, 0), log: "rcode is not one of valid_rcodes"},
		{name: "NXDOMAIN valid", module: "prober: dns\ndns: {query_name: nx.test, query_type: A, valid_rcodes: [NXDOMAIN]}", target: d.addr, ok: true},
		{name: "REFUSED", module: "prober: dns\ndns: {query_name: refused.test, valid_rcodes: [NOERROR, NXDOMAIN]}", target: d.addr, ok: false},
		{name: "fail_if_matches_regexp", module: mod("  validate_answer_rrs: {fail_if_matches_regexp: ['192\\.0\\.2\\.11']}"), target: d.addr, ok: false, log: "matched fail_if_matches_regexp"},
		{name: "fail_if_matches_regexp passes", module: mod("  validate_answer_rrs: {fail_if_matches_regexp: ['198\\.51']}"), target: d.addr, ok: true},
		{name: "fail_if_all_match_regexp", module: mod("  validate_answer_rrs: {fail_if_all_match_regexp: ['IN\\tA\\t192\\.0\\.2\\.']}"), target: d.addr, ok: false, log: "every record matched"},
		{name: "fail_if_all_match_regexp, one differs", module: mod("  validate_answer_rrs: {fail_if_all_match_regexp: ['192\\.0\\.2\\.10$']}"), target: d.addr, ok: true},
		{name: "fail_if_not_matches_regexp", module: mod("  validate_answer_rrs: {fail_if_not_matches_regexp: ['192\\.0\\.2\\.10$']}"), target: d.addr, ok: false, log: "did not match fail_if_not_matches_regexp"},
		{name: "fail_if_none_matches_regexp", module: mod("  validate_answer_rrs: {fail_if_none_matches_regexp: ['198\\.51']}"), target: d.addr, ok: false, log: "no record matched"},
		{name: "fail_if_none_matches_regexp passes", module: mod("  validate_answer_rrs: {fail_if_none_matches_regexp: ['192\\.0\\.2\\.11$']}"), target: d.addr, ok: true},
		{name: "authority validator", module: mod("  validate_authority_rrs: {fail_if_not_matches_regexp: ['IN\\tNS\\tns1\\.example\\.test\\.$']}"), target: d.addr, ok: true},
		{name: "additional validator", module: mod("  validate_additional_rrs: {fail_if_matches_regexp: ['192\\.0\\.2\\.53']}"), target: d.addr, ok: false, log: "validate_additional_rrs"},
		{name: "none-match with no records", module: "prober: dns\ndns: {query_name: nx.test, valid_rcodes: [NXDOMAIN], validate_answer_rrs: {fail_if_none_matches_regexp: [.]}}", target: d.addr, ok: false, log: "no records"},
		{name: "dns over tls", module: fmt.Sprintf(mod("  transport_protocol: tcp\n  dns_over_tls: true\n  tls_config: {ca_file: %s}"), cert.caFile), target: dot.Addr(), ok: true, wants: counts(2, 1, 1)},
		{name: "server by name, ip4 preferred", module: mod("  preferred_ip_protocol: ip4"), target: "v4.test:" + portOf(d.addr), ok: true, wants: []want{{name: "probe_ip_protocol", value: 4}}},
	})
}

type dnsMsg = dns.Msg

// Blackbox's default ports: 53, 853 for DNS over TLS; a bare IPv6 address
// or a bracketed one without a port is a host.
func TestDNSTargetPorts(t *testing.T) {
	for _, c := range []struct {
		target     string
		dot        bool
		host, port string
	}{
		{"192.0.2.1", false, "192.0.2.1", "53"},
		{"192.0.2.1", true, "192.0.2.1", "853"},
		{"ns.example.test:5353", true, "ns.example.test", "5353"},
		{"::1", false, "::1", "53"},
		{"[::1]", false, "::1", "53"},
		{"[::1]:54", false, "::1", "54"},
	} {
		h, p, err := dnsTarget(c.target, c.dot)
		if err != nil || h != c.host || p != c.port {
			t.Errorf("dnsTarget(%q, %v) = %q, %q, %v; want %q, %q", c.target, c.dot, h, p, err, c.host, c.port)
		}
	}
}

func portOf(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}

func TestDNSConfigErrors(t *testing.T) {
	for _, c := range []struct{ yml, want string }{
		{"dns: {query_type: A}", "query_name must be set"},
		{"dns: {query_name: x.test, query_type: BOGUS}", `query_type "BOGUS" is not a DNS type`},
		{"dns: {query_name: x.test, query_class: XX}", `query_class "XX" is not a DNS class`},
		{"dns: {query_name: x.test, valid_rcodes: [NOPE]}", `valid_rcodes: "NOPE" is not a DNS rcode`},
		{"dns: {query_name: x.test, transport_protocol: quic}", `transport_protocol "quic" must be udp or tcp`},
		{"dns: {query_name: x.test, dns_over_tls: true}", "dns_over_tls needs transport_protocol: tcp"},
		{"dns: {query_name: x.test, validate_answer_rrs: {fail_if_matches_regexp: ['(']}}", "invalid regular expression"},
		{"dns: {query_name: x.test, edns_udp_size: 100}", "below the DNS minimum"},
		{"dns: {query_name: x.test, transport_protocol: tcp, dns_over_tls: true, tls_config: {cert_file: /nonexistent/c, key_file: /nonexistent/k}}", "dns.tls_config.cert_file"},
	} {
		_, err := parseModule("prober: dns\n" + c.yml)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want %q", c.yml, err, c.want)
		}
	}
}

// icmpUsable says whether this machine lets a probe open an ICMP socket of
// the family; if not the test skips with the reason, unless CI=true on a
// machine that should allow it (root, or our group in ping_group_range).
func icmpUsable(t *testing.T, v6 bool) {
	t.Helper()
	source := "0.0.0.0"
	if v6 {
		source = "::"
	}
	s, err := openICMP(v6, false, source)
	if err == nil {
		s.Close()
		return
	}
	if os.Getenv("CI") == "true" && (os.Geteuid() == 0 || pingGroupAllows(os.Getegid())) {
		t.Fatalf("CI=true and this machine should allow ICMP sockets: %v", err)
	}
	t.Skipf("ICMP not possible here: %v", err)
}

func pingGroupAllows(gid int) bool {
	var lo, hi int
	if _, err := fmt.Sscan(pingGroupRange(), &lo, &hi); err != nil {
		return false
	}
	return gid >= lo && gid <= hi
}

func TestICMPCompat(t *testing.T) {
	d := newTestDNS(t)
	hop := func() want { return want{name: "probe_icmp_reply_hop_limit", value: 64} }
	t.Run("ipv4", func(t *testing.T) {
		icmpUsable(t, false)
		runCompat(t, probeICMP, d, []compatCase{
			{name: "echo", module: "prober: icmp", target: "127.0.0.1", ok: true, wants: []want{
				{name: "probe_ip_protocol", value: 4}, {name: "probe_ip_addr_hash", value: hashOf("127.0.0.1")}, hop(),
			}},
			{name: "by name, ip6 preferred falls back", module: "prober: icmp", target: "v4.test", ok: true, wants: []want{{name: "probe_ip_protocol", value: 4}}},
			{name: "no fallback", module: "prober: icmp\nicmp: {ip_protocol_fallback: false}", target: "v4.test", ok: false, log: "has no ip6 address"},
			{name: "payload_size", module: "prober: icmp\nicmp: {payload_size: 1400}", target: "127.0.0.1", ok: true},
			{name: "ttl 1 reaches loopback", module: "prober: icmp\nicmp: {ttl: 1}", target: "127.0.0.1", ok: true},
			{name: "dont_fragment", module: "prober: icmp\nicmp: {dont_fragment: true, payload_size: 1400, preferred_ip_protocol: ip4}", target: "127.0.0.1", ok: true, wants: []want{hop()}},
			{name: "source_ip_address", module: "prober: icmp\nicmp: {source_ip_address: 127.0.0.3}", target: "127.0.0.1", ok: true},
		})
	})
	t.Run("ipv6", func(t *testing.T) {
		icmpUsable(t, true)
		runCompat(t, probeICMP, d, []compatCase{
			{name: "echo", module: "prober: icmp", target: "::1", ok: true, wants: []want{
				{name: "probe_ip_protocol", value: 6}, {name: "probe_ip_addr_hash", value: hashOf("::1")}, hop(),
			}},
			{name: "by name", module: "prober: icmp", target: "dual.test", ok: true, wants: []want{{name: "probe_ip_protocol", value: 6}}},
			{name: "ttl", module: "prober: icmp\nicmp: {ttl: 3}", target: "[::1]", ok: true},
		})
	})
}

func TestICMPConfigErrors(t *testing.T) {
	for _, c := range []struct{ yml, want string }{
		{"icmp: {ttl: 256}", "ttl 256 must be between 0 and 255"},
		{"icmp: {ttl: -1}", "ttl -1 must be between"},
		{"icmp: {payload_size: 70000}", "payload_size 70000"},
		{"icmp: {preferred_ip_protocol: ip5}", "must be ip4 or ip6"},
	} {
		_, err := parseModule("prober: icmp\n" + c.yml)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want %q", c.yml, err, c.want)
		}
	}
}

// grpcHealthServer is grpc-go's own health service on 127.0.0.1, with
// "up" SERVING and "down" NOT_SERVING; md is the last metadata it saw.
type grpcHealthServer struct {
	addr string
	mu   sync.Mutex
	md   metadata.MD
}

func newGRPCHealthServer(t testing.TB, creds credentials.TransportCredentials) *grpcHealthServer {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := &grpcHealthServer{addr: l.Addr().String()}
	opts := []grpc.ServerOption{grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, next grpc.UnaryHandler) (any, error) {
		md, _ := metadata.FromIncomingContext(ctx)
		h.mu.Lock()
		h.md = md
		h.mu.Unlock()
		return next(ctx, req)
	})}
	if creds != nil {
		opts = append(opts, grpc.Creds(creds))
	}
	srv := grpc.NewServer(opts...)
	hs := health.NewServer()
	hs.SetServingStatus("up", healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus("down", healthpb.HealthCheckResponse_NOT_SERVING)
	healthpb.RegisterHealthServer(srv, hs)
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(l) }()
	t.Cleanup(func() { srv.Stop(); <-done })
	return h
}

func (h *grpcHealthServer) lastMD() metadata.MD {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.md
}

func TestGRPCCompat(t *testing.T) {
	d := newTestDNS(t)
	cert := newTestCert(t)
	plain := newGRPCHealthServer(t, nil)
	secure := newGRPCHealthServer(t, credentials.NewTLS(cert.serverConfig()))
	notGRPC := newLineServer(t, "tcp", "127.0.0.1:0", writeLines("SSH-2.0-OpenSSH_9.6\r\n"))
	servingWants := func(serving string) []want {
		var ws []want
		for _, s := range grpcServingStatuses() {
			ws = append(ws, want{name: "probe_grpc_healthcheck_response", labels: map[string]string{"serving_status": s}, value: boolValue(s == serving)})
		}
		return ws
	}
	runCompat(t, probeGRPC, d, []compatCase{
		{name: "server health", module: "prober: grpc", target: plain.addr, ok: true, wants: append(servingWants("SERVING"),
			want{name: "probe_grpc_status_code", value: 0}, want{name: "probe_grpc_ssl", value: 0},
			want{name: "probe_ip_protocol", value: 4}, want{name: "probe_tls_version_info", absent: true})},
		{name: "service serving", module: "prober: grpc\ngrpc: {service: up}", target: "http://" + plain.addr, ok: true, wants: servingWants("SERVING")},
		{name: "service not serving", module: "prober: grpc\ngrpc: {service: down}", target: plain.addr, ok: false, wants: append(servingWants("NOT_SERVING"),
			want{name: "probe_grpc_status_code", value: 0}), log: "not serving"},
		{name: "unknown service", module: "prober: grpc\ngrpc: {service: nope}", target: plain.addr, ok: false, wants: append(servingWants(""),
			want{name: "probe_grpc_status_code", value: float64(codes.NotFound)}), log: "does not know the service"},
		{name: "metadata", module: "prober: grpc\ngrpc: {metadata: {X-Api-Key: [k1], tenant: [a, b]}}", target: plain.addr, ok: true, check: func(t *testing.T) {
			md := plain.lastMD()
			if got := md.Get("x-api-key"); len(got) != 1 || got[0] != "k1" {
				t.Errorf("x-api-key = %v", got)
			}
			if got := md.Get("tenant"); len(got) != 2 {
				t.Errorf("tenant = %v", got)
			}
		}},
		{name: "by name, fallback to ip4", module: "prober: grpc", target: "v4.test:" + portOf(plain.addr), ok: true, wants: []want{{name: "probe_ip_protocol", value: 4}}},
		{name: "tls", module: fmt.Sprintf("prober: grpc\ngrpc: {tls: true, tls_config: {ca_file: %s, server_name: greybox.test}}", cert.caFile), target: secure.addr, ok: true, wants: []want{
			{name: "probe_grpc_ssl", value: 1},
			{name: "probe_ssl_earliest_cert_expiry", value: float64(cert.notAfter.Unix())},
			{name: "probe_tls_version_info", labels: map[string]string{"version": "TLS 1.3"}, value: 1},
			{name: "probe_ssl_last_chain_info", labels: map[string]string{"subject": "CN=greybox.test"}, value: 1},
		}},
		{name: "tls untrusted", module: "prober: grpc\ngrpc: {tls: true}", target: secure.addr, ok: false, wants: []want{{name: "probe_grpc_status_code", value: float64(codes.Unavailable)}}},
		{name: "plaintext to a TLS server", module: "prober: grpc", target: secure.addr, ok: false},
		{name: "not a gRPC server", module: "prober: grpc\ntimeout: 2s", target: notGRPC.Addr(), ok: false},
	})
}

func TestGRPCConfigErrors(t *testing.T) {
	for _, c := range []struct{ yml, want string }{
		{"grpc: {metadata: {'bad key': [x]}}", `"bad key" is not a key gRPC can send`},
		{"grpc: {metadata: {grpc-timeout: [1S]}}", "no grpc- prefix"},
		{"grpc: {metadata: {k: [\"a\\nb\"]}}", "characters a header cannot carry"},
		{"grpc: {preferred_ip_protocol: tcp4}", "must be ip4 or ip6"},
		{"grpc: {tls: true, tls_config: {ca_file: /nonexistent/ca}}", "grpc.tls_config.ca_file"},
	} {
		_, err := parseModule("prober: grpc\n" + c.yml)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want %q", c.yml, err, c.want)
		}
	}
	m, err := parseModule("prober: grpc\ngrpc: {metadata: {authorization: [Bearer s3cret]}}")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(m.YAML(), "s3cret") || !strings.Contains(m.YAML(), "<secret>") {
		t.Errorf("metadata printed in the clear:\n%s", m.YAML())
	}
}

// wsServer upgrades every request on /, greets with "hello greybox",
// answers "ok <message>" to each message, and records the upgrade's headers.
type wsServer struct {
	*httptest.Server
	mu     sync.Mutex
	header http.Header
}

func newWSServer(t testing.TB, tlsCert *testCert, serve func(c *websocket.Conn)) *wsServer {
	t.Helper()
	return startWSServer(t, tlsCert, websocket.Upgrader{}, serve)
}

// startWSServer is newWSServer with the upgrader to use (its origin check).
func startWSServer(t testing.TB, tlsCert *testCert, up websocket.Upgrader, serve func(c *websocket.Conn)) *wsServer {
	t.Helper()
	s := &wsServer{}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/notws" {
			http.NotFound(w, r)
			return
		}
		s.mu.Lock()
		s.header = r.Header.Clone()
		s.mu.Unlock()
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
		serve(c)
	})
	s.Server = httptest.NewUnstartedServer(h)
	if tlsCert != nil {
		s.TLS = tlsCert.serverConfig()
		s.StartTLS()
	} else {
		s.Start()
	}
	t.Cleanup(s.Close)
	return s
}

func (s *wsServer) wsURL(path string) string {
	return strings.Replace(strings.Replace(s.URL, "https://", "wss://", 1), "http://", "ws://", 1) + path
}

func (s *wsServer) lastHeader() http.Header {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.header
}

func greetAndEcho(c *websocket.Conn) {
	if c.WriteMessage(websocket.TextMessage, []byte("hello greybox")) != nil {
		return
	}
	for {
		_, msg, err := c.ReadMessage()
		if err != nil {
			return
		}
		if c.WriteMessage(websocket.TextMessage, append([]byte("ok "), msg...)) != nil {
			return
		}
	}
}

func TestWebSocketCompat(t *testing.T) {
	d := newTestDNS(t)
	cert := newTestCert(t)
	plain := newWSServer(t, nil, greetAndEcho)
	secure := newWSServer(t, cert, greetAndEcho)
	big := newWSServer(t, nil, func(c *websocket.Conn) {
		_ = c.WriteMessage(websocket.TextMessage, make([]byte, 2<<20))
	})
	secretFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(secretFile, []byte("from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	dialogue := `
  query_response:
    - expect: "^hello (\\w+)$"
      send: "ack ${1}"
    - expect: "^ok ack greybox$"`
	runCompat(t, probeWebsocket, d, []compatCase{
		{name: "upgrade", module: "prober: websocket", target: plain.wsURL("/"), ok: true, wants: []want{
			{name: "probe_websocket_status_code", value: 101},
			{name: "probe_websocket_connection_upgraded", value: 1},
			{name: "probe_websocket_failed_due_to_regex", value: 0},
			{name: "probe_ip_protocol", value: 4},
		}},
		{name: "query_response", module: "prober: websocket\nwebsocket:" + dialogue, target: plain.wsURL("/"), ok: true, wants: []want{
			{name: "probe_websocket_failed_due_to_regex", value: 0},
		}},
		{name: "expect does not match", module: "prober: websocket\nwebsocket: {query_response: [{expect: '^bye'}]}", target: plain.wsURL("/"), ok: false, wants: []want{
			{name: "probe_websocket_failed_due_to_regex", value: 1},
		}, log: "did not match"},
		{name: "not a websocket", module: "prober: websocket", target: plain.wsURL("/notws"), ok: false, wants: []want{
			{name: "probe_websocket_status_code", value: 404},
			{name: "probe_websocket_connection_upgraded", value: 0},
		}},
		{name: "headers and basic auth", module: fmt.Sprintf(`prober: websocket
websocket:
  http_config: {basic_auth: {username: u, password: p}}
  headers:
    X-Plain: {values: [v1]}
    X-Secret: {secrets: [s1]}
    X-File: {files: [%s]}`, secretFile), target: plain.wsURL("/"), ok: true, check: func(t *testing.T) {
			h := plain.lastHeader()
			for k, v := range map[string]string{"X-Plain": "v1", "X-Secret": "s1", "X-File": "from-file", "Authorization": "Basic dTpw"} {
				if h.Get(k) != v {
					t.Errorf("upgrade header %s = %q, want %q", k, h.Get(k), v)
				}
			}
		}},
		{name: "wss", module: fmt.Sprintf("prober: websocket\nwebsocket:\n  http_config: {tls_config: {ca_file: %s}}%s", cert.caFile, dialogue), target: secure.wsURL("/"), ok: true, wants: []want{
			{name: "probe_websocket_status_code", value: 101},
		}},
		{name: "wss untrusted", module: "prober: websocket", target: secure.wsURL("/"), ok: false, log: "upgrade failed"},
		{name: "read_limit", module: "prober: websocket\nwebsocket: {read_limit: 1MiB, query_response: [{expect: x}]}", target: big.wsURL("/"), ok: false, wants: []want{
			{name: "probe_websocket_failed_due_to_regex", value: 0},
		}, log: "larger than read_limit"},
		{name: "by name", module: "prober: websocket\nwebsocket: {preferred_ip_protocol: ip4}", target: "ws://v4.test:" + portOf(plain.Listener.Addr().String()) + "/", ok: true, wants: []want{
			{name: "probe_ip_protocol", value: 4},
		}},
	})
}

func TestWebSocketConfigErrors(t *testing.T) {
	for _, c := range []struct{ yml, want string }{
		{"websocket: {query_response: [{starttls: true}]}", "starttls has no meaning"},
		{"websocket: {query_response: [{expect_bytes: x}]}", "expect_bytes is a tcp option"},
		{"websocket: {http_config: {oauth2: {client_id: a, token_url: 'http://127.0.0.1/'}}}", "oauth2 cannot be applied"},
		{"websocket: {headers: {Upgrade: {values: [x]}}}", "set by the WebSocket handshake"},
		{"websocket: {headers: {X-File: {files: [/nonexistent/token]}}}", "websocket.http_config.http_headers.X-File.files: /nonexistent/token"},
		{"websocket: {http_config: {tls_config: {ca_file: /nonexistent/ca}}}", "websocket.http_config.tls_config.ca_file"},
	} {
		_, err := parseModule("prober: websocket\n" + c.yml)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want %q", c.yml, err, c.want)
		}
	}
	m, err := parseModule("prober: websocket\nwebsocket: {headers: {X-Secret: {secrets: [s3cret]}}, http_config: {basic_auth: {username: u, password: pw0rd}}}")
	if err != nil {
		t.Fatal(err)
	}
	if y := m.YAML(); strings.Contains(y, "s3cret") || strings.Contains(y, "pw0rd") {
		t.Errorf("secrets printed:\n%s", y)
	}
}

// Where ping_group_range admits our group, the probe uses a datagram ICMP
// socket (no privilege) and still matches its reply, whose ID the kernel
// rewrote. Elsewhere this skips; run it as root in a network namespace
// with the range widened to exercise it (see the README's icmp section).
func TestICMPDatagramSocket(t *testing.T) {
	if !pingGroupAllows(os.Getegid()) {
		t.Skipf("net.ipv4.ping_group_range %q does not include group %d", pingGroupRange(), os.Getegid())
	}
	for _, v6 := range []bool{false, true} {
		s, err := openICMP(v6, false, map[bool]string{false: "0.0.0.0", true: "::"}[v6])
		if err != nil {
			t.Fatalf("ping_group_range allows us, but: %v", err)
		}
		datagram := s.datagram
		s.Close()
		if !datagram {
			t.Errorf("v6=%v: a raw socket was chosen where a datagram one is allowed", v6)
		}
	}
	runCompat(t, probeICMP, nil, []compatCase{
		{name: "ipv4", module: "prober: icmp", target: "127.0.0.1", ok: true, wants: []want{{name: "probe_ip_protocol", value: 4}}},
		{name: "ipv6", module: "prober: icmp", target: "::1", ok: true, wants: []want{{name: "probe_ip_protocol", value: 6}}},
		{name: "ttl and payload", module: "prober: icmp\nicmp: {ttl: 2, payload_size: 512}", target: "127.0.0.1", ok: true},
	})
}
