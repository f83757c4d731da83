package prober

import (
	"context"
	"net"
	"sync"
	"time"
)

// ttydKeep carries the connection of ttyd_ws's token request over to the
// upgrade, as a browser's page load and socket may share one: half the
// connections, handshakes and server-side accepts per probe (issue 13,
// goal 3). It applies to plain HTTP without a proxy only: a TLS session
// lives in the transport's tls.Conn, which the transport closes when it
// lets go, and through a proxy the connection is not the target's.
//
// net/http keeps no public way to take a connection back from a
// transport, so the token request dials through keep, which wraps the
// connection. take then stops the transport's reads on it (a read
// deadline in the past ends the idle read the transport keeps waiting
// on), waits until the transport has let go, and hands the connection,
// untouched below HTTP, to the websocket dialer. Whenever that cannot be
// done cleanly the upgrade dials a fresh connection, as it would without
// keep.
type ttydKeep struct {
	g     *Guard
	mu    sync.Mutex
	first *ttydKeptConn
	dials int
}

func (k *ttydKeep) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := k.g.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	kc := &ttydKeptConn{Conn: c, released: make(chan struct{})}
	k.mu.Lock()
	k.dials++
	if k.first == nil {
		k.first = kc
	}
	k.mu.Unlock()
	return kc, nil
}

// take returns the token request's connection for the upgrade, or nil.
// Call it once the token response has been read and its body closed.
func (k *ttydKeep) take(ctx context.Context) net.Conn {
	k.mu.Lock()
	kc, dials := k.first, k.dials
	k.mu.Unlock()
	// A redirect dialled more: the last answer came over another
	// connection, perhaps to another host.
	if kc == nil || dials != 1 {
		return nil
	}
	return kc.take(ctx)
}

// discard closes the token request's connection when it is not taken.
func (k *ttydKeep) discard() {
	k.mu.Lock()
	kc := k.first
	k.mu.Unlock()
	if kc != nil {
		_ = kc.Close()
	}
}

// ttydKeptConn is the token request's connection as the transport sees
// it: once taken, the transport's reads fail and its Close is a no-op.
type ttydKeptConn struct {
	net.Conn
	mu       sync.Mutex
	taken    bool
	closed   bool // by the transport, before take: not reusable
	reading  int  // the transport's reads in progress
	late     bool // a read returned data after take: the stream is not ours
	released chan struct{}
	once     sync.Once
}

func (c *ttydKeptConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	if c.taken {
		c.mu.Unlock()
		return 0, net.ErrClosed
	}
	c.reading++
	c.mu.Unlock()
	n, err := c.Conn.Read(p)
	c.mu.Lock()
	c.reading--
	if c.taken && n > 0 {
		c.late = true
	}
	idle := c.taken && c.reading == 0
	c.mu.Unlock()
	if idle {
		c.release()
	}
	return n, err
}

func (c *ttydKeptConn) Close() error {
	c.mu.Lock()
	if c.taken {
		idle := c.reading == 0
		c.mu.Unlock()
		if idle {
			c.release()
		}
		return nil
	}
	c.closed = true
	c.mu.Unlock()
	return c.Conn.Close()
}

func (c *ttydKeptConn) release() { c.once.Do(func() { close(c.released) }) }

func (c *ttydKeptConn) take(ctx context.Context) net.Conn {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.taken = true
	idle := c.reading == 0
	c.mu.Unlock()
	if idle {
		c.release()
	} else {
		// Wake the transport's idle read; it returns without data (the
		// server sends nothing unasked) and the transport lets go.
		_ = c.Conn.SetReadDeadline(time.Unix(1, 0))
	}
	select {
	case <-c.released:
	case <-ctx.Done():
		return nil
	}
	c.mu.Lock()
	late := c.late
	c.mu.Unlock()
	if late {
		_ = c.Conn.Close()
		return nil
	}
	if err := c.Conn.SetReadDeadline(time.Time{}); err != nil {
		return nil
	}
	return c.Conn
}
