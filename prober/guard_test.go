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

// Finish, the end of a probe whose prober returned, closes its
// connections and its sub-guards' at once, refuses later dials, and leaves
// nothing armed for the context's end.
func TestGuardFinish(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	g := NewGuard(ctx, config.Allowlist{})
	sub := g.Through(l.Addr().String())
	conns := make([]net.Conn, 0, 2)
	for _, d := range []*Guard{g, sub} {
		c, err := d.DialContext(ctx, "tcp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	g.Finish()
	for i, c := range conns {
		if _, err := c.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
			t.Errorf("connection %d after Finish: write %v, want net.ErrClosed", i, err)
		}
	}
	for i, d := range []*Guard{g, sub} {
		if c, err := d.DialContext(ctx, "tcp", l.Addr().String()); err == nil {
			c.Close()
			t.Errorf("guard %d dialled after Finish", i)
		}
		if d.stop() {
			t.Errorf("guard %d: the close for the context's end is still armed after Finish", i)
		}
	}
}

// A context bound to the probe ends when the probe does, with the probe's
// cause, and one released before that is forgotten; after Finish a new one
// starts ended.
func TestGuardBound(t *testing.T) {
	probe, cancel := context.WithCancelCause(context.Background())
	g := NewGuard(probe, config.Allowlist{})
	released, release := g.bound(context.Background())
	release()
	if n := len(g.bounds); n != 0 {
		t.Fatalf("%d bound contexts kept after release, want 0", n)
	}
	if !errors.Is(context.Cause(released), context.Canceled) {
		t.Fatalf("released context's cause %v, want context.Canceled", context.Cause(released))
	}
	live, stop := g.bound(context.Background())
	defer stop()
	why := errors.New("scrape cancelled")
	cancel(why)
	<-live.Done() // the guard's callback on the probe's end cancels it
	if !errors.Is(context.Cause(live), why) {
		t.Errorf("bound context's cause %v, want the probe's", context.Cause(live))
	}

	g = NewGuard(context.Background(), config.Allowlist{})
	g.Finish()
	late, stop2 := g.bound(context.Background())
	defer stop2()
	if !errors.Is(context.Cause(late), errProbeEnded) {
		t.Errorf("bound after Finish: cause %v, want errProbeEnded", context.Cause(late))
	}
}
