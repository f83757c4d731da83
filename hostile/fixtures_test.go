// Package hostile tries greybox as an attacker and as a faulty environment
// would: second hops that try to slip past allowed_targets, peers and
// libraries that never answer, requests sized to exhaust memory, secrets
// looking for a way out, and edge values. Every test drives the real
// server (server.New behind an httptest server on 127.0.0.1) the way a
// caller of /probe does, and every peer listens on 127.0.0.1 only; the
// "denied" addresses are other loopback addresses (127.0.0.2) or names
// under .invalid, so nothing ever leaves the machine.
package hostile

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.uber.org/goleak"

	"github.com/greybox-probe/greybox/config"
	"github.com/greybox-probe/greybox/internal/syncbuf"
	"github.com/greybox-probe/greybox/server"
)

// Every hostile case ends with no goroutine left behind.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// greybox is one probe server under test and its process log.
type greybox struct {
	srv  *server.Server
	http *httptest.Server
	log  *syncBuffer
	reg  *prometheus.Registry
}

type gbOptions struct {
	maxInFlight   int
	historyBytes  int64
	maxBodyMemory int64
	// discardLog drops the process log instead of keeping it for asserts
	// (a memory measurement must not count the test's own buffer).
	discardLog bool
}

func newGreybox(t *testing.T, yml string, o gbOptions) *greybox {
	t.Helper()
	cfg, err := config.Parse([]byte(yml), "hostile.yml")
	if err != nil {
		t.Fatalf("config: %v\n%s", err, yml)
	}
	logs := &syncBuffer{}
	var w io.Writer = logs
	if o.discardLog {
		w = io.Discard
	}
	reg := prometheus.NewRegistry()
	srv := server.New(server.Options{
		Config: cfg, Logger: slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Registry: reg, HistorySize: 100, HistoryBytes: o.historyBytes,
		MaxInFlight: o.maxInFlight, MaxBodyMemory: o.maxBodyMemory, Resolver: offline,
	})
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)
	return &greybox{srv: srv, http: hs, log: logs, reg: reg}
}

// get fetches a greybox path and returns status and body.
func (g *greybox) get(t *testing.T, path string, header ...string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, g.http.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := g.http.Client().Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (g *greybox) probe(t *testing.T, module, target string, header ...string) (int, string) {
	t.Helper()
	return g.get(t, "/probe?"+url.Values{"module": {module}, "target": {target}}.Encode(), header...)
}

func (g *greybox) debug(t *testing.T, module, target string) string {
	t.Helper()
	_, body := g.get(t, "/probe?"+url.Values{"module": {module}, "target": {target}, "debug": {"true"}}.Encode())
	return body
}

// sample returns the value of a series in an exposition-format answer.
func sample(t *testing.T, body, name string, labels ...string) (float64, bool) {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("parsing answer: %v\n%s", err, body)
	}
	mf, ok := fams[name]
	if !ok {
		return 0, false
	}
next:
	for _, m := range mf.GetMetric() {
		have := map[string]string{}
		for _, lp := range m.GetLabel() {
			have[lp.GetName()] = lp.GetValue()
		}
		for i := 0; i+1 < len(labels); i += 2 {
			if have[labels[i]] != labels[i+1] {
				continue next
			}
		}
		switch {
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		}
	}
	return 0, false
}

func mustSample(t *testing.T, body, name string, labels ...string) float64 {
	t.Helper()
	v, ok := sample(t, body, name, labels...)
	if !ok {
		t.Fatalf("no %s%v in\n%s", name, labels, body)
	}
	return v
}

// ownMetric reads one of greybox's own series from its registry.
func (g *greybox) ownMetric(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
	fams, err := g.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	enc := expfmt.NewEncoder(&b, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, mf := range fams {
		_ = enc.Encode(mf)
	}
	v, _ := sample(t, b.String(), name, labels...)
	return v
}

// syncBuffer is a log sink safe for concurrent writers.
type syncBuffer = syncbuf.Buffer

// peer is a raw TCP listener on an address of 127.0.0.0/8 that counts the
// connections it accepts and hands each to serve; Close ends them all.
type peer struct {
	l     net.Listener
	stop  chan struct{}
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns []net.Conn
	lines []string // first line of each connection, as received
	once  sync.Once
}

func newPeer(t *testing.T, addr string, serve func(p *peer, c net.Conn, first string)) *peer {
	t.Helper()
	return startPeer(t, "tcp", addr, func(p *peer, c net.Conn) {
		br := bufio.NewReader(c)
		line, _ := br.ReadString('\n')
		p.mu.Lock()
		p.lines = append(p.lines, strings.TrimSpace(line))
		p.mu.Unlock()
		serve(p, c, line)
	})
}

// startPeer listens on network and addr (tcp, or unix and a socket path)
// and runs serve per connection.
func startPeer(t *testing.T, network, addr string, serve func(p *peer, c net.Conn)) *peer {
	t.Helper()
	l, err := net.Listen(network, addr)
	if err != nil {
		t.Skipf("cannot listen on %s here: %v", addr, err)
	}
	p := &peer{l: l, stop: make(chan struct{})}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			p.conns = append(p.conns, c)
			p.mu.Unlock()
			p.wg.Add(1)
			go func() {
				defer p.wg.Done()
				defer c.Close()
				serve(p, c)
			}()
		}
	}()
	t.Cleanup(p.Close)
	return p
}

func (p *peer) Close() {
	p.once.Do(func() {
		close(p.stop)
		p.l.Close()
		p.mu.Lock()
		for _, c := range p.conns {
			c.Close()
		}
		p.mu.Unlock()
	})
	p.wg.Wait()
}

func (p *peer) addr() string { return p.l.Addr().String() }
func (p *peer) url() string  { return "http://" + p.addr() }

// accepted is how many connections the peer has accepted so far.
func (p *peer) accepted() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

func (p *peer) firstLines() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.lines...)
}

// hang holds a connection open without answering until the test ends.
func hang(p *peer, _ net.Conn, _ string) { <-p.stop }

// badGateway answers any request, CONNECT included, with 502: a forward
// proxy that records where it was asked to go and never goes there.
func badGateway(_ *peer, c net.Conn, _ string) {
	_, _ = io.WriteString(c, "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
}

// okServer answers 200 "ok" and counts requests.
func okServer(t *testing.T) (*httptest.Server, *counter) {
	n := &counter{}
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.add()
		_, _ = io.WriteString(w, "ok")
	}))
	t.Cleanup(s.Close)
	return s, n
}

type counter struct {
	mu sync.Mutex
	n  int
}

func (c *counter) add() { c.mu.Lock(); c.n++; c.mu.Unlock() }
func (c *counter) get() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

// loopback2 is a loopback address outside an allowlist of 127.0.0.1/32.
const loopback2 = "127.0.0.2"

// waitIdle waits until no probe runs: a probe's slot is given back when
// its prober returns, so this proves nothing it started is still going.
func (g *greybox) waitIdle(t *testing.T, within time.Duration) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		deadline := time.Now().Add(within)
		for g.srv.ProbesInFlight() > 0 && time.Now().Before(deadline) {
			// Yield rather than sleep: this waits on a condition.
			runtime.Gosched()
		}
	}()
	<-done
	if n := g.srv.ProbesInFlight(); n > 0 {
		t.Fatalf("%d probes still running %s after their answers", n, within)
	}
}

func assertSuccess(t *testing.T, body string, want float64) {
	t.Helper()
	if got := mustSample(t, body, "probe_success"); got != want {
		t.Fatalf("probe_success = %v, want %v\n%s", got, want, body)
	}
}

// offline resolves from /etc/hosts only: a name a test uses as "denied"
// is never sent to a DNS server.
var offline = &net.Resolver{PreferGo: true, Dial: func(context.Context, string, string) (net.Conn, error) {
	return nil, errors.New("no DNS in the hostile suite")
}}

// newLoopbackHTTP serves h on 127.0.0.1 until the test ends.
func newLoopbackHTTP(t *testing.T, h http.Handler) *httptest.Server {
	s := httptest.NewServer(h)
	t.Cleanup(s.Close)
	return s
}
