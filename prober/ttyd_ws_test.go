package prober

import (
	"context"
	"encoding/pem"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/greybox-probe/greybox/internal/testpeer/ttyd"
)

// nextSession returns the fake's record of the session the probe had.
func nextSession(t *testing.T, srv *ttyd.Server) ttyd.Session {
	t.Helper()
	select {
	case s := <-srv.Sessions():
		return s
	case <-time.After(10 * time.Second):
		t.Fatal("the fake ttyd saw no session end")
		return ttyd.Session{}
	}
}

func TestTTYDWS(t *testing.T) {
	creds := "  http_client_config:\n    basic_auth: {username: probe, password: hunter2-not-real}\n"
	for _, tc := range []struct {
		name    string
		opts    ttyd.Options
		module  string
		success bool
		metrics map[string]float64
		absent  []string
		logHas  string
		check   func(t *testing.T, s ttyd.Session)
	}{
		{name: "session with frames 1, 2, 0 and a clean close", success: true,
			metrics: map[string]float64{
				"probe_ttyd_ws_handshake_status_code": 101, "probe_ttyd_ws_routed": 1, "probe_ttyd_ws_upgraded": 1,
				"probe_ttyd_ws_subprotocol_accepted": 1, "probe_ttyd_ws_auth_refused": 0, "probe_ttyd_ws_first_frame_seen": 1,
				"probe_ttyd_ws_token_received": 1, "probe_ttyd_ws_close_code": 1000,
			},
			absent: []string{"probe_ttyd_ws_expect_matched"},
			check: func(t *testing.T, s ttyd.Session) {
				if !s.InitReceived || s.Columns != 80 || s.Rows != 24 || s.Subprotocol != "tty" {
					t.Errorf("session: %+v", s)
				}
				if !s.CloseReceived || s.CloseCode != 1000 {
					t.Errorf("the fake saw no clean close: %+v", s)
				}
			}},
		{name: "basic auth, token and upgrade", opts: ttyd.Options{Credential: ttydCred}, module: "ttyd_ws:\n" + creds + "  columns: 120\n  rows: 40",
			success: true, metrics: map[string]float64{"probe_ttyd_ws_auth_refused": 0, "probe_ttyd_ws_first_frame_seen": 1},
			check: func(t *testing.T, s ttyd.Session) {
				if s.AuthRefused || s.Columns != 120 || s.Rows != 40 || !s.CloseReceived {
					t.Errorf("session: %+v", s)
				}
			}},
		{name: "wrong AuthToken gets 1008", opts: ttyd.Options{Credential: ttydCred, FramesAfterAuthClose: true},
			module: "ttyd_ws:\n" + creds + "  fetch_token: false", success: false,
			metrics: map[string]float64{"probe_ttyd_ws_upgraded": 1, "probe_ttyd_ws_auth_refused": 1, "probe_ttyd_ws_close_code": 1008, "probe_ttyd_ws_first_frame_seen": 0},
			absent:  []string{"probe_ttyd_ws_first_frame_seconds", "probe_ttyd_ws_token_received"},
			logHas:  "1008",
			check: func(t *testing.T, s ttyd.Session) {
				if !s.AuthRefused {
					t.Errorf("session: %+v", s)
				}
			}},
		{name: "no basic auth on the upgrade: EOF in handshake", opts: ttyd.Options{Credential: ttydCred},
			module: "ttyd_ws: {fetch_token: false}", success: false,
			metrics: map[string]float64{"probe_ttyd_ws_handshake_status_code": 0, "probe_ttyd_ws_upgraded": 0},
			absent:  []string{"probe_ttyd_ws_routed", "probe_ttyd_ws_subprotocol_accepted"},
			logHas:  "no HTTP answer"},
		{name: "token fetch refused without credentials", opts: ttyd.Options{Credential: ttydCred}, success: false,
			metrics: map[string]float64{"probe_ttyd_ws_token_received": 0},
			absent:  []string{"probe_ttyd_ws_upgraded"}, logHas: "basic_auth"},
		{name: "subprotocol not echoed", opts: ttyd.Options{IgnoreSubprotocol: true}, success: false,
			metrics: map[string]float64{"probe_ttyd_ws_upgraded": 1, "probe_ttyd_ws_subprotocol_accepted": 0},
			absent:  []string{"probe_ttyd_ws_first_frame_seen"}, logHas: "tty subprotocol"},
		{name: "read-only terminal drops input", module: "ttyd_ws:\n  send: \"echo greybox-ok\\r\"\n  expect: 'greybox-ok'", success: false,
			metrics: map[string]float64{"probe_ttyd_ws_first_frame_seen": 1, "probe_ttyd_ws_expect_matched": 0},
			logHas:  "expected output not seen",
			check: func(t *testing.T, s ttyd.Session) {
				if len(s.Inputs) != 1 || s.Inputs[0] != "echo greybox-ok\r" {
					t.Errorf("inputs: %q", s.Inputs)
				}
				if !s.CloseReceived {
					t.Error("no close frame after a failed expect")
				}
			}},
		{name: "writable terminal echoes input", opts: ttyd.Options{Writable: true}, module: "ttyd_ws:\n  send: \"echo greybox-ok\\r\"\n  expect: 'greybox-ok\\r\\n'", success: true,
			metrics: map[string]float64{"probe_ttyd_ws_expect_matched": 1, "probe_ttyd_ws_frames_received": 2},
			check: func(t *testing.T, s ttyd.Session) {
				if !s.CloseReceived {
					t.Error("no close frame")
				}
			}},
		{name: "expect without send sees the prompt", opts: ttyd.Options{Prompt: "login: "}, module: "ttyd_ws: {expect: 'login: $'}", success: true,
			metrics: map[string]float64{"probe_ttyd_ws_expect_matched": 1}},
		{name: "child exits after the prompt", opts: ttyd.Options{ExitAfterPrompt: true}, success: true,
			metrics: map[string]float64{"probe_ttyd_ws_first_frame_seen": 1}},
		{name: "frame over read_limit", opts: ttyd.Options{FloodFrames: 3, FloodSize: 4096}, module: "ttyd_ws: {read_limit: 1KiB, expect: never}", success: false,
			metrics: map[string]float64{"probe_ttyd_ws_expect_matched": 0}, logHas: "read_limit"},
		{name: "flood does not outlive the deadline", opts: ttyd.Options{FloodFrames: 5000, FloodSize: 8192}, module: "ttyd_ws: {expect: never}", success: false,
			metrics: map[string]float64{"probe_ttyd_ws_expect_matched": 0}},
		{name: "101 where only 302 is valid", module: "ttyd_ws: {valid_handshake_status_codes: [302]}", success: false,
			metrics: map[string]float64{"probe_ttyd_ws_upgraded": 1}, logHas: "without the expected protection"},
		{name: "base path", opts: ttyd.Options{BasePath: "/terminal"}, success: true,
			metrics: map[string]float64{"probe_ttyd_ws_first_frame_seen": 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := ttyd.NewServer(tc.opts)
			defer srv.Close()
			m := testModule(t, "prober: ttyd_ws\ntimeout: 1s\n"+tc.module)
			r := runProbeDirect(t, probeTTYDWS, srv.URL, m, Env{})
			if r.ok != tc.success {
				t.Errorf("success = %v, want %v; logs:\n%s", r.ok, tc.success, r.logs)
			}
			if r.elapsed > 3*time.Second {
				t.Errorf("probe took %v with a 1s timeout", r.elapsed)
			}
			for name, want := range tc.metrics {
				labels := map[string]string(nil)
				if name == "probe_ttyd_ws_frames_received" {
					labels = map[string]string{"type": "output"}
				}
				mustMetric(t, r.reg, name, labels, want)
			}
			for _, name := range tc.absent {
				if _, ok := metricValue(t, r.reg, name, nil); ok {
					t.Errorf("metric %s present, want absent", name)
				}
			}
			if tc.logHas != "" && !strings.Contains(r.logs, tc.logHas) {
				t.Errorf("logs lack %q:\n%s", tc.logHas, r.logs)
			}
			if tc.check != nil {
				tc.check(t, nextSession(t, srv))
			}
		})
	}
}

func TestTTYDWSFrames(t *testing.T) {
	srv := ttyd.NewServer(ttyd.Options{})
	defer srv.Close()
	m := testModule(t, "prober: ttyd_ws\ntimeout: 5s")
	r := runProbeDirect(t, probeTTYDWS, srv.URL, m, Env{})
	if !r.ok {
		t.Fatalf("probe failed:\n%s", r.logs)
	}
	for _, typ := range []string{"title", "preferences", "output"} {
		mustMetric(t, r.reg, "probe_ttyd_ws_frames_received", map[string]string{"type": typ}, 1)
	}
	if v, ok := metricValue(t, r.reg, "probe_ttyd_ws_first_frame_seconds", nil); !ok || v <= 0 || v > 5 {
		t.Errorf("probe_ttyd_ws_first_frame_seconds = %v, %v", v, ok)
	}
	for _, phase := range []string{"token", "handshake", "first_frame", "close"} {
		if _, ok := metricValue(t, r.reg, "probe_ttyd_ws_duration_seconds", map[string]string{"phase": phase}); !ok {
			t.Errorf("phase %s missing", phase)
		}
	}
	nextSession(t, srv)
}

// The bug class greybox exists to design out: a server that accepts the
// upgrade and goes silent must end the probe at its timeout, not 60s later.
func TestTTYDWSSilentAfterUpgrade(t *testing.T) {
	srv := ttyd.NewServer(ttyd.Options{SilentAfterUpgrade: true})
	defer srv.Close()
	m := testModule(t, "prober: ttyd_ws\ntimeout: 1s")
	r := runProbeDirect(t, probeTTYDWS, srv.URL, m, Env{})
	if r.ok {
		t.Fatal("a silent terminal passed")
	}
	if r.elapsed > 2500*time.Millisecond {
		t.Errorf("probe took %v with a 1s timeout", r.elapsed)
	}
	mustMetric(t, r.reg, "probe_ttyd_ws_upgraded", nil, 1)
	mustMetric(t, r.reg, "probe_ttyd_ws_first_frame_seen", nil, 0)
	if !strings.Contains(r.logs, "before the probe deadline") {
		t.Errorf("logs:\n%s", r.logs)
	}
}

func TestTTYDWSFronts(t *testing.T) {
	backend := ttyd.NewServer(ttyd.Options{})
	defer backend.Close()
	bu, _ := url.Parse(backend.URL)
	fwd := ttyd.NewForwardAuth(ttyd.ForwardAuthOptions{AuthURL: "https://auth.example.com/oauth2/start", Cookie: "_oauth2_proxy=let-me-in", Backend: bu})
	defer fwd.Close()
	unrouted := ttyd.NewUnrouted()
	defer unrouted.Close()

	for _, tc := range []struct {
		name    string
		target  string
		module  string
		success bool
		metrics map[string]float64
		logHas  string
	}{
		{name: "forward auth: 302 is routed and protected", target: fwd.URL,
			module:  "ttyd_ws: {fetch_token: false, valid_handshake_status_codes: [302]}",
			success: true, metrics: map[string]float64{"probe_ttyd_ws_handshake_status_code": 302, "probe_ttyd_ws_routed": 1, "probe_ttyd_ws_upgraded": 0}},
		{name: "forward auth: 302 by default fails", target: fwd.URL, module: "ttyd_ws: {fetch_token: false}",
			success: false, metrics: map[string]float64{"probe_ttyd_ws_handshake_status_code": 302}},
		{name: "forward auth: session cookie gets through", target: fwd.URL,
			module:  "ttyd_ws: {headers: {Cookie: '_oauth2_proxy=let-me-in'}}",
			success: true, metrics: map[string]float64{"probe_ttyd_ws_token_received": 1, "probe_ttyd_ws_first_frame_seen": 1}},
		{name: "no router on the upgrade", target: unrouted.URL, module: "ttyd_ws: {fetch_token: false, valid_handshake_status_codes: [101, 302]}",
			success: false, metrics: map[string]float64{"probe_ttyd_ws_handshake_status_code": 404, "probe_ttyd_ws_routed": 0, "probe_ttyd_ws_upgraded": 0},
			logHas: "no router"},
		{name: "no router on the token", target: unrouted.URL,
			success: false, metrics: map[string]float64{"probe_ttyd_ws_routed": 0, "probe_ttyd_ws_token_received": 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := testModule(t, "prober: ttyd_ws\ntimeout: 2s\n"+tc.module)
			r := runProbeDirect(t, probeTTYDWS, tc.target, m, Env{})
			if r.ok != tc.success {
				t.Errorf("success = %v, want %v; logs:\n%s", r.ok, tc.success, r.logs)
			}
			for name, want := range tc.metrics {
				mustMetric(t, r.reg, name, nil, want)
			}
			if tc.logHas != "" && !strings.Contains(r.logs, tc.logHas) {
				t.Errorf("logs lack %q:\n%s", tc.logHas, r.logs)
			}
		})
	}
}

func TestTTYDWSSecretsStayOut(t *testing.T) {
	srv := ttyd.NewServer(ttyd.Options{Credential: ttydCred, Writable: true})
	defer srv.Close()
	m := testModule(t, "prober: ttyd_ws\ntimeout: 5s\nttyd_ws:\n  http_client_config:\n    basic_auth: {username: probe, password: hunter2-not-real}\n  send: \"id\\r\"\n  expect: id")
	r := runProbeDirect(t, probeTTYDWS, srv.URL, m, Env{})
	if !r.ok {
		t.Fatalf("probe failed:\n%s", r.logs)
	}
	if s := nextSession(t, srv); s.AuthToken != srv.Token() {
		t.Errorf("AuthToken sent does not match the fetched token")
	}
	assertNoTTYDSecrets(t, r, srv.Token())
}

func TestTTYDWSConfig(t *testing.T) {
	for _, tc := range []struct{ yml, errHas string }{
		{"ttyd_ws: {http_client_config: {oauth2: {client_id: a, client_secret: b, token_url: 'http://127.0.0.1/t'}}}", "oauth2"},
		{"ttyd_ws: {read_limit: 0KiB}", "read_limit"},
		{"ttyd_ws: {columns: 0}", "columns"},
		{"ttyd_ws: {expect: '('}", "regular expression"},
		{"ttyd_ws: {valid_handshake_status_codes: [1000]}", "not an HTTP status"},
	} {
		_, err := parseTTYDModule("prober: ttyd_ws\n" + tc.yml)
		if err == nil || !strings.Contains(err.Error(), tc.errHas) {
			t.Errorf("%s: error %v, want one containing %q", tc.yml, err, tc.errHas)
		}
	}
	m := testModule(t, "prober: ttyd_ws")
	s := m.Settings.(*TTYDWSSettings)
	if !s.FetchToken || s.Columns != 80 || s.Rows != 24 || len(s.ValidHandshakeStatusCodes) != 1 || s.ValidHandshakeStatusCodes[0] != 101 || s.ReadLimit != DefaultTTYDReadLimit {
		t.Errorf("defaults: %+v", s)
	}
}

func TestTTYDWSURL(t *testing.T) {
	for in, want := range map[string]string{
		"http://ttyd.terminal.svc:7681":   "ws://ttyd.terminal.svc:7681/ws",
		"https://term.example.com/":       "wss://term.example.com/ws",
		"https://term.example.com/t/?x=1": "wss://term.example.com/t/ws",
	} {
		base, err := ttydBaseURL(in)
		if err != nil {
			t.Fatal(err)
		}
		if got := ttydWSURL(base).String(); got != want {
			t.Errorf("%s → %s, want %s", in, got, want)
		}
	}
	for _, bad := range []string{"ftp://x", "ws://x", "http://u:p@x", "::"} {
		if _, err := ttydBaseURL(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// BenchmarkTTYDWS is one full terminal session per op: token, upgrade,
// init, frames 1/2/0, clean close.
func BenchmarkTTYDWS(b *testing.B) {
	srv := ttyd.NewServer(ttyd.Options{})
	defer srv.Close()
	m := testModule(b, "prober: ttyd_ws\ntimeout: 5s")
	b.ReportAllocs()
	for b.Loop() {
		if r := runProbeDirect(b, probeTTYDWS, srv.URL, m, Env{}); !r.ok {
			b.Fatalf("probe failed:\n%s", r.logs)
		}
	}
}

func TestTTYDWSTLS(t *testing.T) {
	srv := ttyd.NewServer(ttyd.Options{TLS: true, Credential: ttydCred})
	defer srv.Close()
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	pw := filepath.Join(t.TempDir(), "password")
	if err := os.WriteFile(pw, []byte("hunter2-not-real\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, tls string
		success   bool
	}{
		{"trusted CA", "{ca_file: " + ca + "}", true},
		{"unknown CA", "{}", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := testModule(t, "prober: ttyd_ws\ntimeout: 5s\nttyd_ws:\n  http_client_config:\n    tls_config: "+tc.tls+"\n    basic_auth: {username: probe, password_file: "+pw+"}")
			r := runProbeDirect(t, probeTTYDWS, srv.URL, m, Env{})
			if r.ok != tc.success {
				t.Fatalf("success = %v, want %v; logs:\n%s", r.ok, tc.success, r.logs)
			}
			if tc.success {
				mustMetric(t, r.reg, "probe_ttyd_ws_first_frame_seen", nil, 1)
				if !strings.HasPrefix(srv.URL, "https://") {
					t.Errorf("not TLS: %s", srv.URL)
				}
				nextSession(t, srv)
			}
		})
	}
}

// A cancelled probe (the scrape went away) must not wait for its deadline.
func TestTTYDWSCancel(t *testing.T) {
	srv := ttyd.NewServer(ttyd.Options{SilentAfterUpgrade: true})
	defer srv.Close()
	m := testModule(t, "prober: ttyd_ws\ntimeout: 30s")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stop := time.AfterFunc(300*time.Millisecond, cancel)
	defer stop.Stop()
	start := time.Now()
	ok := probeTTYDWS(ctx, srv.URL, m, NewMetrics(), slog.New(slog.DiscardHandler), Env{Guard: NewGuard(ctx, m.AllowedTargets)})
	if ok {
		t.Error("a cancelled probe succeeded")
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("cancelled probe returned after %v", d)
	}
}

// guardDials is how many connections the probe's guard dialled.
func guardDials(g *Guard) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.conns)
}

// Over plain HTTP the token request's connection carries the upgrade too,
// as a browser's may: one connection per probe, not two.
func TestTTYDWSOneConnection(t *testing.T) {
	srv := ttyd.NewServer(ttyd.Options{Credential: ttydCred})
	defer srv.Close()
	m := testModule(t, "prober: ttyd_ws\ntimeout: 5s\nttyd_ws:\n  http_client_config:\n    basic_auth: {username: probe, password: hunter2-not-real}\n")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	g := NewGuard(ctx, m.AllowedTargets)
	r := runProbeDirect(t, probeTTYDWS, srv.URL, m, Env{Guard: g})
	if !r.ok {
		t.Fatalf("probe failed:\n%s", r.logs)
	}
	if s := nextSession(t, srv); s.AuthToken != srv.Token() || !s.CloseReceived {
		t.Errorf("session %+v: want the token and a clean close", s)
	}
	if n := guardDials(g); n != 1 {
		t.Errorf("%d connections dialled, want 1\n%s", n, r.logs)
	}
}

// A server that closes the token request's connection (at once, or just
// after its answer) still gets its session, on a fresh connection.
func TestTTYDWSTokenConnectionClosed(t *testing.T) {
	srv := ttyd.NewServer(ttyd.Options{})
	defer srv.Close()
	backend, _ := url.Parse(srv.URL)
	for _, tc := range []struct {
		name  string
		token func(w http.ResponseWriter)
	}{
		{"Connection: close", func(w http.ResponseWriter) {
			w.Header().Set("Connection", "close")
			w.Header().Set("Content-Type", "application/json;charset=utf-8")
			_, _ = io.WriteString(w, `{"token": ""}`)
		}},
		{"closed after a keep-alive answer", func(w http.ResponseWriter) {
			c, buf, err := w.(http.Hijacker).Hijack()
			if err != nil {
				return
			}
			_, _ = buf.WriteString("HTTP/1.1 200 OK\r\nContent-Type: application/json;charset=utf-8\r\nContent-Length: 13\r\n\r\n{\"token\": \"\"}")
			_ = buf.Flush()
			_ = c.Close()
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			proxy := httputil.NewSingleHostReverseProxy(backend)
			front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/token" {
					tc.token(w)
					return
				}
				proxy.ServeHTTP(w, r)
			}))
			defer front.Close()
			m := testModule(t, "prober: ttyd_ws\ntimeout: 5s")
			r := runProbeDirect(t, probeTTYDWS, front.URL, m, Env{})
			if !r.ok {
				t.Fatalf("probe failed:\n%s", r.logs)
			}
			nextSession(t, srv)
		})
	}
}
