package prober

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/miekg/dns"
	pconfig "github.com/prometheus/common/config"

	"github.com/greybox-probe/greybox/config"
)

// DNSSettings is the `dns:` section of a module: blackbox_exporter's
// dns_probe, plus dnssec and edns_udp_size.
type DNSSettings struct {
	IPProtocol         `yaml:",inline"`
	SourceIPAddress    string            `yaml:"source_ip_address,omitempty"`
	TransportProtocol  string            `yaml:"transport_protocol,omitempty"`
	DNSOverTLS         bool              `yaml:"dns_over_tls,omitempty"`
	TLSConfig          pconfig.TLSConfig `yaml:"tls_config,omitempty"`
	QueryName          string            `yaml:"query_name"`
	QueryType          string            `yaml:"query_type,omitempty"`
	QueryClass         string            `yaml:"query_class,omitempty"`
	RecursionDesired   bool              `yaml:"recursion_desired"`
	ValidRcodes        []string          `yaml:"valid_rcodes,omitempty"`
	ValidateAnswer     DNSRRValidator    `yaml:"validate_answer_rrs,omitempty"`
	ValidateAuthority  DNSRRValidator    `yaml:"validate_authority_rrs,omitempty"`
	ValidateAdditional DNSRRValidator    `yaml:"validate_additional_rrs,omitempty"`
	// DNSSEC sets the DO bit (EDNS0) and reports the AD flag.
	DNSSEC bool `yaml:"dnssec,omitempty"`
	// EDNSUDPSize sends EDNS0 with this UDP payload size; 0 sends no EDNS0
	// unless dnssec is set (then 4096).
	EDNSUDPSize uint16 `yaml:"edns_udp_size,omitempty"`
	TLSFiles    `yaml:"-"`

	source      netip.Addr
	qtype       uint16
	qclass      uint16
	validRcodes []int
}

// DNSRRValidator checks one section of the answer, each RR in its text
// form ("example.com.\t300\tIN\tA\t192.0.2.1"), as in blackbox.
type DNSRRValidator struct {
	FailIfMatchesRegexp     []config.Regexp `yaml:"fail_if_matches_regexp,omitempty"`
	FailIfAllMatchRegexp    []config.Regexp `yaml:"fail_if_all_match_regexp,omitempty"`
	FailIfNotMatchesRegexp  []config.Regexp `yaml:"fail_if_not_matches_regexp,omitempty"`
	FailIfNoneMatchesRegexp []config.Regexp `yaml:"fail_if_none_matches_regexp,omitempty"`
}

func (s *DNSSettings) Validate() error {
	if err := s.IPProtocol.validate(); err != nil {
		return err
	}
	var err error
	if s.source, err = parseSourceIP(s.SourceIPAddress); err != nil {
		return err
	}
	switch s.TransportProtocol {
	case "":
		s.TransportProtocol = "udp"
	case "udp", "tcp":
	default:
		return fmt.Errorf("transport_protocol %q must be udp or tcp", s.TransportProtocol)
	}
	if s.DNSOverTLS && s.TransportProtocol != "tcp" {
		return errors.New("dns_over_tls needs transport_protocol: tcp")
	}
	if s.QueryName == "" {
		return errors.New("query_name must be set")
	}
	if _, ok := dns.IsDomainName(s.QueryName); !ok {
		return fmt.Errorf("query_name %q is not a domain name", s.QueryName)
	}
	if s.QueryType == "" {
		s.QueryType = "ANY"
	}
	var ok bool
	if s.qtype, ok = dns.StringToType[strings.ToUpper(s.QueryType)]; !ok {
		return fmt.Errorf("query_type %q is not a DNS type (A, AAAA, MX, SOA, TXT, …)", s.QueryType)
	}
	if s.QueryClass == "" {
		s.QueryClass = "IN"
	}
	if s.qclass, ok = dns.StringToClass[strings.ToUpper(s.QueryClass)]; !ok {
		return fmt.Errorf("query_class %q is not a DNS class (IN, CH, HS, ANY)", s.QueryClass)
	}
	codes := s.ValidRcodes
	if codes == nil {
		codes = []string{"NOERROR"}
	}
	s.validRcodes = nil
	for _, c := range codes {
		rc, ok := dns.StringToRcode[strings.ToUpper(c)]
		if !ok {
			return fmt.Errorf("valid_rcodes: %q is not a DNS rcode (NOERROR, NXDOMAIN, SERVFAIL, REFUSED, …)", c)
		}
		s.validRcodes = append(s.validRcodes, rc)
	}
	if s.EDNSUDPSize != 0 && s.EDNSUDPSize < dns.MinMsgSize {
		return fmt.Errorf("edns_udp_size %d is below the DNS minimum of %d", s.EDNSUDPSize, dns.MinMsgSize)
	}
	return s.TLSFiles.set(s.TLSConfig)
}

func init() {
	Register("dns", Spec{
		Settings: func() config.Settings {
			return &DNSSettings{IPProtocol: defaultIPProtocol(), RecursionDesired: true}
		},
		Probe: probeDNS,
		CheckTarget: func(ctx context.Context, target string, m config.Module, g *Guard) error {
			host, _, err := dnsTarget(target, false)
			if err != nil {
				return err
			}
			return checkHost(ctx, m, g, host)
		},
	})
}

// dnsTarget splits a DNS server target: host, host:port, [v6]:port or a
// bare IPv6 address; the port defaults to 53 (853 for DNS over TLS).
func dnsTarget(target string, dot bool) (host, port string, err error) {
	port = "53"
	if dot {
		port = "853"
	}
	if h, p, err := net.SplitHostPort(target); err == nil {
		if err := checkPort(p); err != nil {
			return "", "", &TargetError{Reason: fmt.Sprintf("target %q: %v", oneLine(target), err)}
		}
		host, port = h, p
	} else {
		host = strings.Trim(target, "[]")
	}
	if badHost(host) {
		return "", "", &TargetError{Reason: fmt.Sprintf("target %q must be a DNS server: host, host:port or [ipv6]:port", oneLine(target))}
	}
	return host, port, nil
}

func probeDNS(ctx context.Context, target string, module config.Module, reg *Metrics, logger *slog.Logger, env Env) bool {
	s := module.Settings.(*DNSSettings)
	phases := newGaugeVec("probe_dns_duration_seconds", "Duration of the DNS request by phase, in seconds.", "phase")
	reg.MustRegister(phases)
	for _, p := range []string{"resolve", "connect", "request"} {
		phases.WithLabelValues(p)
	}
	answerRRs := gauge(reg, "probe_dns_answer_rrs", "Number of entries in the answer section.")
	authorityRRs := gauge(reg, "probe_dns_authority_rrs", "Number of entries in the authority section.")
	additionalRRs := gauge(reg, "probe_dns_additional_rrs", "Number of entries in the additional section.")
	succeeded := gauge(reg, "probe_dns_query_succeeded", "1 if the query got an answer (whatever its rcode).")

	host, port, err := dnsTarget(target, s.DNSOverTLS)
	if err != nil {
		logger.Error("invalid target", "err", err)
		return false
	}
	addr, resolved := resolveTarget(ctx, env.Guard, host, s.IPProtocol, reg, logger, phases, "DNS server")
	if !resolved {
		return false
	}
	network := s.TransportProtocol + "4"
	if addr.Is6() {
		network = s.TransportProtocol + "6"
	}

	connectStart := time.Now()
	conn, err := dialAddr(ctx, env.Guard, network, addr, port, s.source)
	if err == nil && s.DNSOverTLS {
		var tc *tls.Conn
		if tc, err = dotHandshake(ctx, conn, s, host); err == nil {
			conn = tc
		} else {
			conn.Close()
		}
	}
	phases.WithLabelValues("connect").Set(time.Since(connectStart).Seconds())
	if err != nil {
		logger.Error("connecting to the DNS server failed", "network", network, "err", err)
		return false
	}
	defer conn.Close()

	msg := new(dns.Msg)
	msg.Id = dns.Id()
	msg.RecursionDesired = s.RecursionDesired
	msg.Question = []dns.Question{{Name: dns.Fqdn(s.QueryName), Qtype: s.qtype, Qclass: s.qclass}}
	if s.DNSSEC || s.EDNSUDPSize != 0 {
		size := s.EDNSUDPSize
		if size == 0 {
			size = 4096
		}
		msg.SetEdns0(size, s.DNSSEC)
	}
	logger.Debug("making DNS query", "server", net.JoinHostPort(addr.String(), port), "network", network,
		"query_name", s.QueryName, "query_type", s.QueryType, "query_class", s.QueryClass)
	client := &dns.Client{Net: s.TransportProtocol}
	resp, rtt, err := client.ExchangeWithConnContext(ctx, msg, &dns.Conn{Conn: dnsConn(conn)})
	phases.WithLabelValues("request").Set(rtt.Seconds())
	if err != nil {
		logger.Error("DNS query failed", "err", describeReadErr(ctx, err))
		return false
	}
	logger.Debug("got DNS response", "rcode", dns.RcodeToString[resp.Rcode], "answer", len(resp.Answer), "authority", len(resp.Ns), "additional", len(resp.Extra), "truncated", resp.Truncated)
	answerRRs.Set(float64(len(resp.Answer)))
	authorityRRs.Set(float64(len(resp.Ns)))
	additionalRRs.Set(float64(len(resp.Extra)))
	succeeded.Set(1)
	if resp.Truncated {
		// blackbox validates a truncated answer as if it were whole.
		logger.Warn("answer truncated (TC flag): the RR checks saw part of it; use transport_protocol: tcp or a larger edns_udp_size")
	}
	if s.qtype == dns.TypeSOA {
		for _, rr := range resp.Answer {
			if soa, ok := rr.(*dns.SOA); ok {
				gauge(reg, "probe_dns_serial", "Serial of the zone's SOA record.").Set(float64(soa.Serial))
				break
			}
		}
	}
	if s.DNSSEC {
		gauge(reg, "probe_dns_authenticated_data", "1 if the answer had the AD flag (validated by the resolver).").Set(boolValue(resp.AuthenticatedData))
	}

	if !slices.Contains(s.validRcodes, resp.Rcode) {
		logger.Error("rcode is not one of valid_rcodes", "rcode", dns.RcodeToString[resp.Rcode], "valid_rcodes", s.ValidRcodes)
		return false
	}
	ok := validRRs(resp.Answer, &s.ValidateAnswer, "validate_answer_rrs", logger)
	ok = validRRs(resp.Ns, &s.ValidateAuthority, "validate_authority_rrs", logger) && ok
	ok = validRRs(resp.Extra, &s.ValidateAdditional, "validate_additional_rrs", logger) && ok
	return ok
}

func dotHandshake(ctx context.Context, conn net.Conn, s *DNSSettings, host string) (*tls.Conn, error) {
	cfg, err := s.tlsConfig(ctx, host)
	if err != nil {
		return nil, err
	}
	tc := tls.Client(conn, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, fmt.Errorf("DNS over TLS handshake: %w", err)
	}
	return tc, nil
}

// dnsConn lets miekg/dns see a guarded UDP connection as the datagram
// socket it is (it frames a stream and a packet connection differently).
func dnsConn(c net.Conn) net.Conn {
	if gc, ok := c.(*guardConn); ok {
		if u, ok := gc.Conn.(*net.UDPConn); ok {
			return guardedUDP{gc, u}
		}
	}
	return c
}

type guardedUDP struct {
	*guardConn
	udp *net.UDPConn
}

func (g guardedUDP) ReadFrom(p []byte) (int, net.Addr, error)  { return g.udp.ReadFrom(p) }
func (g guardedUDP) WriteTo(p []byte, a net.Addr) (int, error) { return g.udp.WriteTo(p, a) }

// validRRs applies one section's validators; every failure is logged, so
// one probe's log names all that is wrong.
func validRRs(rrs []dns.RR, v *DNSRRValidator, section string, logger *slog.Logger) bool {
	ok := true
	if len(rrs) == 0 && (len(v.FailIfNotMatchesRegexp) > 0 || len(v.FailIfNoneMatchesRegexp) > 0) {
		logger.Error(section + ": no records, but fail_if_not_matches_regexp or fail_if_none_matches_regexp needs some")
		return false
	}
	texts := make([]string, len(rrs))
	for i, rr := range rrs {
		texts[i] = rr.String()
	}
	for _, re := range v.FailIfMatchesRegexp {
		for _, t := range texts {
			if re.MatchString(t) {
				logger.Error(section+": a record matched fail_if_matches_regexp", "regexp", re.String(), "rr", t)
				ok = false
				break
			}
		}
	}
	for _, re := range v.FailIfAllMatchRegexp {
		// As in blackbox, no records at all is "all match".
		if !slices.ContainsFunc(texts, func(t string) bool { return !re.MatchString(t) }) {
			logger.Error(section+": every record matched fail_if_all_match_regexp", "regexp", re.String())
			ok = false
		}
	}
	for _, re := range v.FailIfNotMatchesRegexp {
		for _, t := range texts {
			if !re.MatchString(t) {
				logger.Error(section+": a record did not match fail_if_not_matches_regexp", "regexp", re.String(), "rr", t)
				ok = false
				break
			}
		}
	}
	for _, re := range v.FailIfNoneMatchesRegexp {
		if !slices.ContainsFunc(texts, re.MatchString) {
			logger.Error(section+": no record matched fail_if_none_matches_regexp", "regexp", re.String())
			ok = false
		}
	}
	return ok
}
