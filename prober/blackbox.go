package prober

// What the blackbox_exporter-compatible probers (tcp, dns, icmp, grpc,
// unix, websocket) share: blackbox's address selection and its metrics, its
// TLS metric set, and a dial that keeps the guard's promises while binding a
// source address. Kept here rather than copied into each prober so they
// cannot drift apart on names blackbox users alert on.

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	pconfig "github.com/prometheus/common/config"

	"github.com/greybox-probe/greybox/config"
)

// IPProtocol is blackbox's address selection: preferred_ip_protocol
// (default ip6, as in blackbox) and ip_protocol_fallback (default true).
type IPProtocol struct {
	PreferredIPProtocol string `yaml:"preferred_ip_protocol,omitempty"`
	IPProtocolFallback  bool   `yaml:"ip_protocol_fallback"`
}

func defaultIPProtocol() IPProtocol {
	return IPProtocol{PreferredIPProtocol: "ip6", IPProtocolFallback: true}
}

func (p *IPProtocol) validate() error {
	switch p.PreferredIPProtocol {
	case "":
		p.PreferredIPProtocol = "ip6"
	case "ip4", "ip6":
	default:
		// blackbox treats anything but "ip6" as ip4; a typo should not
		// silently pick a family.
		return fmt.Errorf("preferred_ip_protocol %q must be ip4 or ip6", p.PreferredIPProtocol)
	}
	return nil
}

// parseSourceIP validates source_ip_address at load.
func parseSourceIP(s string) (netip.Addr, error) {
	if s == "" {
		return netip.Addr{}, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("source_ip_address %q is not an IP address", s)
	}
	return a.Unmap(), nil
}

// chooseAddr resolves host through the guard (the allowlist applies, and the
// answer is the one dialled) and picks one address the way blackbox does,
// registering probe_ip_protocol, probe_ip_addr_hash and
// probe_dns_lookup_time_seconds.
func chooseAddr(ctx context.Context, g *Guard, host string, p IPProtocol, reg *Metrics, logger *slog.Logger) (netip.Addr, error) {
	m := newAddrMetrics(reg)
	addrs, err := g.Resolve(ctx, host)
	m.lookup.Set(g.LookupDuration().Seconds())
	if err != nil {
		return netip.Addr{}, fmt.Errorf("resolving %q: %w", host, err)
	}
	chosen, err := pickAddr(host, addrs, p)
	if err != nil {
		return netip.Addr{}, err
	}
	m.set(chosen)
	logger.Debug("resolved target address", "host", host, "ip", chosen.String())
	return chosen, nil
}

// pickAddr is blackbox's choice among host's addresses: the first of the
// preferred family, else with ip_protocol_fallback the first of the other.
func pickAddr(host string, addrs []netip.Addr, p IPProtocol) (netip.Addr, error) {
	want6 := p.PreferredIPProtocol != "ip4"
	var chosen, fallback netip.Addr
	for _, a := range addrs {
		if a.Is6() == want6 {
			chosen = a
			break
		}
		if !fallback.IsValid() {
			fallback = a
		}
	}
	if !chosen.IsValid() {
		if !p.IPProtocolFallback || !fallback.IsValid() {
			return netip.Addr{}, fmt.Errorf("%q has no %s address (addresses %v, ip_protocol_fallback %t)", host, p.PreferredIPProtocol, addrs, p.IPProtocolFallback)
		}
		chosen = fallback
	}
	return chosen, nil
}

// addrMetrics are blackbox's address metrics; every prober that reports
// them registers them here, so names and meanings cannot drift apart.
type addrMetrics struct{ lookup, proto, hash prometheus.Gauge }

func newAddrMetrics(reg *Metrics) addrMetrics {
	return addrMetrics{
		lookup: gauge(reg, "probe_dns_lookup_time_seconds", "Time the probe spent resolving the target, in seconds."),
		proto:  gauge(reg, "probe_ip_protocol", "IP protocol of the address probed: 4 or 6."),
		hash:   gauge(reg, "probe_ip_addr_hash", "FNV-32a hash of the address probed: a change means the target moved."),
	}
}

// set records the address probed.
func (m addrMetrics) set(a netip.Addr) {
	if a.Is4() {
		m.proto.Set(4)
	} else {
		m.proto.Set(6)
	}
	m.hash.Set(ipHash(a))
}

// resolveTarget is chooseAddr for the probers that time their phases: the
// guard's lookups are the resolve phase whether or not one succeeded, and a
// failure is the probe's reason.
func resolveTarget(ctx context.Context, g *Guard, host string, p IPProtocol, reg *Metrics, logger *slog.Logger, phases *gaugeFamily, what string) (netip.Addr, bool) {
	addr, err := chooseAddr(ctx, g, host, p, reg, logger)
	phases.WithLabelValues("resolve").Set(g.LookupDuration().Seconds())
	if err != nil {
		logger.Error("resolving the "+what+" failed", "err", err)
		return netip.Addr{}, false
	}
	return addr, true
}

// ipHash is blackbox's: FNV-32a over the 4- or 16-byte form, so the values
// match across both exporters.
func ipHash(a netip.Addr) float64 {
	h := fnv.New32a()
	b := a.AsSlice()
	h.Write(b)
	return float64(h.Sum32())
}

// dialAddr dials an address chooseAddr returned, from source if set. It
// goes through the guard like every other dial: the address must be one the
// guard approved, and the connection is closed when the probe ends.
func dialAddr(ctx context.Context, g *Guard, network string, addr netip.Addr, port string, source netip.Addr) (net.Conn, error) {
	if !source.IsValid() {
		return g.DialContext(ctx, network, net.JoinHostPort(addr.String(), port))
	}
	if _, err := g.Resolve(ctx, addr.String()); err != nil {
		return nil, err
	}
	ctx, cancel := g.bound(ctx)
	defer cancel()
	d := net.Dialer{}
	switch {
	case strings.HasPrefix(network, "udp"):
		d.LocalAddr = net.UDPAddrFromAddrPort(netip.AddrPortFrom(source, 0))
	default:
		d.LocalAddr = net.TCPAddrFromAddrPort(netip.AddrPortFrom(source, 0))
	}
	c, err := d.DialContext(ctx, network, net.JoinHostPort(addr.String(), port))
	if err != nil {
		return nil, err
	}
	return g.track(c)
}

// splitHostPortTarget parses a "host:port" target (tcp, grpc); an IPv6
// address must be bracketed.
func splitHostPortTarget(target string) (host, port string, err error) {
	host, port, err = net.SplitHostPort(target)
	if err != nil {
		return "", "", &TargetError{Reason: fmt.Sprintf("target %q must be host:port: %v", oneLine(target), err)}
	}
	if badHost(host) {
		return "", "", &TargetError{Reason: fmt.Sprintf("target %q has no usable host", oneLine(target))}
	}
	if err := checkPort(port); err != nil {
		return "", "", &TargetError{Reason: fmt.Sprintf("target %q: %v", oneLine(target), err)}
	}
	return host, port, nil
}

// badHost: empty, or with characters no host name or address has (a
// path, credentials, spaces, control bytes).
func badHost(host string) bool {
	return host == "" || strings.ContainsAny(host, "/?#@[] ") || strings.ContainsFunc(host, func(r rune) bool { return r < ' ' || r == 0x7f })
}

func checkPort(port string) error {
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 || strconv.Itoa(n) != port {
		return fmt.Errorf("port %q is not a number from 1 to 65535", oneLine(port))
	}
	return nil
}

// checkHost runs a target's host through the allowlist before the probe:
// a denial is a 403; a lookup failure is the probe's to report.
func checkHost(ctx context.Context, m config.Module, g *Guard, host string) error {
	if m.AllowedTargets.Empty() {
		return nil
	}
	_, err := g.Resolve(ctx, host)
	return forbiddenOnly(err)
}

// TLSFiles holds a prober's tls_config the way the config loader checks
// files: it exposes it as an HTTP client config, so relative paths are
// resolved against the config file's directory and every file must exist
// at load, as for http_client_config.
type TLSFiles struct {
	client config.HTTPClientConfig
}

func (t *TLSFiles) set(c pconfig.TLSConfig) error {
	if err := c.Validate(); err != nil {
		return fmt.Errorf("tls_config: %w", err)
	}
	t.client = config.HTTPClientConfig{}
	t.client.TLSConfig = c
	return nil
}

// HTTPClient is what the config loader resolves and checks files in.
func (t *TLSFiles) HTTPClient() *config.HTTPClientConfig { return &t.client }

// tlsConfig builds the client TLS config; serverName is used when the
// module does not set server_name.
func (t *TLSFiles) tlsConfig(ctx context.Context, serverName string) (*tls.Config, error) {
	c, err := pconfig.NewTLSConfigWithContext(ctx, &t.client.TLSConfig)
	if err != nil {
		return nil, err
	}
	if c.ServerName == "" {
		c.ServerName = strings.Trim(serverName, "[]")
	}
	return c, nil
}

// tlsMetrics is blackbox's TLS metric set, registered once per probe even
// when a probe handshakes twice (a second STARTTLS would make blackbox
// register the same collectors again and panic).
type tlsMetrics struct {
	reg                 *Metrics
	registered          bool
	earliest, lastChain prometheus.Gauge
	info, version       *gaugeFamily
	cipher              *gaugeFamily
}

func (m *tlsMetrics) record(cs tls.ConnectionState) {
	if !m.registered {
		m.registered = true
		m.earliest = gauge(m.reg, "probe_ssl_earliest_cert_expiry", "Earliest expiry of the presented certificate chain, as a Unix time.")
		m.info = newGaugeVec("probe_ssl_last_chain_info", "The leaf certificate: fingerprint, subject, issuer, SANs, serial.", "fingerprint_sha256", "subject", "issuer", "subjectalternative", "serialnumber")
		m.version = newGaugeVec("probe_tls_version_info", "The TLS version negotiated.", "version")
		m.cipher = newGaugeVec("probe_tls_cipher_info", "The TLS cipher suite negotiated.", "cipher")
		m.reg.MustRegister(m.info, m.version, m.cipher)
	}
	m.info.Reset()
	m.version.Reset()
	m.cipher.Reset()
	if exp := earliestExpiry(&cs); !exp.IsZero() {
		m.earliest.Set(float64(exp.Unix()))
	}
	if last := lastChainExpiry(&cs); !last.IsZero() {
		// Only verified chains have an expiry: with insecure_skip_verify
		// blackbox reports year 1 (-62135596800); greybox leaves it out.
		if m.lastChain == nil {
			m.lastChain = gauge(m.reg, "probe_ssl_last_chain_expiry_timestamp_seconds", "Expiry of the verified chain that expires last, as a Unix time.")
		}
		m.lastChain.Set(float64(last.Unix()))
	}
	if len(cs.PeerCertificates) > 0 {
		leaf := cs.PeerCertificates[0]
		fp := sha256.Sum256(leaf.Raw)
		m.info.WithLabelValues(hex.EncodeToString(fp[:]), leaf.Subject.String(), leaf.Issuer.String(),
			strings.Join(leaf.DNSNames, ","), fmt.Sprintf("%x", leaf.SerialNumber.Bytes())).Set(1)
	}
	m.version.WithLabelValues(tlsVersionName(cs.Version)).Set(1)
	m.cipher.WithLabelValues(tls.CipherSuiteName(cs.CipherSuite)).Set(1)
}

// lastChainExpiry: of all verified chains, the one whose earliest expiry
// is latest — when the last path to trust runs out.
func lastChainExpiry(cs *tls.ConnectionState) time.Time {
	var last time.Time
	for _, chain := range cs.VerifiedChains {
		var earliest time.Time
		for _, c := range chain {
			if earliest.IsZero() || c.NotAfter.Before(earliest) {
				earliest = c.NotAfter
			}
		}
		if earliest.After(last) {
			last = earliest
		}
	}
	return last
}

// tlsVersionName uses blackbox's label values.
func tlsVersionName(v uint16) string {
	switch v {
	case tls.VersionTLS10:
		return "TLS 1.0"
	case tls.VersionTLS11:
		return "TLS 1.1"
	case tls.VersionTLS12:
		return "TLS 1.2"
	case tls.VersionTLS13:
		return "TLS 1.3"
	}
	return "unknown"
}

// isTimeout reports whether err is the probe running out of time, for a
// log line that says so rather than quoting an i/o error.
func isTimeout(ctx context.Context, err error) bool {
	var ne net.Error
	return ctx.Err() != nil || errors.As(err, &ne) && ne.Timeout() || errors.Is(err, context.DeadlineExceeded)
}

// ClientConfigKey: the files are under the prober's own tls_config.
func (t *TLSFiles) ClientConfigKey() string { return "" }
