package prober

import (
	"bufio"
	"crypto/sha1"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// hostileUpgrade upgrades like ttyd (subprotocol tty), reads the init
// message and hands the session to then.
func hostileUpgrade(then func(c *websocket.Conn, r *http.Request)) http.HandlerFunc {
	up := websocket.Upgrader{Subprotocols: []string{"tty"}}
	return func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasSuffix(r.URL.Path, "/ws") {
			http.NotFound(w, r)
			return
		}
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		if _, _, err := c.ReadMessage(); err != nil {
			return
		}
		then(c, r)
	}
}

// rawUpgradeAnswer reads an upgrade request from c and answers a correct
// 101 with the tty subprotocol, by hand: no WebSocket library behind it.
func rawUpgradeAnswer(c net.Conn) bool {
	req, err := http.ReadRequest(bufio.NewReader(c))
	if err != nil {
		return false
	}
	sum := sha1.Sum([]byte(req.Header.Get("Sec-WebSocket-Key") + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	_, err = fmt.Fprintf(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Accept: %s\r\nSec-WebSocket-Protocol: tty\r\n\r\n", base64.StdEncoding.EncodeToString(sum[:]))
	return err == nil
}

func TestHostileTTYDWS(t *testing.T) {
	const timeout = 600 * time.Millisecond
	module := func(extra string) string {
		return fmt.Sprintf("prober: ttyd_ws\ntimeout: %v\nallowed_targets: [127.0.0.0/8]\nttyd_ws:\n  fetch_token: false\n%s", timeout, extra)
	}
	output := append([]byte{'0'}, strings.Repeat("flood ", 170)...)
	// gorilla sets the probe's deadline on the connection itself, which may
	// fire a hair before ctx is done: the log then says "i/o timeout".
	upgradeTimedOut := []string{"upgrade did not finish before the probe deadline", "i/o timeout"}

	for _, tc := range []struct {
		name    string
		module  string
		scheme  string
		serve   func(c net.Conn, stop <-chan struct{})
		handler http.HandlerFunc
		reasons []string
	}{{
		// Output frames as fast as the socket takes them; the expected
		// text never comes. The deadline must end the session.
		name: "frame flood after upgrade", module: module("  expect: never-there"),
		handler: hostileUpgrade(func(c *websocket.Conn, r *http.Request) {
			for {
				if err := c.WriteMessage(websocket.BinaryMessage, output); err != nil {
					return
				}
			}
		}),
		reasons: []string{"expected output not seen", "waiting for output matching expect"},
	}, {
		// One message that never ends, streamed as fragments: read_limit
		// must cut it, not memory.
		name: "endless message stopped by read_limit", module: module("  read_limit: 64KiB"),
		handler: hostileUpgrade(func(c *websocket.Conn, r *http.Request) {
			w, err := c.NextWriter(websocket.BinaryMessage)
			if err != nil {
				return
			}
			w.Write([]byte{'0'})
			endless(w, r.Context().Done(), output[1:])
		}),
		reasons: []string{"exceeds read_limit"},
	}, {
		// The same, trickled a fragment at a time so that it stays under
		// the default read_limit (1MiB) until the deadline.
		name: "endless slow message stopped by the deadline", module: module(""),
		handler: hostileUpgrade(func(c *websocket.Conn, r *http.Request) {
			w, err := c.NextWriter(websocket.BinaryMessage)
			if err != nil {
				return
			}
			tick := time.NewTicker(10 * time.Millisecond)
			defer tick.Stop()
			frag := []byte(strings.Repeat("s", 4096)) // gorilla flushes a fragment per full buffer
			for range tick.C {
				if _, err := w.Write(frag); err != nil {
					return
				}
			}
		}),
		reasons: []string{"deadline"},
	}, {
		// A correct 101 with tty, then nothing at all: no frame, no
		// answer to the close frame, not even a read.
		name: "silent after upgrade", module: module(""),
		serve: func(c net.Conn, stop <-chan struct{}) {
			if rawUpgradeAnswer(c) {
				<-stop
			}
		},
		reasons: []string{"nothing from the server before the probe deadline", "probe ended (deadline"},
	}, {
		name: "upgrade request never answered", module: module(""),
		serve: func(c net.Conn, stop <-chan struct{}) {
			readRequestHead(c)
			<-stop
		},
		reasons: upgradeTimedOut,
	}, {
		name: "upgrade answer trickles", module: module(""),
		serve: func(c net.Conn, stop <-chan struct{}) {
			readRequestHead(c)
			trickle(c, stop, "HTTP/1.1 101 Switching Protocols\r\nX-Slow: "+strings.Repeat("z", 64), 10*time.Millisecond)
		},
		reasons: upgradeTimedOut,
	}, {
		name: "wss: TLS handshake never completes", module: module(""), scheme: "https",
		serve:   func(c net.Conn, stop <-chan struct{}) { io.Copy(io.Discard, c) },
		reasons: upgradeTimedOut,
	}, {
		// The browser's first step, against a /token that never ends.
		name: "endless /token body", module: "prober: ttyd_ws\ntimeout: 600ms\nallowed_targets: [127.0.0.0/8]",
		handler: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"token": "`)
			endless(w, r.Context().Done(), []byte(strings.Repeat("t", 4096)))
		},
		reasons: []string{"exceeds body_size_limit"},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			target := hostileTarget(t, tc.scheme, tc.serve, tc.handler)
			r := runProbeDirect(t, probeTTYDWS, target, testModule(t, tc.module), Env{})
			assertBoundedFailure(t, r, timeout, tc.reasons...)
		})
	}
}

func TestHostileTTYDToken(t *testing.T) {
	const timeout = 500 * time.Millisecond
	module := fmt.Sprintf("prober: ttyd_token\ntimeout: %v\nallowed_targets: [127.0.0.0/8]\nttyd_token: {body_size_limit: 4KiB}", timeout)
	for _, tc := range []struct {
		name    string
		serve   func(c net.Conn, stop <-chan struct{})
		handler http.HandlerFunc
		reasons []string
	}{{
		name: "endless body",
		handler: func(w http.ResponseWriter, r *http.Request) {
			endless(w, r.Context().Done(), []byte(strings.Repeat("t", 4096)))
		},
		reasons: []string{"exceeds body_size_limit"},
	}, {
		name: "slow body",
		serve: func(c net.Conn, stop <-chan struct{}) {
			readRequestHead(c)
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n")
			trickle(c, stop, `{"token":"`, 10*time.Millisecond)
		},
		reasons: []string{"deadline exceeded"},
	}, {
		name: "slowloris headers",
		serve: func(c net.Conn, stop <-chan struct{}) {
			readRequestHead(c)
			trickle(c, stop, "HTTP/1.1 200 OK\r\nX-Slow: "+strings.Repeat("z", 64), 10*time.Millisecond)
		},
		reasons: []string{"deadline exceeded"},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			target := hostileTarget(t, "", tc.serve, tc.handler)
			r := runProbeDirect(t, probeTTYDToken, target, testModule(t, module), Env{})
			assertBoundedFailure(t, r, timeout, tc.reasons...)
		})
	}
}

// hostileTarget starts handler as an HTTP server, or serve as a raw one,
// both on 127.0.0.1 and closed when the test ends.
func hostileTarget(t *testing.T, scheme string, serve func(net.Conn, <-chan struct{}), handler http.HandlerFunc) string {
	t.Helper()
	if handler != nil {
		srv := httptest.NewServer(handler)
		t.Cleanup(srv.Close)
		return srv.URL
	}
	p := newHostilePeer(t, serve)
	if scheme == "" {
		scheme = "http"
	}
	return scheme + "://" + p.Addr()
}
