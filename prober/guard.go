package prober

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"

	"github.com/greybox-probe/greybox/config"
)

// Guard is a module's allowed_targets applied to the network: every
// address a probe resolves or dials passes through it. A host is resolved
// once per request; the checked addresses are the ones dialled, so a DNS
// answer cannot change between the check and the connection.
type Guard struct {
	allow    config.Allowlist
	resolver *net.Resolver
	dialer   net.Dialer

	mu     sync.Mutex
	pinned map[string][]netip.Addr
	// approved holds every address Resolve has let through, so a prober
	// that resolved a name and then dials its addresses directly (one
	// connection per DNS answer) is not refused for lacking the name.
	approved map[netip.Addr]bool
}

// NewGuard returns a guard for one probe request.
func NewGuard(allow config.Allowlist) *Guard {
	return &Guard{allow: allow, resolver: net.DefaultResolver, pinned: map[string][]netip.Addr{}, approved: map[netip.Addr]bool{}}
}

// Resolve returns the addresses host may be dialled at, looking it up at
// most once per request. Denials are *config.ForbiddenError.
func (g *Guard) Resolve(ctx context.Context, host string) ([]netip.Addr, error) {
	host = strings.ToLower(strings.Trim(host, "[]"))
	g.mu.Lock()
	addrs, ok := g.pinned[host]
	if ip, err := netip.ParseAddr(host); !ok && err == nil && g.approved[ip.Unmap()] {
		addrs, ok = []netip.Addr{ip.Unmap()}, true
	}
	g.mu.Unlock()
	if ok {
		return addrs, nil
	}
	addrs, err := g.allow.Resolve(ctx, g.resolver, host)
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

// DialContext dials address ("host:port") at an address Resolve allowed,
// trying each in turn like net.Dialer does. It fits http.Transport,
// websocket.Dialer and anything else that takes a dial function.
func (g *Guard) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		return nil, err
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return nil, fmt.Errorf("bad port in %q", address)
	}
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
			return c, nil
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
