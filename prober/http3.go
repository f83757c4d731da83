package prober

// enable_http3 of the http prober: as in blackbox, the probe speaks HTTP/3
// only (an http:// target is asked for over https://, and TLS 1.3 is the
// minimum), and greybox's promises hold over QUIC too: every UDP socket is
// opened for an address the guard approved, closed when the probe ends.

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/netip"
	"slices"
	"strconv"
	"sync"

	pconfig "github.com/prometheus/common/config"
	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

// validateHTTP3 is blackbox's rule set for enable_http3 plus what greybox
// cannot send over QUIC. blackbox drops the client config's auth, proxy and
// headers silently when it speaks HTTP/3; here a module that sets them is
// refused at load instead of probing without them.
func (s *HTTPSettings) validateHTTP3() error {
	if !s.EnableHTTP3 {
		if slices.Contains(s.ValidHTTPVersions, "HTTP/3.0") {
			return errors.New("valid_http_versions: HTTP/3.0 needs enable_http3: true")
		}
		return nil
	}
	for _, v := range s.ValidHTTPVersions {
		if v != "HTTP/3.0" {
			return fmt.Errorf("valid_http_versions: %q with enable_http3: an HTTP/3 probe speaks only HTTP/3.0", v)
		}
	}
	c := s.HTTPClientConfig.HTTPClientConfig
	if c.EnableHTTP2 {
		return errors.New("enable_http3: enable_http2 must be set to false (as in blackbox: an HTTP/3 probe speaks only HTTP/3)")
	}
	for key, set := range map[string]bool{
		"proxy_url / proxy_from_environment": c.ProxyURL.URL != nil || c.ProxyFromEnvironment,
		"basic_auth":                         c.BasicAuth != nil,
		"authorization / bearer_token":       c.Authorization != nil || c.BearerToken != "" || c.BearerTokenFile != "",
		"oauth2":                             c.OAuth2 != nil,
		"http_headers":                       c.HTTPHeaders != nil && len(c.HTTPHeaders.Headers) > 0,
	} {
		if set {
			return fmt.Errorf("enable_http3: %s is not applied over HTTP/3; remove it or probe without enable_http3", key)
		}
	}
	return nil
}

// useHTTP3 makes client speak HTTP/3 through the guard and returns what
// closes its QUIC connections and sockets, to call when the probe is done
// with the response. client keeps its redirect policy.
func (s *HTTPSettings) useHTTP3(ctx context.Context, client *http.Client, env Env) (func(), error) {
	tlsCfg, err := pconfig.NewTLSConfigWithContext(ctx, &s.HTTPClientConfig.TLSConfig)
	if err != nil {
		return nil, err
	}
	if tlsCfg.MinVersion < tls.VersionTLS13 {
		tlsCfg.MinVersion = tls.VersionTLS13 // QUIC's own minimum
	}
	d := &http3Dialer{g: env.Guard, s: s}
	h3 := &http3.Transport{
		TLSClientConfig:        tlsCfg,
		QUICConfig:             &quic.Config{},
		Dial:                   d.dial,
		MaxResponseHeaderBytes: MaxResponseHeaderBytes,
		// As the other transports: compression is the module's choice,
		// decoded by the probe.
		DisableCompression: true,
	}
	client.Transport = env.Guard.Transport(pconfig.NewUserAgentRoundTripper(UserAgent, h3), nil)
	return func() {
		_ = h3.Close()
		d.close()
	}, nil
}

// http3Dialer opens one probe's QUIC connections, each on a UDP socket of
// its own, to an address the guard resolved and approved.
type http3Dialer struct {
	g    *Guard
	s    *HTTPSettings
	mu   sync.Mutex
	open []*quic.Transport
}

func (d *http3Dialer) dial(ctx context.Context, addr string, tlsCfg *tls.Config, qcfg *quic.Config) (*quic.Conn, error) {
	if d.g.replica != "" {
		addr = d.g.replica
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	if err := checkPort(port); err != nil {
		return nil, err
	}
	ctx, cancel := d.g.bound(ctx)
	defer cancel()
	addrs, err := d.g.Resolve(ctx, host)
	if err != nil {
		return nil, err
	}
	if d.s.selectAddr {
		// The address chooseAddr picked for the target (the guard answers
		// with the same list), and for another host the same rule.
		if src := d.s.source; src.IsValid() {
			addrs = slices.DeleteFunc(slices.Clone(addrs), func(a netip.Addr) bool { return a.Is4() != src.Is4() })
		}
		a, err := pickAddr(host, addrs, d.s.ipProtocol)
		if err != nil {
			return nil, err
		}
		addrs = []netip.Addr{a}
	}
	p, _ := strconv.ParseUint(port, 10, 16)
	var errs []error
	for _, a := range addrs {
		conn, err := d.dialAddr(ctx, netip.AddrPortFrom(a, uint16(p)), tlsCfg, qcfg)
		if err == nil {
			return conn, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	if len(errs) == 0 {
		return nil, fmt.Errorf("no address for %s", host)
	}
	return nil, errors.Join(errs...)
}

func (d *http3Dialer) dialAddr(ctx context.Context, to netip.AddrPort, tlsCfg *tls.Config, qcfg *quic.Config) (*quic.Conn, error) {
	network := "udp6"
	if to.Addr().Is4() {
		network = "udp4"
	}
	var local *net.UDPAddr
	if d.s.source.IsValid() {
		local = net.UDPAddrFromAddrPort(netip.AddrPortFrom(d.s.source, 0))
	}
	pc, err := net.ListenUDP(network, local)
	if err != nil {
		return nil, err
	}
	// Tracked like every connection the guard dials: closed when the
	// probe ends, whatever quic-go does with it.
	if _, err := d.g.track(pc); err != nil {
		return nil, err
	}
	tr := &quic.Transport{Conn: pc}
	d.mu.Lock()
	d.open = append(d.open, tr)
	d.mu.Unlock()
	// The phases http3's own dial reports: a QUIC handshake is the
	// connect and the TLS handshake at once.
	trace := httptrace.ContextClientTrace(ctx)
	if trace != nil && trace.ConnectStart != nil {
		trace.ConnectStart("udp", to.String())
	}
	if trace != nil && trace.TLSHandshakeStart != nil {
		trace.TLSHandshakeStart()
	}
	conn, err := tr.Dial(ctx, net.UDPAddrFromAddrPort(to), tlsCfg, qcfg)
	var state tls.ConnectionState
	if conn != nil {
		state = conn.ConnectionState().TLS
		d.g.noteConnected(conn.RemoteAddr())
	}
	if trace != nil && trace.TLSHandshakeDone != nil {
		trace.TLSHandshakeDone(state, err)
	}
	if trace != nil && trace.ConnectDone != nil {
		trace.ConnectDone("udp", to.String(), err)
	}
	return conn, err
}

// close ends every QUIC transport and closes its socket.
func (d *http3Dialer) close() {
	d.mu.Lock()
	open := d.open
	d.open = nil
	d.mu.Unlock()
	for _, tr := range open {
		_ = tr.Close()
		_ = tr.Conn.Close()
	}
}
