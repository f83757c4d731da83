package prober

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/greybox-probe/greybox/config"
)

func TestGuard(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer srv.Close()
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	ctx := context.Background()

	byName, err := config.ParseAllowlist([]string{"localhost"})
	if err != nil {
		t.Fatal(err)
	}
	g := NewGuard(ctx, byName)
	// An IP the guard never approved is refused without dialling.
	if _, err := g.DialContext(ctx, "tcp", net.JoinHostPort("127.0.0.1", port)); !isForbidden(err) {
		t.Fatalf("dial of an unapproved IP: %v, want forbidden", err)
	}
	// Resolving the allowed name approves its addresses for direct dials
	// (DNS discovery dials each answer by address).
	addrs, err := g.Resolve(ctx, "localhost")
	if err != nil {
		t.Fatal(err)
	}
	var v4 bool
	for _, a := range addrs {
		v4 = v4 || a.Is4()
	}
	if !v4 {
		t.Skip("localhost has no IPv4 address here")
	}
	c, err := g.DialContext(ctx, "tcp", net.JoinHostPort("127.0.0.1", port))
	if err != nil {
		t.Fatalf("dial of an address the guard resolved: %v", err)
	}
	c.Close()

	// A network rule checks the address; a bad port never dials.
	cidr, _ := config.ParseAllowlist([]string{"10.0.0.0/8"})
	g = NewGuard(ctx, cidr)
	if _, err := g.DialContext(ctx, "tcp", srv.Listener.Addr().String()); !isForbidden(err) {
		t.Fatalf("dial outside the CIDR: %v, want forbidden", err)
	}
	if _, err := NewGuard(ctx, config.Allowlist{}).DialContext(ctx, "tcp", "127.0.0.1:99999"); err == nil {
		t.Fatal("bad port dialled")
	}
}

func isForbidden(err error) bool {
	var fe *config.ForbiddenError
	return errors.As(err, &fe)
}
