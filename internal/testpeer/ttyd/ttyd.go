// Package ttyd is a test peer that behaves like a real ttyd 1.7.x on the wire
// (see protocols/ttyd.md): the /token JSON byte for byte, -c basic auth on
// HTTP and on the upgrade, the tty subprotocol, the frame order and the
// ways ttyd refuses or ends a session. It also provides the two fronts the
// probers meet in production: Traefik's "no router" 404 and a forward-auth
// proxy that answers 302 without a session cookie.
//
// Every server listens on 127.0.0.1 only and Close leaves no goroutine behind.
package ttyd

import (
	"bytes"
	"crypto/tls"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// ServerHeader is what ttyd 1.7.7 sends in every HTTP answer.
const ServerHeader = "ttyd/1.7.7-40e79c7 (libwebsockets/4.1.6-v4.1.6)"

// Frame commands, byte 0 of every message.
const (
	Output         = '0' // server → client: pty bytes; client → server: INPUT
	SetWindowTitle = '1' // server → client; client → server: RESIZE
	SetPreferences = '2' // server → client; client → server: PAUSE
)

// libwebsockets' own 404 page; what ttyd answers for an unknown path. It must
// differ from Traefik's so a prober can tell "ttyd says no" from "no router".
const lwsNotFound = `<html><head><meta charset=utf-8 http-equiv="Content-Language" content="en"/><title>404</title></head><body><h1>404</h1></body></html>`

// Options mirror ttyd's command-line flags plus the failure modes tests need.
type Options struct {
	// Credential is ttyd's -c user:pass. Empty: no authentication.
	Credential string
	// BasePath is ttyd's -b, e.g. "/terminal". Empty: served at /.
	BasePath string
	// Writable is ttyd's -W. ttyd ≥ 1.7.4 drops input without it; with it
	// the peer echoes input back as output, like a pty in cooked mode.
	Writable bool
	// Title is the SET_WINDOW_TITLE payload; default "bash (greybox-test)".
	Title string
	// Preferences is the SET_PREFERENCES payload; default "{ }".
	Preferences string
	// Prompt is the first OUTPUT frame; default "$ ".
	Prompt string
	// ExitAfterPrompt makes the child exit after the prompt: ttyd then shuts
	// TCP without a close frame.
	ExitAfterPrompt bool
	// SilentAfterUpgrade accepts the upgrade and then never sends anything,
	// not even an answer to a close frame.
	SilentAfterUpgrade bool
	// IgnoreSubprotocol upgrades without echoing "tty", like a proxy that
	// drops Sec-WebSocket-Protocol; the session is then bound to nothing.
	IgnoreSubprotocol bool
	// FloodFrames OUTPUT frames of FloodSize bytes (default 1024) follow
	// the prompt, for hostile-peer tests.
	FloodFrames int
	FloodSize   int
	// TLS serves https/wss with httptest's self-signed certificate
	// (see Server.Certificate).
	TLS bool
	// FramesAfterAuthClose reproduces the quirk that the title and
	// preferences frames may follow a 1008 close frame.
	FramesAfterAuthClose bool
}

// Session is what the peer saw of one WebSocket connection.
type Session struct {
	Subprotocol string
	// InitReceived: the first message was the init JSON.
	InitReceived bool
	AuthToken    string
	Columns      int
	Rows         int
	// AuthRefused: the peer closed with 1008.
	AuthRefused bool
	// Inputs are the INPUT payloads received (dropped or not).
	Inputs []string
	// CloseReceived: the client sent a close frame; CloseCode is its code.
	CloseReceived bool
	CloseCode     int
}

// Server is a fake ttyd.
type Server struct {
	*httptest.Server
	// URL is the base URL including BasePath, the prober's target.
	URL string

	opts     Options
	token    string
	sessions chan Session
	wg       sync.WaitGroup

	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

// NewServer starts a fake ttyd on 127.0.0.1.
func NewServer(o Options) *Server {
	if o.Title == "" {
		o.Title = "bash (greybox-test)"
	}
	if o.Preferences == "" {
		o.Preferences = "{ }"
	}
	if o.Prompt == "" {
		o.Prompt = "$ "
	}
	if o.FloodSize <= 0 {
		o.FloodSize = 1024
	}
	o.BasePath = strings.TrimSuffix(o.BasePath, "/")
	s := &Server{opts: o, sessions: make(chan Session, 64), conns: map[net.Conn]struct{}{}}
	if o.Credential != "" {
		s.token = base64.StdEncoding.EncodeToString([]byte(o.Credential))
	}
	s.Server = newLoopbackServer(http.HandlerFunc(s.serveHTTP), o.TLS)
	s.URL = s.Server.URL + o.BasePath
	return s
}

// Token is the value /token hands out: base64(user:pass) under -c, else "".
func (s *Server) Token() string { return s.token }

// Sessions delivers one Session per WebSocket connection when it ends.
func (s *Server) Sessions() <-chan Session { return s.sessions }

// Close stops the server, cuts open sessions and waits for their goroutines.
func (s *Server) Close() {
	s.Server.Close()
	s.mu.Lock()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

func (s *Server) track(c net.Conn) {
	s.mu.Lock()
	s.conns[c] = struct{}{}
	s.mu.Unlock()
}

func (s *Server) untrack(c net.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

func (s *Server) authorized(r *http.Request) bool {
	return s.opts.Credential == "" || r.Header.Get("Authorization") == "Basic "+s.token
}

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	s.wg.Add(1)
	defer s.wg.Done()
	w.Header().Set("Server", ServerHeader)
	b := s.opts.BasePath
	if b != "" && r.URL.Path == b {
		w.Header().Set("Location", b+"/")
		w.WriteHeader(http.StatusFound)
		return
	}
	if !strings.HasPrefix(r.URL.Path, b+"/") {
		notFound(w)
		return
	}
	path := strings.TrimPrefix(r.URL.Path, b)
	if path == "/ws" && websocket.IsWebSocketUpgrade(r) {
		s.serveWS(w, r)
		return
	}
	if !s.authorized(r) {
		w.Header().Set("WWW-Authenticate", `Basic realm="ttyd"`)
		w.Header().Set("Content-Length", "0")
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	switch path {
	case "/":
		w.Header().Set("Content-Type", "text/html")
		io.WriteString(w, "<!DOCTYPE html><html><head><title>ttyd - Terminal</title></head><body></body></html>")
	case "/token":
		// Built by hand, as ttyd does: json.Marshal would drop the space.
		body := `{"token": "` + s.token + `"}`
		w.Header().Set("Content-Type", "application/json;charset=utf-8")
		w.Header().Set("Content-Length", itoa(len(body)))
		io.WriteString(w, body)
	default:
		notFound(w)
	}
}

func notFound(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "text/html")
	w.WriteHeader(http.StatusNotFound)
	io.WriteString(w, lwsNotFound)
}

// hangUp closes TCP without an HTTP answer: how ttyd refuses an upgrade.
func hangUp(w http.ResponseWriter) {
	if c, _, err := http.NewResponseController(w).Hijack(); err == nil {
		c.Close()
	}
}

func (s *Server) serveWS(w http.ResponseWriter, r *http.Request) {
	if !s.authorized(r) {
		hangUp(w)
		return
	}
	protos := websocket.Subprotocols(r)
	up := websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}
	switch {
	case s.opts.IgnoreSubprotocol:
	case slices.Contains(protos, "tty"):
		up.Subprotocols = []string{"tty"}
	case len(protos) > 0:
		hangUp(w)
		return
	}
	conn, err := up.Upgrade(w, r, http.Header{"Server": {ServerHeader}})
	if err != nil {
		return
	}
	nc := conn.NetConn()
	s.track(nc)
	defer s.untrack(nc)
	defer conn.Close()
	sess := Session{Subprotocol: conn.Subprotocol()}
	defer func() {
		select {
		case s.sessions <- sess:
		default:
		}
	}()
	conn.SetCloseHandler(func(code int, _ string) error {
		sess.CloseReceived, sess.CloseCode = true, code
		conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, ""), time.Now().Add(time.Second))
		return nil
	})
	if s.opts.SilentAfterUpgrade {
		// Hostile silence: not even a close frame gets an answer.
		io.Copy(io.Discard, nc)
		return
	}
	if sess.Subprotocol == "" {
		// Bound to nothing: keep reading (so a client close is seen) but
		// never answer.
		for {
			if _, _, err := conn.ReadMessage(); err != nil {
				return
			}
		}
	}
	// Nothing is sent before the client's first message.
	_, msg, err := conn.ReadMessage()
	if err != nil {
		return
	}
	if len(msg) == 0 || msg[0] != '{' {
		nc.Close() // ttyd drops TCP, no close frame
		return
	}
	var init struct {
		AuthToken string `json:"AuthToken"`
		Columns   int    `json:"columns"`
		Rows      int    `json:"rows"`
	}
	if err := json.Unmarshal(msg, &init); err != nil {
		nc.Close()
		return
	}
	sess.InitReceived, sess.AuthToken, sess.Columns, sess.Rows = true, init.AuthToken, init.Columns, init.Rows
	if s.opts.Credential != "" && init.AuthToken != s.token {
		sess.AuthRefused = true
		conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.ClosePolicyViolation, ""), time.Now().Add(time.Second))
		if s.opts.FramesAfterAuthClose {
			// gorilla refuses to write after a close frame; ttyd does not.
			nc.Write(rawFrame(append([]byte{SetWindowTitle}, s.opts.Title...)))
			nc.Write(rawFrame(append([]byte{SetPreferences}, s.opts.Preferences...)))
		}
		// Wait for the client's close or hang-up.
		for {
			if _, _, err := conn.ReadMessage(); err != nil {
				return
			}
		}
	}
	send := func(cmd byte, payload string) error {
		return conn.WriteMessage(websocket.BinaryMessage, append([]byte{cmd}, payload...))
	}
	if send(SetWindowTitle, s.opts.Title) != nil || send(SetPreferences, s.opts.Preferences) != nil || send(Output, s.opts.Prompt) != nil {
		return
	}
	if s.opts.ExitAfterPrompt {
		nc.Close()
		return
	}
	if s.opts.FloodFrames > 0 {
		junk := strings.Repeat("x", s.opts.FloodSize)
		for range s.opts.FloodFrames {
			if send(Output, junk) != nil {
				return
			}
		}
	}
	for {
		_, msg, err := conn.ReadMessage()
		if err != nil {
			return
		}
		if len(msg) == 0 {
			continue
		}
		switch msg[0] {
		case Output:
			sess.Inputs = append(sess.Inputs, string(msg[1:]))
			if s.opts.Writable {
				echo := strings.ReplaceAll(string(msg[1:]), "\r", "\r\n")
				if send(Output, echo) != nil {
					return
				}
			}
		default: // RESIZE, PAUSE, RESUME: nothing to show
		}
	}
}

// rawFrame encodes an unmasked binary frame (server → client).
func rawFrame(p []byte) []byte {
	var b bytes.Buffer
	b.WriteByte(0x82)
	switch {
	case len(p) < 126:
		b.WriteByte(byte(len(p)))
	case len(p) <= 0xffff:
		b.WriteByte(126)
		binary.Write(&b, binary.BigEndian, uint16(len(p)))
	default:
		b.WriteByte(127)
		binary.Write(&b, binary.BigEndian, uint64(len(p)))
	}
	b.Write(p)
	return b.Bytes()
}

func itoa(n int) string {
	var b [20]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
		if n == 0 {
			return string(b[i:])
		}
	}
}

// newLoopbackServer is httptest.NewServer pinned to 127.0.0.1 whatever the
// -httptest.serve flag says.
func newLoopbackServer(h http.Handler, useTLS bool) *httptest.Server {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic("ttyd test peer: listen on 127.0.0.1: " + err.Error())
	}
	s := &httptest.Server{Listener: l, Config: &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}}
	if useTLS {
		s.StartTLS()
	} else {
		s.Start()
	}
	return s
}

// UnroutedBody is Traefik's answer when no router matches, byte for byte.
const UnroutedBody = "404 page not found\n"

// UnroutedHandler answers every request like a Traefik replica that has no
// router for it (fixtures/traefik-v3.7.9/unrouted-404.*), upgrades included.
func UnroutedHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("Content-Length", itoa(len(UnroutedBody)))
		w.WriteHeader(http.StatusNotFound)
		io.WriteString(w, UnroutedBody)
	})
}

// NewUnrouted starts a Traefik-style "no router" front on 127.0.0.1.
func NewUnrouted() *httptest.Server { return newLoopbackServer(UnroutedHandler(), false) }

// ForwardAuthOptions configure a forward-auth front.
type ForwardAuthOptions struct {
	// AuthURL is where a request without a session goes, e.g.
	// "https://auth.example.com/oauth2/start". The front appends ?rd=.
	AuthURL string
	// Cookie is the session cookie "name=value" that lets a request
	// through. Empty: nothing gets through.
	Cookie string
	// Backend receives authenticated requests (HTTP and WebSocket).
	Backend *url.URL
}

// NewForwardAuth starts a front that answers 302 to AuthURL unless the
// request carries the session cookie, and proxies to Backend otherwise.
func NewForwardAuth(o ForwardAuthOptions) *httptest.Server {
	var proxy *httputil.ReverseProxy
	if o.Backend != nil {
		proxy = &httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) { r.SetURL(o.Backend) }}
	}
	name, value, _ := strings.Cut(o.Cookie, "=")
	return newLoopbackServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if c, err := r.Cookie(name); o.Cookie != "" && err == nil && c.Value == value && proxy != nil {
			proxy.ServeHTTP(w, r)
			return
		}
		rd := "http://" + r.Host + r.URL.RequestURI()
		w.Header().Set("Location", o.AuthURL+"?rd="+url.QueryEscape(rd))
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.WriteHeader(http.StatusFound)
		io.WriteString(w, "<a href=\"/\">Found</a>.\n")
	}), false)
}

// HostFront is a Traefik-style entry point: it routes by the request's Host
// (port and case ignored, as Traefik's Host() rule does) to a backend, and
// answers any other host like a replica without a router for it.
type HostFront struct {
	*httptest.Server
	mu          sync.Mutex
	hosts       map[string]int // requests per Host header (lower case, no port)
	serverNames []string       // SNI of each TLS handshake, in order
}

// NewHostFront starts a front on 127.0.0.1 routing host -> backend; with
// useTLS it serves httptest's certificate (valid for example.com and the
// loopback addresses) and records each handshake's SNI.
func NewHostFront(routes map[string]*url.URL, useTLS bool) *HostFront {
	f := &HostFront{hosts: map[string]int{}}
	proxies := map[string]*httputil.ReverseProxy{}
	for host, backend := range routes {
		proxies[strings.ToLower(host)] = &httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(backend)
			r.Out.Host = r.In.Host
		}}
	}
	unrouted := UnroutedHandler()
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host := strings.ToLower(r.Host)
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		f.mu.Lock()
		f.hosts[host]++
		f.mu.Unlock()
		if p, ok := proxies[host]; ok {
			p.ServeHTTP(w, r)
			return
		}
		unrouted.ServeHTTP(w, r)
	})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic("ttyd test peer: listen on 127.0.0.1: " + err.Error())
	}
	// Refused handshakes are what TLS tests provoke, not news.
	quiet := log.New(io.Discard, "", 0)
	f.Server = &httptest.Server{Listener: l, Config: &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, ErrorLog: quiet}}
	if useTLS {
		f.Server.TLS = &tls.Config{GetConfigForClient: func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
			f.mu.Lock()
			f.serverNames = append(f.serverNames, hello.ServerName)
			f.mu.Unlock()
			return nil, nil
		}}
		f.StartTLS()
	} else {
		f.Start()
	}
	return f
}

// Requests returns how many requests arrived for host (lower case, no port).
func (f *HostFront) Requests(host string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.hosts[host]
}

// ServerNames returns the SNI of every TLS handshake so far.
func (f *HostFront) ServerNames() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.serverNames...)
}
