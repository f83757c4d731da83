package prober

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/idna"

	"github.com/greybox-probe/greybox/config"
)

// Guard is a module's allowed_targets and a probe's deadline applied to the
// network. It is the one place both promises are kept:
//
//   - Every connection a probe opens is dialled by DialContext, which only
//     dials addresses Resolve checked; every request a probe sends passes
//     Destination first, which also checks a destination behind a proxy.
//   - Every connection it dialled is closed when the probe's context ends,
//     whoever asked for it and with whatever context (a library's own
//     request on context.Background, such as oauth2's token fetch, cannot
//     outlive the probe).
//
// A host is resolved once per probe; the checked addresses are the ones
// dialled, so a DNS answer cannot change between the check and the
// connection.
type Guard struct {
	allow    config.Allowlist
	resolver *net.Resolver
	dialer   net.Dialer
	probe    context.Context

	mu     sync.Mutex
	pinned map[string][]netip.Addr
	// approved holds every address Resolve has let through, so a prober
	// that resolved a name and then dials its addresses directly (one
	// connection per DNS answer) is not refused for lacking the name.
	approved  map[netip.Addr]bool
	conns     []*guardConn
	connected netip.Addr // the first connection's remote address (firstRemote)
	closed    bool
	lookups   time.Duration
	armNew    int64 // LimitHeaders in force: arm new connections with it
	// replica, when set, is the one address (host:port) every connection
	// is dialled to: see Through.
	replica string
	// stop cancels the close armed for the probe's end, and subs are the
	// guards Through made: see Finish.
	stop func() bool
	subs []*Guard
	// bounds are the contexts bound has cut short by the probe's end and
	// not yet released; ended: the probe has ended (see bound).
	bounds  []guardBound
	boundID uint64
	ended   bool
}

type guardBound struct {
	id     uint64
	cancel context.CancelCauseFunc
}

// NewGuard returns the guard for one probe, whose connections all close
// when probe ends.
func NewGuard(probe context.Context, allow config.Allowlist) *Guard {
	g := &Guard{allow: allow, resolver: net.DefaultResolver, probe: probe,
		pinned: map[string][]netip.Addr{}, approved: map[netip.Addr]bool{}}
	g.stop = context.AfterFunc(probe, func() {
		g.endBounds()
		time.AfterFunc(guardBackstop, g.closeAll)
	})
	return g
}

// Finish closes every connection of a probe whose prober has returned,
// this guard's and its sub-guards'. It is the common end of a probe: the
// close armed for the context's end then never runs: it costs two
// goroutines and a 25 ms timer per probe. Dials after Finish are refused.
func (g *Guard) Finish() {
	g.stop()
	g.endBounds()
	g.closeAll()
	g.mu.Lock()
	subs := g.subs
	g.subs = nil
	g.mu.Unlock()
	for _, s := range subs {
		s.Finish()
	}
}

// Through returns the guard for one sub-probe sent through one replica of
// a load balancer: every connection it dials goes to replica (host:port,
// checked against allowed_targets like any dial) whatever address the
// prober asked for. The prober's URL, Host header and TLS server name stay
// the target's, exactly as the replica receives them from its Service, and
// redirects and a WebSocket upgrade stay on that replica. The target's own
// host is not dialled; it is checked as a destination behind a proxy is,
// since the replica routes by it. Addresses this guard has approved
// (discovery's DNS answers) stay approved.
func (g *Guard) Through(replica string) *Guard {
	c := NewGuard(g.probe, g.allow)
	c.resolver = g.resolver
	c.replica = replica
	g.mu.Lock()
	for a := range g.approved {
		c.approved[a] = true
	}
	g.subs = append(g.subs, c)
	g.mu.Unlock()
	return c
}

// guardBackstop is how long after the probe ends its connections are
// closed. Code that honours the context has returned by then with its own,
// clearer error ("context deadline exceeded"); the close is for the code
// that does not.
const guardBackstop = 25 * time.Millisecond

func (g *Guard) closeAll() {
	g.mu.Lock()
	conns := g.conns
	g.conns, g.closed = nil, true
	g.mu.Unlock()
	for _, c := range conns {
		_ = c.Close()
	}
}

// bound returns ctx cut short by the probe's end, so a caller that passes
// a context without a deadline still cannot wait past the probe. The guard
// cancels it from the one callback it arms on the probe's context (or
// Finish), rather than each dial and lookup arming one of its own there.
func (g *Guard) bound(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancelCause(ctx)
	g.mu.Lock()
	if g.ended {
		g.mu.Unlock()
		cancel(g.endCause())
		return ctx, func() {}
	}
	g.boundID++
	id := g.boundID
	g.bounds = append(g.bounds, guardBound{id, cancel})
	g.mu.Unlock()
	return ctx, func() {
		g.mu.Lock()
		for i, b := range g.bounds {
			if b.id == id {
				g.bounds = slices.Delete(g.bounds, i, i+1)
				break
			}
		}
		g.mu.Unlock()
		cancel(nil)
	}
}

// endBounds cancels every bound context: the probe has ended.
func (g *Guard) endBounds() {
	g.mu.Lock()
	bounds := g.bounds
	g.bounds, g.ended = nil, true
	g.mu.Unlock()
	cause := g.endCause()
	for _, b := range bounds {
		b.cancel(cause)
	}
}

// endCause is why a bound context ends: the probe context's cause, or,
// when the probe returned before its context ended, that it did.
func (g *Guard) endCause() error {
	if err := context.Cause(g.probe); err != nil {
		return err
	}
	return errProbeEnded
}

var errProbeEnded = errors.New("probe ended")

// canonicalHost is the name as it is dialled and as a proxy receives it:
// lower case, no brackets or trailing dot, IDNA names in their ASCII form
// (http.Transport converts them the same way), so "ＥＸＡＭＰＬＥ。com" cannot
// pass as something the allowlist does not say.
func canonicalHost(host string) (string, error) {
	host = strings.TrimSuffix(strings.ToLower(strings.Trim(host, "[]")), ".")
	if host == "" {
		return "", errors.New("empty host")
	}
	if _, err := netip.ParseAddr(host); err == nil || isASCII(host) {
		return host, nil
	}
	ascii, err := idna.Lookup.ToASCII(host)
	if err != nil {
		return "", fmt.Errorf("host %q is not a valid DNS name: %v", oneLine(host), err)
	}
	return ascii, nil
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// Resolve returns the addresses host may be dialled at, looking it up at
// most once per probe. Denials are *config.ForbiddenError.
func (g *Guard) Resolve(ctx context.Context, host string) ([]netip.Addr, error) {
	host, err := canonicalHost(host)
	if err != nil {
		if g.allow.Empty() {
			return nil, err
		}
		return nil, &config.ForbiddenError{Reason: err.Error()}
	}
	g.mu.Lock()
	addrs, ok := g.pinned[host]
	if ip, err := netip.ParseAddr(host); !ok && err == nil && g.approved[ip.Unmap()] {
		addrs, ok = []netip.Addr{ip.Unmap()}, true
	}
	g.mu.Unlock()
	if ok {
		return addrs, nil
	}
	if ctx.Done() != g.probe.Done() { // not the probe's context, or a value on it
		var cancel context.CancelFunc
		ctx, cancel = g.bound(ctx)
		defer cancel()
	}
	start := time.Now()
	addrs, err = g.allow.Resolve(ctx, g.resolver, host)
	g.addLookup(start)
	if err != nil {
		return nil, err
	}
	g.mu.Lock()
	g.pinned[host] = addrs
	for _, a := range addrs {
		g.approved[a] = true
	}
	g.mu.Unlock()
	return addrs, nil
}

func (g *Guard) addLookup(start time.Time) {
	d := time.Since(start)
	g.mu.Lock()
	g.lookups += d
	g.mu.Unlock()
}

// LookupDuration is the time this probe spent resolving names.
func (g *Guard) LookupDuration() time.Duration {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.lookups
}

// ProxyFunc chooses a proxy for a request, as http.Transport.Proxy does;
// nil or a nil URL means a direct connection.
type ProxyFunc func(*http.Request) (*url.URL, error)

// Destination checks where req is going before anything is sent. A direct
// request's host is resolved and pinned (the dial then uses exactly those
// addresses). Through a proxy the dial reaches only the proxy, which
// DialContext checks; the destination behind it is checked here by name,
// and where it resolves here by every address it has (the proxy picks
// one), so a name that does not resolve here and is not allowed by name
// cannot be verified and is refused. A Host header other than the URL's is
// checked the same way through a proxy, which may route by it.
func (g *Guard) Destination(ctx context.Context, req *http.Request, proxy ProxyFunc) error {
	var via *url.URL
	if proxy != nil {
		var err error
		if via, err = proxy(req); err != nil {
			return fmt.Errorf("choosing a proxy: %w", err)
		}
	}
	through := ""
	switch {
	case g.replica != "":
		through = "replica " + g.replica
	case via == nil:
		_, err := g.Resolve(ctx, req.URL.Hostname())
		return err
	default:
		through = "proxy " + via.Host
	}
	if g.allow.Empty() {
		return nil
	}
	hosts := []string{req.URL.Hostname()}
	if req.Host != "" && req.Host != req.URL.Host {
		h := req.Host
		if hh, _, err := net.SplitHostPort(h); err == nil {
			h = hh
		}
		hosts = append(hosts, h)
	}
	for _, h := range hosts {
		if err := g.viaProxy(ctx, h, through); err != nil {
			return err
		}
	}
	return nil
}

// viaProxy checks a destination that is not dialled but named to what is
// dialled (through: "proxy <host>" or "replica <host:port>"), which routes by it.
func (g *Guard) viaProxy(ctx context.Context, host string, through string) error {
	host, err := canonicalHost(host)
	if err != nil {
		return &config.ForbiddenError{Reason: err.Error()}
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		if !g.allow.AllowsAddr(ip) {
			return &config.ForbiddenError{Reason: fmt.Sprintf("destination %s (through %s) is not in allowed_targets", ip, through)}
		}
		return nil
	}
	if g.allow.AllowsName(host) {
		return nil
	}
	ctx, cancel := g.bound(ctx)
	defer cancel()
	start := time.Now()
	addrs, err := g.resolver.LookupNetIP(ctx, "ip", host)
	g.addLookup(start)
	if err != nil {
		return &config.ForbiddenError{Reason: fmt.Sprintf(
			"destination %q (through %s) is not allowed by name and does not resolve here, so it cannot be checked against allowed_targets", host, through)}
	}
	for _, a := range addrs {
		if !g.allow.AllowsAddr(a) {
			return &config.ForbiddenError{Reason: fmt.Sprintf(
				"destination %q (through %s) resolves to %s, which is not in allowed_targets", host, through, a)}
		}
	}
	return nil
}

// Transport checks every request next sends, redirects included (an
// http.Client hands each hop to its Transport), with Destination.
func (g *Guard) Transport(next http.RoundTripper, proxy ProxyFunc) http.RoundTripper {
	return &guardTransport{g: g, next: next, proxy: proxy}
}

type guardTransport struct {
	g     *Guard
	next  http.RoundTripper
	proxy ProxyFunc
	// dial, when set, goes into the request's context for a module's
	// shared transport (dialFromRequest): in the one copy of the request
	// this transport makes anyway.
	dial dialFunc
}

func (t *guardTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if err := t.g.Destination(req.Context(), req, t.proxy); err != nil {
		if req.Body != nil {
			_ = req.Body.Close()
		}
		return nil, err
	}
	// Bound the wait for this response's headers on the connection it
	// gets. An HTTP/2 connection is shared by concurrent requests, so it
	// keeps the http2 package's own header list limit instead.
	var conn *guardConn
	trace := &httptrace.ClientTrace{GotConn: func(info httptrace.GotConnInfo) {
		if tc, ok := info.Conn.(*tls.Conn); ok && tc.ConnectionState().NegotiatedProtocol == "h2" {
			return
		}
		if conn = t.g.connFor(info.Conn); conn != nil {
			conn.arm(MaxResponseHeaderBytes + headerReadAhead)
		}
	}}
	ctx := httptrace.WithClientTrace(req.Context(), trace)
	if t.dial != nil {
		ctx = context.WithValue(ctx, probeDialKey{}, t.dial)
	}
	resp, err := t.next.RoundTrip(req.WithContext(ctx))
	if conn != nil {
		conn.disarm()
	}
	return resp, err
}

// CloseIdleConnections lets http.Client.CloseIdleConnections reach the
// transport underneath.
func (t *guardTransport) CloseIdleConnections() {
	if c, ok := t.next.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

// DialContext dials address ("host:port") at an address Resolve allowed,
// trying each in turn like net.Dialer does, and closes the connection when
// the probe ends. It fits http.Transport, websocket.Dialer and anything
// else that takes a dial function.
func (g *Guard) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	if g.replica != "" {
		address = g.replica
	}
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		return nil, err
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return nil, fmt.Errorf("bad port in %q", address)
	}
	ctx, cancel := g.bound(ctx)
	defer cancel()
	addrs, err := g.Resolve(ctx, host)
	if err != nil {
		return nil, err
	}
	var errs []error
	for _, a := range addrs {
		if network == "tcp4" && !a.Is4() || network == "tcp6" && !a.Is6() {
			continue
		}
		c, err := g.dialer.DialContext(ctx, network, net.JoinHostPort(a.String(), port))
		if err == nil {
			g.noteConnected(c.RemoteAddr())
			return g.track(c)
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	if len(errs) == 0 {
		return nil, fmt.Errorf("no %s address for %s", network, host)
	}
	return nil, errors.Join(errs...)
}

// firstRemote is the address of the first connection the probe made: the
// target's or its proxy's, never a resolver's DNS server, which the guard
// does not dial. (The http prober used to take it from an httptrace
// GotConn hook; with the guard's own GotConn that made httptrace compose
// the two by reflection, a tenth of a fast probe's overhead.)
func (g *Guard) firstRemote() netip.Addr {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.connected
}

// noteConnected records a connection's remote address, the first one
// kept; dialers that do not go through DialContext (QUIC) call it too.
func (g *Guard) noteConnected(ra net.Addr) {
	var ap netip.AddrPort
	switch a := ra.(type) {
	case nil:
		return
	case *net.TCPAddr:
		ap = a.AddrPort()
	case *net.UDPAddr:
		ap = a.AddrPort()
	default:
		var err error
		if ap, err = netip.ParseAddrPort(ra.String()); err != nil {
			return
		}
	}
	g.mu.Lock()
	if !g.connected.IsValid() {
		g.connected = ap.Addr().Unmap()
	}
	g.mu.Unlock()
}

func (g *Guard) track(c net.Conn) (net.Conn, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		_ = c.Close()
		if err := context.Cause(g.probe); err != nil {
			return nil, fmt.Errorf("%w: %w", errProbeEnded, err)
		}
		return nil, errProbeEnded
	}
	gc := &guardConn{Conn: c}
	gc.headerLeft.Store(-1)
	if g.armNew > 0 {
		gc.arm(g.armNew)
	}
	g.conns = append(g.conns, gc)
	return gc, nil
}

// MaxResponseHeaderBytes bounds what a probe reads while it waits for a
// response's headers (net/http's own default is 10 MiB, and gorilla's
// upgrade reads them without a bound): a hostile target cannot make each
// probe in flight hold megabytes of header lines.
const MaxResponseHeaderBytes = 64 << 10

// headerReadAhead is what a client's buffered reader may take of the body
// along with the headers.
const headerReadAhead = 64 << 10

var errHeadersTooLarge = fmt.Errorf("response headers larger than %d KiB", MaxResponseHeaderBytes>>10)

// guardConn is a connection the guard dialled. While armed (headerLeft
// >= 0) it lets through at most that many more bytes: armed for the wait
// for response headers, not for bodies, which each prober bounds itself.
type guardConn struct {
	net.Conn
	headerLeft atomic.Int64
}

func (c *guardConn) Read(p []byte) (int, error) {
	left := c.headerLeft.Load()
	if left == 0 {
		return 0, errHeadersTooLarge
	}
	if left > 0 && int64(len(p)) > left {
		p = p[:left]
	}
	n, err := c.Conn.Read(p)
	if left > 0 {
		c.headerLeft.Add(-int64(n))
	}
	return n, err
}

func (c *guardConn) arm(n int64) { c.headerLeft.Store(n) }
func (c *guardConn) disarm()     { c.headerLeft.Store(-1) }

// connFor finds the guard's connection under c, which a transport may
// have wrapped (TLS, connection tracking): they share the local address.
func (g *Guard) connFor(c net.Conn) *guardConn {
	if c == nil || c.LocalAddr() == nil {
		return nil
	}
	local := c.LocalAddr()
	g.mu.Lock()
	defer g.mu.Unlock()
	for i := len(g.conns) - 1; i >= 0; i-- {
		if la := g.conns[i].LocalAddr(); la != nil && sameAddr(la, local) {
			return g.conns[i]
		}
	}
	return nil
}

// sameAddr compares two addresses, TCP ones without formatting them.
func sameAddr(a, b net.Addr) bool {
	ta, ok1 := a.(*net.TCPAddr)
	tb, ok2 := b.(*net.TCPAddr)
	if ok1 && ok2 {
		return ta.Port == tb.Port && ta.IP.Equal(tb.IP) && ta.Zone == tb.Zone
	}
	return a.Network() == b.Network() && a.String() == b.String()
}

// LimitHeaders arms every connection the guard dials from now on, and
// those it has, to read at most limit bytes, until the returned function
// is called: for a handshake whose response has no other bound.
func (g *Guard) LimitHeaders(limit int64) (done func()) {
	g.mu.Lock()
	g.armNew = limit
	for _, c := range g.conns {
		c.arm(limit)
	}
	g.mu.Unlock()
	return func() {
		g.mu.Lock()
		g.armNew = 0
		for _, c := range g.conns {
			c.disarm()
		}
		g.mu.Unlock()
	}
}
