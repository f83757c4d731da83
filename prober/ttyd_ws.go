package prober

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	pconfig "github.com/prometheus/common/config"

	"github.com/greybox-probe/greybox/config"
)

// TTYDWSSettings is the ttyd_ws section of a module.
type TTYDWSSettings struct {
	// HTTPClientConfig serves both the token fetch and the upgrade: basic
	// auth (ttyd -c wants it on the upgrade too), authorization,
	// http_headers, TLS, proxy_url. oauth2 and secret references cannot be
	// applied to an upgrade and are refused at load.
	HTTPClientConfig config.HTTPClientConfig `yaml:"http_client_config"`
	// Headers go on the token request and the upgrade; use "Cookie" for a
	// forward-auth session and "Origin" for ttyd -O.
	Headers config.Headers `yaml:"headers,omitempty"`
	// FetchToken gets <base>/token first, as the browser does, and sends it
	// as AuthToken. Without it AuthToken is empty (fine unless ttyd -c).
	FetchToken bool `yaml:"fetch_token"`
	// ValidHandshakeStatusCodes: 101 is a session; 302 through forward
	// auth without credentials means "routed and protected".
	ValidHandshakeStatusCodes []int `yaml:"valid_handshake_status_codes"`
	Columns                   int   `yaml:"columns"`
	Rows                      int   `yaml:"rows"`
	// Send is typed into the terminal after its first output (Enter is
	// "\r"); the terminal must be writable (ttyd -W).
	Send string `yaml:"send,omitempty"`
	// Expect must match the terminal's output: output after Send when Send
	// is set, otherwise any output.
	Expect config.Regexp `yaml:"expect,omitempty"`
	// ReadLimit caps one WebSocket message.
	ReadLimit config.Bytes `yaml:"read_limit"`

	proxy func(*http.Request) (*url.URL, error)
}

// DefaultTTYDReadLimit is well above ttyd's largest frame (~64 KiB of pty output).
const DefaultTTYDReadLimit config.Bytes = 1 << 20

// ttydExpectWindow is how much recent output an expect regexp sees.
const ttydExpectWindow = 64 << 10

// HTTPClient is the module's client config, for the handler's target check.
func (s *TTYDWSSettings) HTTPClient() *config.HTTPClientConfig { return &s.HTTPClientConfig }

func (s *TTYDWSSettings) Validate() error {
	if err := validateTTYDHTTP(&s.HTTPClientConfig, s.ValidHandshakeStatusCodes, "read_limit", s.ReadLimit); err != nil {
		return err
	}
	c := &s.HTTPClientConfig.HTTPClientConfig
	switch {
	case c.OAuth2 != nil:
		return errors.New("http_client_config.oauth2 cannot be applied to a WebSocket upgrade; use basic_auth, authorization or http_headers")
	case c.BasicAuth != nil && (c.BasicAuth.UsernameRef != "" || c.BasicAuth.PasswordRef != ""),
		c.Authorization != nil && c.Authorization.CredentialsRef != "":
		return errors.New("http_client_config: secret references (*_ref) are not supported; use the value or a *_file")
	case len(c.ProxyConnectHeader) > 0:
		return errors.New("http_client_config.proxy_connect_header is not supported for WebSocket upgrades")
	}
	if s.Columns <= 0 || s.Rows <= 0 || s.Columns > 10000 || s.Rows > 10000 {
		return fmt.Errorf("columns and rows must be between 1 and 10000 (got %dx%d)", s.Columns, s.Rows)
	}
	// Proxy() memoises into the config; doing it once here keeps
	// concurrent probes from racing on it.
	s.proxy = c.ProxyConfig.Proxy()
	return nil
}

func init() {
	Register("ttyd_ws", Spec{
		Settings: func() config.Settings {
			return &TTYDWSSettings{
				HTTPClientConfig:          config.NewHTTPClientConfig(false),
				FetchToken:                true,
				ValidHandshakeStatusCodes: []int{http.StatusSwitchingProtocols},
				Columns:                   80,
				Rows:                      24,
				ReadLimit:                 DefaultTTYDReadLimit,
			}
		},
		Probe: probeTTYDWS,
		Via:   true,
	})
}

// ttydHeaderCapture ends a chain of prometheus/common's auth round trippers
// so the upgrade gets exactly the headers an HTTP request would.
type ttydHeaderCapture struct{ header http.Header }

func (c *ttydHeaderCapture) RoundTrip(r *http.Request) (*http.Response, error) {
	c.header = r.Header
	return &http.Response{StatusCode: http.StatusOK, Body: http.NoBody, Request: r}, nil
}

func ttydUpgradeHeader(ctx context.Context, s *TTYDWSSettings, base *url.URL) (http.Header, error) {
	c := s.HTTPClientConfig.HTTPClientConfig
	capture := &ttydHeaderCapture{}
	var rt http.RoundTripper = capture
	if c.HTTPHeaders != nil {
		rt = pconfig.NewHeadersRoundTripper(c.HTTPHeaders, rt)
	}
	if c.Authorization != nil {
		var cred pconfig.SecretReader = pconfig.NewInlineSecret(string(c.Authorization.Credentials))
		if c.Authorization.CredentialsFile != "" {
			cred = pconfig.NewFileSecret(c.Authorization.CredentialsFile)
		}
		rt = pconfig.NewAuthorizationCredentialsRoundTripper(c.Authorization.Type, cred, rt)
	}
	if ba := c.BasicAuth; ba != nil {
		var user, pass pconfig.SecretReader = pconfig.NewInlineSecret(ba.Username), pconfig.NewInlineSecret(string(ba.Password))
		if ba.UsernameFile != "" {
			user = pconfig.NewFileSecret(ba.UsernameFile)
		}
		if ba.PasswordFile != "" {
			pass = pconfig.NewFileSecret(ba.PasswordFile)
		}
		rt = pconfig.NewBasicAuthRoundTripper(user, pass, rt)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base.String(), nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("User-Agent", UserAgent)
	for k, v := range s.Headers {
		req.Header.Set(k, v)
	}
	resp, err := rt.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	resp.Body.Close()
	h := capture.header.Clone()
	// gorilla sets these itself and refuses duplicates.
	for _, k := range []string{"Upgrade", "Connection", "Sec-Websocket-Key", "Sec-Websocket-Version", "Sec-Websocket-Extensions", "Sec-Websocket-Protocol"} {
		h.Del(k)
	}
	return h, nil
}

// ttydProxyRequest is the request gorilla hands its Proxy function for
// the upgrade: the http(s) form of the /ws URL with the upgrade's Host.
func ttydProxyRequest(ctx context.Context, base *url.URL, header http.Header) *http.Request {
	u := base.JoinPath("ws")
	req := (&http.Request{Method: http.MethodGet, URL: u, Host: u.Host, Header: header}).WithContext(ctx)
	if h := header.Get("Host"); h != "" {
		req.Host = h
	}
	return req
}

// ttydWSURL derives ws(s)://host/<base path>/ws from the http(s) base.
func ttydWSURL(base *url.URL) *url.URL {
	u := base.JoinPath("ws")
	u.Scheme = map[string]string{"http": "ws", "https": "wss"}[base.Scheme]
	return u
}

// ttydSession is one ttyd WebSocket session and what it showed.
type ttydSession struct {
	ctx    context.Context
	conn   *websocket.Conn
	logger *slog.Logger
	frames map[string]int
	// output after the last reset, capped at ttydExpectWindow.
	output    []byte
	sawOutput bool
	closeCode int // from the server; 1006 when it dropped TCP
	closing   bool
	// failed: gorilla's read errors are sticky, so nothing more can be read.
	failed bool
	buf    []byte
	lease  *Lease
}

func (t *ttydSession) record(msg []byte) {
	kind := "other"
	if len(msg) > 0 {
		switch msg[0] {
		case '0':
			kind = "output"
			t.sawOutput = true
			t.output = append(t.output, msg[1:]...)
			if n := len(t.output); n > ttydExpectWindow {
				t.output = append(t.output[:0], t.output[n-ttydExpectWindow:]...)
			}
		case '1':
			kind = "title"
		case '2':
			kind = "preferences"
		}
	}
	t.frames[kind]++
}

// read reads one message by deadline. A false return says why the session
// is over (or that the deadline passed) and has been logged; at level
// Error unless the session was ending anyway.
func (t *ttydSession) read(deadline time.Time, what string) bool {
	if err := t.conn.SetReadDeadline(deadline); err != nil {
		t.logger.Error("setting read deadline", "err", err)
		return false
	}
	// One buffer for the session's messages, its growth taken from the
	// body budget: read_limit bounds a message, the budget all probes.
	_, r, err := t.conn.NextReader()
	if err == nil {
		t.buf, err = readInto(t.buf[:0], r, t.lease)
	}
	if err == nil {
		t.record(t.buf)
		return true
	}
	t.failed = true
	var ce *websocket.CloseError
	var ne net.Error
	if t.ctx.Err() != nil {
		// The probe's own context closed the connection under us.
		t.logger.Error("probe ended (deadline or cancellation)", "while", what)
		return false
	}
	if t.closing {
		switch {
		case errors.As(err, &ce):
			t.closeCode = ce.Code
			t.logger.Debug("server answered the close frame", "code", ce.Code)
		case errors.As(err, &ne) && ne.Timeout():
			t.logger.Warn("server did not answer the close frame in time")
		default:
			t.closeCode = websocket.CloseAbnormalClosure
			t.logger.Debug("server hung up after the close frame", "err", err)
		}
		return false
	}
	switch {
	case errors.As(err, &ce):
		t.closeCode = ce.Code
		if ce.Code == websocket.ClosePolicyViolation {
			t.logger.Error("server closed with 1008 (policy violation): ttyd refused the AuthToken; the token or basic_auth credentials are wrong", "while", what)
		} else {
			t.logger.Error("server closed the session", "code", ce.Code, "reason", ce.Text, "while", what)
		}
	case errors.Is(err, websocket.ErrReadLimit):
		t.logger.Error("server message exceeds read_limit", "while", what)
	case errors.As(err, &ne) && ne.Timeout():
		t.logger.Error("nothing from the server before the probe deadline", "while", what)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed):
		t.closeCode = websocket.CloseAbnormalClosure
		t.logger.Error("server dropped the connection without a close frame (child exited or ttyd hung up)", "while", what)
	default:
		t.closeCode = websocket.CloseAbnormalClosure
		t.logger.Error("reading from the server failed", "while", what, "err", err)
	}
	return false
}

func probeTTYDWS(ctx context.Context, target string, module config.Module, reg *Metrics, logger *slog.Logger, env Env) bool {
	s, ok := module.Settings.(*TTYDWSSettings)
	if !ok {
		logger.Error("module settings are not ttyd_ws settings")
		return false
	}
	base, err := ttydBaseURL(target)
	if err != nil {
		logger.Error("bad target", "err", err)
		return false
	}
	deadline, ok := ctx.Deadline()
	if !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Duration(module.Timeout))
		defer cancel()
		deadline, _ = ctx.Deadline()
	}

	phases := gaugeVec(reg, "probe_ttyd_ws_duration_seconds", "Duration of each phase of the terminal session.", "phase")
	g := func(name, help string) prometheus.Gauge { return gauge(reg, name, help) }
	routed := func(v bool) {
		g("probe_ttyd_ws_routed", "0 when the reverse proxy answered its own \"404 page not found\" (no router), else 1.").Set(boolValue(v))
	}

	// 1. The token, as the browser fetches it.
	var (
		token string
		kept  net.Conn // the token request's connection, for the upgrade
	)
	if s.FetchToken {
		var keep *ttydKeep
		if base.Scheme == "http" && s.proxy == nil {
			keep = &ttydKeep{g: env.Guard}
		}
		res, err := fetchTTYDToken(ctx, base, s.HTTPClientConfig, s.Headers, DefaultTTYDBodySizeLimit, logger, env, keep)
		if keep != nil {
			if err == nil && res.Received {
				kept = keep.take(ctx)
			} else {
				keep.discard()
			}
		}
		if res != nil {
			phases.WithLabelValues("token").Set(res.Duration.Seconds())
		}
		received := g("probe_ttyd_ws_token_received", "1 when fetch_token got 200 with a JSON string \"token\".")
		switch {
		case err != nil:
			logger.Error("token request failed", "err", err)
		case res.Unrouted:
			routed(false)
			logger.Error("token: reverse proxy answered 404 page not found: no router for this host/path")
		case !res.Received:
			logger.Error("token: unexpected status", "status", res.StatusCode, "hint", ttydStatusHint(res.StatusCode))
		}
		if err != nil || !res.Received {
			return false
		}
		received.Set(1)
		token = res.Token
		logger.Debug("token received")
	}

	// 2. The upgrade. Every connection is closed when ctx ends so no read
	// or handshake can outlive the probe.
	header, err := ttydUpgradeHeader(ctx, s, base)
	if err != nil {
		logger.Error("building upgrade headers", "err", err)
		return false
	}
	var tlsConfig *tls.Config
	if base.Scheme == "https" {
		if tlsConfig, err = pconfig.NewTLSConfigWithContext(ctx, &s.HTTPClientConfig.TLSConfig); err != nil {
			logger.Error("building TLS config", "err", err)
			return false
		}
	}
	// The guard dials (and closes at the deadline) every connection,
	// the proxy's included; the destination behind a proxy is checked here.
	dial := env.Guard.DialContext
	if kept != nil {
		dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
			if c := kept; c != nil {
				kept = nil
				return c, nil
			}
			return env.Guard.DialContext(ctx, network, addr)
		}
	}
	dialer := &websocket.Dialer{
		NetDialContext:  dial,
		TLSClientConfig: tlsConfig,
		Proxy:           s.proxy,
		Subprotocols:    []string{"tty"},
	}
	wsURL := ttydWSURL(base)
	if err := env.Guard.Destination(ctx, ttydProxyRequest(ctx, base, header), s.proxy); err != nil {
		logger.Error("upgrade refused before connecting", "err", err)
		return false
	}
	logger.Debug("upgrading", "url", wsURL.String())
	start := time.Now()
	// gorilla reads the upgrade's answer (and a proxy's CONNECT answer)
	// without a size bound; the guard's connections give it one. TLS
	// handshakes on the way count too, hence the room above the headers.
	unlimit := env.Guard.LimitHeaders(4*MaxResponseHeaderBytes + headerReadAhead)
	reused := kept != nil
	conn, resp, err := dialer.DialContext(ctx, wsURL.String(), header)
	if err != nil && resp == nil && reused && ctx.Err() == nil {
		// The server may have closed the token request's connection as
		// the upgrade went out; a fresh one tells that from a refusal.
		logger.Debug("upgrade on the token request's connection got no answer; trying a fresh connection", "err", err)
		conn, resp, err = dialer.DialContext(ctx, wsURL.String(), header)
	}
	unlimit()
	phases.WithLabelValues("handshake").Set(time.Since(start).Seconds())
	statusG := g("probe_ttyd_ws_handshake_status_code", "HTTP status of the upgrade (0 = no HTTP answer).")
	upgradedG := g("probe_ttyd_ws_upgraded", "1 when the upgrade succeeded (101).")
	if err != nil {
		if resp == nil {
			var ne net.Error
			switch {
			// gorilla puts the deadline on the connection itself, so it
			// usually fires as an i/o timeout just before ctx reports it.
			case ctx.Err() != nil || errors.As(err, &ne) && ne.Timeout():
				logger.Error("upgrade did not finish before the probe deadline", "err", err)
			case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
				logger.Error("connection closed during the upgrade with no HTTP answer: ttyd refuses this way (basic auth missing or wrong on /ws, max clients or --once reached, -O origin mismatch)")
			default:
				logger.Error("upgrade failed", "err", err)
			}
			return false
		}
		statusG.Set(float64(resp.StatusCode))
		body, _ := io.ReadAll(resp.Body) // gorilla kept at most 1 KiB
		unrouted := ttydIsUnrouted(resp.StatusCode, resp.Header.Get("Content-Type"), body)
		routed(!unrouted)
		switch {
		case unrouted:
			logger.Error("upgrade: reverse proxy answered 404 page not found: no router for this host/path (is a proxy replica missing its routes?)")
			return false
		case !slices.Contains(s.ValidHandshakeStatusCodes, resp.StatusCode):
			logger.Error("upgrade refused", "status", resp.StatusCode, "valid_handshake_status_codes", s.ValidHandshakeStatusCodes, "hint", ttydStatusHint(resp.StatusCode))
			return false
		}
		logger.Info("upgrade answered as configured; routed, no session", "status", resp.StatusCode)
		return true
	}
	defer conn.Close()
	statusG.Set(float64(resp.StatusCode))
	routed(true)
	upgradedG.Set(1)
	sess := &ttydSession{ctx: ctx, conn: conn, logger: logger, frames: map[string]int{"output": 0, "title": 0, "preferences": 0}, lease: env.Bodies.Lease()}
	defer sess.lease.Release()
	conn.SetReadLimit(int64(s.ReadLimit))
	success := ttydSessionRun(ctx, s, sess, token, deadline, reg, phases, g)

	framesG := newGaugeVec("probe_ttyd_ws_frames_received", "Server frames received, by type.", "type")
	reg.MustRegister(framesG)
	for k, n := range sess.frames {
		framesG.WithLabelValues(k).Set(float64(n))
	}
	if sess.closeCode != 0 {
		g("probe_ttyd_ws_close_code", "Close code the server sent (1006 = connection dropped without a close frame).").Set(float64(sess.closeCode))
	}
	if !slices.Contains(s.ValidHandshakeStatusCodes, http.StatusSwitchingProtocols) {
		logger.Error("upgrade succeeded but 101 is not in valid_handshake_status_codes: the terminal is reachable without the expected protection")
		return false
	}
	return success
}

// ttydSessionRun drives an upgraded session: init, first frame, send/expect,
// clean close. It reports whether the terminal proved to work.
func ttydSessionRun(ctx context.Context, s *TTYDWSSettings, sess *ttydSession, token string, deadline time.Time, reg *Metrics, phases *gaugeFamily, g func(string, string) prometheus.Gauge) bool {
	logger, conn := sess.logger, sess.conn
	accepted := conn.Subprotocol() == "tty"
	g("probe_ttyd_ws_subprotocol_accepted", "1 when the server echoed the tty subprotocol.").Set(boolValue(accepted))
	if !accepted {
		// ttyd answers such a connection with silence; waiting is pointless.
		logger.Error("server did not accept the tty subprotocol; this is not ttyd, or a proxy dropped Sec-WebSocket-Protocol", "subprotocol", conn.Subprotocol())
		ttydClose(ctx, sess, deadline, phases)
		return false
	}
	// Keep a little time back so the close frame still goes out when the
	// terminal stays silent until the deadline.
	reserve := min(250*time.Millisecond, time.Until(deadline)/10)
	readBy := deadline.Add(-reserve)

	// 3. Init message: the whole message is JSON, as the browser sends it.
	init, _ := json.Marshal(struct {
		AuthToken string `json:"AuthToken"`
		Columns   int    `json:"columns"`
		Rows      int    `json:"rows"`
	}{token, s.Columns, s.Rows})
	conn.SetWriteDeadline(deadline)
	if err := conn.WriteMessage(websocket.BinaryMessage, init); err != nil {
		logger.Error("sending init message", "err", err)
		return false
	}
	authRefused := g("probe_ttyd_ws_auth_refused", "1 when the server closed with 1008 (AuthToken refused).")
	firstSeen := g("probe_ttyd_ws_first_frame_seen", "1 when a server frame arrived after the init message.")

	// 4. First frame: the child process started on the server.
	start := time.Now()
	got := sess.read(readBy, "waiting for the first frame")
	phases.WithLabelValues("first_frame").Set(time.Since(start).Seconds())
	if sess.closeCode == websocket.ClosePolicyViolation {
		authRefused.Set(1)
	}
	if !got {
		if sess.closeCode == 0 {
			ttydClose(ctx, sess, deadline, phases)
		}
		return false
	}
	firstSeen.Set(1)
	g("probe_ttyd_ws_first_frame_seconds", "Time from the init message to the first server frame.").Set(time.Since(start).Seconds())
	logger.Info("terminal session started", "first_frame_seconds", time.Since(start).Seconds())

	// 5. Input and expected output.
	ok := true
	if s.Send != "" || !s.Expect.IsZero() {
		ok = ttydExpect(s, sess, readBy, reg, phases)
	}
	// 6. Clean close, so ttyd hangs up the child.
	if sess.closeCode == 0 {
		ttydClose(ctx, sess, deadline, phases)
	}
	return ok
}

func ttydExpect(s *TTYDWSSettings, sess *ttydSession, readBy time.Time, reg *Metrics, phases *gaugeFamily) bool {
	logger, conn := sess.logger, sess.conn
	var matched prometheus.Gauge
	if !s.Expect.IsZero() {
		matched = newGauge("probe_ttyd_ws_expect_matched", "1 when the terminal output matched expect.")
		reg.MustRegister(matched)
	}
	start := time.Now()
	defer func() { phases.WithLabelValues("expect").Set(time.Since(start).Seconds()) }()
	if s.Send != "" {
		// Type only once the terminal has printed something (its prompt).
		for !sess.sawOutput {
			if !sess.read(readBy, "waiting for the prompt before sending input") {
				return false
			}
		}
		sess.output = sess.output[:0]
		conn.SetWriteDeadline(readBy)
		if err := conn.WriteMessage(websocket.BinaryMessage, append([]byte{'0'}, s.Send...)); err != nil {
			logger.Error("sending input", "err", err)
			return false
		}
		logger.Debug("input sent", "bytes", len(s.Send))
	}
	if matched == nil {
		return true
	}
	for !s.Expect.Match(sess.output) {
		if !sess.read(readBy, "waiting for output matching expect") {
			logger.Error("expected output not seen (a ttyd without -W drops input)", "expect", s.Expect.String())
			return false
		}
	}
	matched.Set(1)
	logger.Info("expected output seen", "expect", s.Expect.String())
	return true
}

// ttydCloseWait bounds how long a probe waits for the server's answer to
// its close frame; ttyd answers at once, a silent peer never does.
const ttydCloseWait = time.Second

// ttydClose sends a close frame, so ttyd hangs up the child, and waits
// briefly for the server's answer; frames still in flight are counted.
func ttydClose(ctx context.Context, sess *ttydSession, deadline time.Time, phases *gaugeFamily) {
	start := time.Now()
	defer func() { phases.WithLabelValues("close").Set(time.Since(start).Seconds()) }()
	sess.closing = true
	msg := websocket.FormatCloseMessage(websocket.CloseNormalClosure, "")
	if err := sess.conn.WriteControl(websocket.CloseMessage, msg, deadline); err != nil {
		sess.logger.Warn("sending close frame", "err", err)
		return
	}
	if sess.failed {
		sess.logger.Debug("close frame sent; not waiting for an answer after a failed read")
		return
	}
	waitBy := start.Add(ttydCloseWait)
	if deadline.Before(waitBy) {
		waitBy = deadline
	}
	for ctx.Err() == nil {
		if !sess.read(waitBy, "closing") {
			return
		}
	}
}
