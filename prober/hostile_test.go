package prober

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// Hostile targets: peers that stall, trickle, flood or never finish a
// handshake. Each probe must fail within its deadline plus generous slack
// (this asserts "bounded", not speed) and its log must say why, because
// that log is what an operator reads when the alert fires.

const hostileSlack = 5 * time.Second

// hostilePeer is a raw TCP server on 127.0.0.1 whose every connection is
// handed to serve. serve must return once stop is closed or the connection
// fails; Close closes the listener and every connection and waits for all
// of them, so no goroutine outlives the test.
type hostilePeer struct {
	l     net.Listener
	stop  chan struct{}
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns map[net.Conn]bool
	once  sync.Once
}

func newHostilePeer(t *testing.T, serve func(c net.Conn, stop <-chan struct{})) *hostilePeer {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &hostilePeer{l: l, stop: make(chan struct{}), conns: map[net.Conn]bool{}}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			p.conns[c] = true
			p.mu.Unlock()
			p.wg.Add(1)
			go func() {
				defer p.wg.Done()
				defer c.Close()
				serve(c, p.stop)
			}()
		}
	}()
	t.Cleanup(p.Close)
	return p
}

func (p *hostilePeer) Addr() string { return p.l.Addr().String() }

func (p *hostilePeer) Close() {
	p.once.Do(func() {
		close(p.stop)
		p.l.Close()
		p.mu.Lock()
		for c := range p.conns {
			c.Close()
		}
		p.mu.Unlock()
	})
	p.wg.Wait()
}

// readRequestHead consumes an HTTP request head so the client's write
// completes; what it says does not matter here.
func readRequestHead(c net.Conn) {
	br := bufio.NewReader(c)
	for {
		line, err := br.ReadString('\n')
		if err != nil || line == "\r\n" {
			return
		}
	}
}

// trickle writes s one byte per tick, forever (repeating s), until stop.
func trickle(c net.Conn, stop <-chan struct{}, s string, tick time.Duration) {
	t := time.NewTicker(tick)
	defer t.Stop()
	for i := 0; ; i++ {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		if _, err := c.Write([]byte{s[i%len(s)]}); err != nil {
			return
		}
	}
}

// endless writes chunk until the connection fails or stop closes.
func endless(w io.Writer, stop <-chan struct{}, chunk []byte) {
	for {
		select {
		case <-stop:
			return
		default:
		}
		if _, err := w.Write(chunk); err != nil {
			return
		}
	}
}

func assertBoundedFailure(t *testing.T, r probeResult, timeout time.Duration, reasons ...string) {
	t.Helper()
	if r.ok {
		t.Fatalf("hostile target reported success:\n%s", r.logs)
	}
	if r.elapsed > timeout+hostileSlack {
		t.Errorf("probe took %v with a %v budget", r.elapsed, timeout)
	}
	for _, reason := range reasons {
		if strings.Contains(r.logs, reason) {
			return
		}
	}
	t.Errorf("log names none of %q:\n%s", reasons, r.logs)
}

func TestHostileHTTP(t *testing.T) {
	const timeout = 500 * time.Millisecond
	module := func(extra string) string {
		return fmt.Sprintf("prober: http\ntimeout: %v\nallowed_targets: [127.0.0.0/8]\n%s", timeout, extra)
	}
	bigChunk := []byte(strings.Repeat("greybox ", 4096))

	for _, tc := range []struct {
		name    string
		module  string
		scheme  string
		serve   func(c net.Conn, stop <-chan struct{})
		handler http.HandlerFunc
		reasons []string
	}{{
		// Slowloris: the status line and headers one byte at a time,
		// never finishing.
		name: "slowloris headers", module: module(""),
		serve: func(c net.Conn, stop <-chan struct{}) {
			readRequestHead(c)
			trickle(c, stop, "HTTP/1.1 200 OK\r\nX-Slow: "+strings.Repeat("z", 64), 10*time.Millisecond)
		},
		reasons: []string{"deadline exceeded"},
	}, {
		// Headers as fast as the socket takes them, never ending.
		name: "endless headers", module: module(""),
		serve: func(c net.Conn, stop <-chan struct{}) {
			readRequestHead(c)
			io.WriteString(c, "HTTP/1.1 200 OK\r\n")
			endless(c, stop, []byte("X-Flood: "+strings.Repeat("f", 1000)+"\r\n"))
		},
		// The guard stops the headers at MaxResponseHeaderBytes, long before
		// net/http's own 10 MiB or the deadline.
		reasons: []string{"response headers larger than 64 KiB"},
	}, {
		name: "silent after accept", module: module(""),
		serve:   func(c net.Conn, stop <-chan struct{}) { <-stop },
		reasons: []string{"deadline exceeded"},
	}, {
		// Accepts TCP and never says a TLS word back.
		name: "TLS handshake never completes", module: module(""), scheme: "https",
		serve: func(c net.Conn, stop <-chan struct{}) {
			io.Copy(io.Discard, c) // swallow the ClientHello, answer nothing
		},
		reasons: []string{"deadline exceeded", "TLS handshake timeout"},
	}, {
		// A status line, then a body trickling a byte at a time.
		name: "slow body", module: module(""),
		serve: func(c net.Conn, stop <-chan struct{}) {
			readRequestHead(c)
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n")
			trickle(c, stop, "x", 10*time.Millisecond)
		},
		reasons: []string{"deadline exceeded"},
	}, {
		name: "endless body stopped by body_size_limit", module: module("http: {body_size_limit: 64KiB}"),
		handler: func(w http.ResponseWriter, r *http.Request) { endless(w, r.Context().Done(), bigChunk) },
		reasons: []string{"body larger than body_size_limit"},
	}, {
		// With body regexps the body is held in memory: the limit is
		// what bounds that memory.
		name:    "endless body with regexps stopped by body_size_limit",
		module:  module("http:\n  body_size_limit: 64KiB\n  fail_if_body_not_matches_regexp: [never-there]"),
		handler: func(w http.ResponseWriter, r *http.Request) { endless(w, r.Context().Done(), bigChunk) },
		reasons: []string{"body larger than body_size_limit"},
	}, {
		name: "endless body stopped by the deadline", module: module("http: {body_size_limit: 100GiB}"),
		handler: func(w http.ResponseWriter, r *http.Request) { endless(w, r.Context().Done(), bigChunk) },
		reasons: []string{"deadline exceeded"},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			var target string
			if tc.handler != nil {
				srv := httptest.NewServer(tc.handler)
				defer srv.Close()
				target = srv.URL + "/"
			} else {
				p := newHostilePeer(t, tc.serve)
				defer p.Close()
				scheme := tc.scheme
				if scheme == "" {
					scheme = "http"
				}
				target = scheme + "://" + p.Addr() + "/"
			}
			r := runProbeDirect(t, ProbeHTTP, target, testModule(t, tc.module), Env{})
			assertBoundedFailure(t, r, timeout, tc.reasons...)
		})
	}
}

// A TLS handshake that never completes fails within the deadline (above),
// but neither the log nor probe_http_duration_seconds{phase="tls"} says the
// probe was stuck in the handshake: the log reads only "context deadline
// exceeded", the same as a server that never answers the request.
func TestHostileHTTPNamesTheStalledPhase(t *testing.T) {
	p := newHostilePeer(t, func(c net.Conn, stop <-chan struct{}) { io.Copy(io.Discard, c) })
	defer p.Close()
	m := testModule(t, "prober: http\ntimeout: 300ms\nallowed_targets: [127.0.0.0/8]")
	r := runProbeDirect(t, ProbeHTTP, "https://"+p.Addr()+"/", m, Env{})
	assertBoundedFailure(t, r, 300*time.Millisecond, "tls", "TLS")
	if !strings.Contains(strings.ToLower(r.logs), "tls") {
		t.Errorf("log does not name the TLS handshake:\n%s", r.logs)
	}
	if v, _ := metricValue(t, r.reg, "probe_http_duration_seconds", map[string]string{"phase": "tls"}); v <= 0 {
		t.Errorf("phase tls = %v; the stalled handshake's time is not accounted", v)
	}
}

// What an operator sees: the same slowloris target through /probe with
// debug=true answers in time, says probe_success 0 and names the reason.
func TestHostileHTTPThroughHandler(t *testing.T) {
	p := newHostilePeer(t, func(c net.Conn, stop <-chan struct{}) {
		readRequestHead(c)
		trickle(c, stop, "HTTP/1.1 200 OK\r\nX-Slow: "+strings.Repeat("z", 64), 10*time.Millisecond)
	})
	defer p.Close()
	h, _, hist := newTestHandler(t, "modules:\n  slow:\n    prober: http\n    timeout: 400ms\n    allowed_targets: [127.0.0.0/8]\n", 10)
	target := "http://" + p.Addr() + "/"
	start := time.Now()
	rec := get(h, "/probe?debug=true&module=slow&target="+target, nil)
	if elapsed := time.Since(start); elapsed > 400*time.Millisecond+hostileSlack {
		t.Errorf("answer took %v with a 400ms budget", elapsed)
	}
	body := rec.Body.String()
	if rec.Code != http.StatusOK || !strings.Contains(body, "probe_success 0") || !strings.Contains(body, "deadline exceeded") {
		t.Fatalf("%d:\n%s", rec.Code, body)
	}
	if _, ok := hist.Newest("slow", target); !ok {
		t.Error("the failed probe is not in the history")
	}
}
