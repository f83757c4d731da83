package prober

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"time"

	"github.com/gorilla/websocket"
	pconfig "github.com/prometheus/common/config"

	"github.com/greybox-probe/greybox/config"
)

// WebsocketSettings is the `websocket:` section of a module:
// blackbox_exporter's websocket_probe (http_config, headers in
// prometheus/common's values/secrets/files form, query_response, address
// selection), plus read_limit.
type WebsocketSettings struct {
	HTTPConfig    config.HTTPClientConfig `yaml:"http_config,omitempty"`
	Headers       pconfig.Headers         `yaml:"headers,omitempty"`
	QueryResponse []QueryResponse         `yaml:"query_response,omitempty"`
	IPProtocol    `yaml:",inline"`
	// ReadLimit bounds one message; blackbox reads any size.
	ReadLimit config.Bytes `yaml:"read_limit,omitempty"`

	// client is http_config with headers merged in, so the loader resolves
	// and checks header files and TLS files like any client config's.
	client config.HTTPClientConfig
	proxy  ProxyFunc
}

// DefaultWebsocketReadLimit bounds one message.
const DefaultWebsocketReadLimit config.Bytes = 1 << 20

// HTTPClient is the merged client config, for the loader's file checks and
// the handler's target check.
func (s *WebsocketSettings) HTTPClient() *config.HTTPClientConfig { return &s.client }

func (s *WebsocketSettings) Validate() error {
	if err := s.IPProtocol.validate(); err != nil {
		return err
	}
	c := &s.HTTPConfig.HTTPClientConfig
	if err := c.Validate(); err != nil {
		return fmt.Errorf("http_config: %w", err)
	}
	switch {
	case c.OAuth2 != nil:
		return errors.New("http_config.oauth2 cannot be applied to a WebSocket upgrade; use basic_auth, authorization or headers")
	case c.BasicAuth != nil && (c.BasicAuth.UsernameRef != "" || c.BasicAuth.PasswordRef != ""),
		c.Authorization != nil && c.Authorization.CredentialsRef != "":
		return errors.New("http_config: secret references (*_ref) are not supported; use the value or a *_file")
	case len(c.ProxyConnectHeader) > 0:
		return errors.New("http_config.proxy_connect_header is not supported for WebSocket upgrades")
	}
	// headers may set Authorization (blackbox's own examples do), which
	// common's http_headers refuses; only the handshake's own are refused.
	for i, qr := range s.QueryResponse {
		switch {
		case qr.ExpectBytes != "":
			return fmt.Errorf("query_response[%d]: expect_bytes is a tcp option; websocket matches messages with expect", i)
		case len(qr.Labels) > 0:
			return fmt.Errorf("query_response[%d]: labels is a tcp option (blackbox ignores it here)", i)
		case qr.StartTLS:
			return fmt.Errorf("query_response[%d]: starttls has no meaning inside a WebSocket (blackbox ignores it); use a wss:// target", i)
		}
	}
	if s.ReadLimit == 0 {
		s.ReadLimit = DefaultWebsocketReadLimit
	}
	s.client = s.HTTPConfig
	merged := &pconfig.Headers{Headers: map[string]pconfig.Header{}}
	if h := s.HTTPConfig.HTTPHeaders; h != nil {
		for k, v := range h.Headers {
			merged.Headers[k] = copyHeader(v)
		}
	}
	for k, v := range s.Headers.Headers {
		m := merged.Headers[k]
		v = copyHeader(v)
		m.Values = append(m.Values, v.Values...)
		m.Secrets = append(m.Secrets, v.Secrets...)
		m.Files = append(m.Files, v.Files...)
		merged.Headers[k] = m
	}
	for k := range merged.Headers {
		switch http.CanonicalHeaderKey(k) {
		case "Upgrade", "Connection", "Sec-Websocket-Key", "Sec-Websocket-Version", "Sec-Websocket-Extensions":
			return fmt.Errorf("headers: %q is set by the WebSocket handshake itself", k)
		}
	}
	if len(merged.Headers) > 0 {
		s.client.HTTPHeaders = merged
	}
	// Proxy() memoises into the config; once here, not racing per probe.
	s.proxy = ProxyFunc(s.client.ProxyConfig.Proxy())
	return nil
}

// copyHeader copies the slices SetDirectory rewrites in place, so the
// module as written keeps its own paths.
func copyHeader(h pconfig.Header) pconfig.Header {
	return pconfig.Header{
		Values:  append([]string(nil), h.Values...),
		Secrets: append([]pconfig.Secret(nil), h.Secrets...),
		Files:   append([]string(nil), h.Files...),
	}
}

func init() {
	Register("websocket", Spec{
		Settings: func() config.Settings {
			return &WebsocketSettings{HTTPConfig: config.NewHTTPClientConfig(true), IPProtocol: defaultIPProtocol(), ReadLimit: DefaultWebsocketReadLimit}
		},
		Probe: probeWebsocket,
		CheckTarget: func(ctx context.Context, target string, m config.Module, g *Guard) error {
			u, err := websocketTarget(target)
			if err != nil {
				return err
			}
			if m.AllowedTargets.Empty() {
				return nil
			}
			s := m.Settings.(*WebsocketSettings)
			return forbiddenOnly(g.Destination(ctx, websocketProxyRequest(ctx, u, nil), s.proxy))
		},
	})
}

// websocketTarget is a ws:// or wss:// URL.
func websocketTarget(target string) (*url.URL, error) {
	u, err := url.Parse(target)
	if err != nil {
		return nil, &TargetError{Reason: fmt.Sprintf("target is not a URL: %v", err)}
	}
	if u.Scheme != "ws" && u.Scheme != "wss" || badHost(u.Hostname()) {
		return nil, &TargetError{Reason: fmt.Sprintf("target %q must be a ws:// or wss:// URL with a host", oneLine(target))}
	}
	if p := u.Port(); p != "" {
		if err := checkPort(p); err != nil {
			return nil, &TargetError{Reason: fmt.Sprintf("target %q: %v", oneLine(target), err)}
		}
	}
	return u, nil
}

// websocketProxyRequest is the http(s) form of the upgrade, as the guard
// checks it and as gorilla hands it to the Proxy function.
func websocketProxyRequest(ctx context.Context, u *url.URL, header http.Header) *http.Request {
	h := *u
	h.Scheme = map[string]string{"ws": "http", "wss": "https"}[u.Scheme]
	return (&http.Request{Method: http.MethodGet, URL: &h, Host: h.Host, Header: header}).WithContext(ctx)
}

// headerCapture ends a chain of prometheus/common's round trippers so the
// upgrade carries exactly the headers (auth, files, secrets) an HTTP
// request with this config would.
type headerCapture struct{ header http.Header }

func (c *headerCapture) RoundTrip(r *http.Request) (*http.Response, error) {
	c.header = r.Header
	return &http.Response{StatusCode: http.StatusOK, Body: http.NoBody, Request: r}, nil
}

func websocketHeader(ctx context.Context, c *pconfig.HTTPClientConfig, u *url.URL) (http.Header, error) {
	capture := &headerCapture{}
	var rt http.RoundTripper = capture
	if c.HTTPHeaders != nil {
		rt = pconfig.NewHeadersRoundTripper(c.HTTPHeaders, rt)
	}
	if a := c.Authorization; a != nil {
		var cred pconfig.SecretReader = pconfig.NewInlineSecret(string(a.Credentials))
		if a.CredentialsFile != "" {
			cred = pconfig.NewFileSecret(a.CredentialsFile)
		}
		rt = pconfig.NewAuthorizationCredentialsRoundTripper(a.Type, cred, rt)
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
	req := websocketProxyRequest(ctx, u, http.Header{"User-Agent": {UserAgent}})
	resp, err := rt.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	resp.Body.Close()
	h := capture.header.Clone()
	// gorilla sets these itself and refuses duplicates.
	for _, k := range []string{"Upgrade", "Connection", "Sec-Websocket-Key", "Sec-Websocket-Version", "Sec-Websocket-Extensions"} {
		h.Del(k)
	}
	return h, nil
}

func probeWebsocket(ctx context.Context, target string, module config.Module, reg *Metrics, logger *slog.Logger, env Env) bool {
	s := module.Settings.(*WebsocketSettings)
	statusCode := gauge(reg, "probe_websocket_status_code", "HTTP status of the upgrade (0 = no HTTP answer).")
	upgraded := gauge(reg, "probe_websocket_connection_upgraded", "1 if the connection was upgraded to a WebSocket.")
	regexFailed := gauge(reg, "probe_websocket_failed_due_to_regex", "1 if an expect regexp did not match a message.")
	phases := newGaugeVec("probe_websocket_duration_seconds", "Duration of the WebSocket probe by phase, in seconds.", "phase")
	reg.MustRegister(phases)
	for _, p := range []string{"resolve", "connect", "processing", "transfer"} {
		phases.WithLabelValues(p)
	}

	u, err := websocketTarget(target)
	if err != nil {
		logger.Error("invalid target", "err", err)
		return false
	}
	header, err := websocketHeader(ctx, &s.client.HTTPClientConfig, u)
	if err != nil {
		logger.Error("building the upgrade headers failed", "err", err)
		return false
	}
	if err := env.Guard.Destination(ctx, websocketProxyRequest(ctx, u, header), s.proxy); err != nil {
		logger.Error("upgrade refused before connecting", "err", err)
		return false
	}
	var proxied bool
	if s.proxy != nil {
		p, err := s.proxy(websocketProxyRequest(ctx, u, header))
		proxied = err == nil && p != nil
	}
	// Without a proxy the address blackbox's rules pick is the one
	// dialled; through one, the proxy is (the guard checked both).
	dial := env.Guard.DialContext
	if !proxied {
		addr, err := chooseAddr(ctx, env.Guard, u.Hostname(), s.IPProtocol, reg, logger)
		if err != nil {
			phases.WithLabelValues("resolve").Set(env.Guard.LookupDuration().Seconds())
			logger.Error("resolving the target failed", "err", err)
			return false
		}
		dial = func(ctx context.Context, network, a string) (net.Conn, error) {
			_, port, err := net.SplitHostPort(a)
			if err != nil {
				return nil, err
			}
			return dialAddr(ctx, env.Guard, network, addr, port, netip.Addr{})
		}
	}
	phases.WithLabelValues("resolve").Set(env.Guard.LookupDuration().Seconds())

	var tlsConfig *tls.Config
	if u.Scheme == "wss" {
		if tlsConfig, err = pconfig.NewTLSConfigWithContext(ctx, &s.client.TLSConfig); err != nil {
			logger.Error("building the TLS config failed", "err", err)
			return false
		}
		if tlsConfig.ServerName == "" {
			// The dial is to an address; verification is for the name.
			tlsConfig.ServerName = u.Hostname()
		}
	}
	var connect time.Duration
	dialer := &websocket.Dialer{
		NetDialContext: func(ctx context.Context, network, a string) (net.Conn, error) {
			start := time.Now()
			c, err := dial(ctx, network, a)
			connect = time.Since(start)
			return c, err
		},
		TLSClientConfig: tlsConfig,
		Proxy:           s.proxy,
	}
	if v := header.Get("Sec-Websocket-Protocol"); v != "" {
		header.Del("Sec-Websocket-Protocol")
		dialer.Subprotocols = []string{v}
	}
	logger.Debug("upgrading", "url", u.Redacted())
	start := time.Now()
	// gorilla reads the upgrade's answer without a size bound; the
	// guard's connections give it one.
	unlimit := env.Guard.LimitHeaders(4*MaxResponseHeaderBytes + headerReadAhead)
	conn, resp, err := dialer.DialContext(ctx, u.String(), header)
	unlimit()
	phases.WithLabelValues("connect").Set(connect.Seconds())
	phases.WithLabelValues("processing").Set(max(time.Since(start)-connect, 0).Seconds())
	if resp != nil {
		statusCode.Set(float64(resp.StatusCode))
	}
	if err != nil {
		switch {
		case resp != nil:
			logger.Error("upgrade refused", "status", resp.StatusCode, "err", err)
		case isTimeout(ctx, err):
			logger.Error("upgrade did not finish before the probe deadline", "err", err)
		default:
			logger.Error("upgrade failed", "err", err)
		}
		return false
	}
	defer conn.Close()
	upgraded.Set(1)
	conn.SetReadLimit(int64(s.ReadLimit))
	deadline, _ := ctx.Deadline()
	lease := env.Bodies.Lease()
	defer lease.Release()

	transferStart := time.Now()
	ok := true
	for i, qr := range s.QueryResponse {
		send := qr.Send
		if !qr.Expect.IsZero() {
			// Every read has the probe's deadline: blackbox's has none,
			// so a server silent after the upgrade holds it indefinitely.
			_ = conn.SetReadDeadline(deadline)
			msg, err := readMessage(conn, lease)
			if err != nil {
				logger.Error("reading a message failed", "step", i, "waiting_for", qr.Expect.String(), "err", describeWSErr(ctx, err, s.ReadLimit))
				ok = false
				break
			}
			match := qr.Expect.FindSubmatchIndex(msg)
			if match == nil {
				regexFailed.Set(1)
				logger.Error("expect regexp did not match the message", "step", i, "regexp", qr.Expect.String(), "message", truncateForLog(msg))
				ok = false
				break
			}
			logger.Debug("expect matched", "step", i, "regexp", qr.Expect.String())
			send = string(qr.Expect.Expand(nil, []byte(send), msg, match))
		}
		if send != "" {
			_ = conn.SetWriteDeadline(deadline)
			if err := conn.WriteMessage(websocket.TextMessage, []byte(send)); err != nil {
				logger.Error("sending a message failed", "step", i, "err", describeWSErr(ctx, err, s.ReadLimit))
				ok = false
				break
			}
		}
	}
	if len(s.QueryResponse) > 0 {
		phases.WithLabelValues("transfer").Set(time.Since(transferStart).Seconds())
	}
	// A close frame, so the server ends the session now rather than at
	// its own timeout; bounded, the server may be the silent kind.
	closeBy := time.Now().Add(time.Second)
	if !deadline.IsZero() && deadline.Before(closeBy) {
		closeBy = deadline
	}
	_ = conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), closeBy)
	return ok
}

func readMessage(conn *websocket.Conn, lease *Lease) ([]byte, error) {
	_, r, err := conn.NextReader()
	if err != nil {
		return nil, err
	}
	return readInto(nil, r, lease)
}

func describeWSErr(ctx context.Context, err error, limit config.Bytes) error {
	switch {
	case errors.Is(err, websocket.ErrReadLimit):
		return fmt.Errorf("a message larger than read_limit (%d bytes)", int64(limit))
	case isTimeout(ctx, err):
		return fmt.Errorf("probe deadline reached: %w", err)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("connection closed mid-message: %w", err)
	}
	return err
}

// truncateForLog keeps a log line readable whatever the server sent.
func truncateForLog(b []byte) string {
	const most = 256
	if len(b) > most {
		return fmt.Sprintf("%q… (%d bytes)", b[:most], len(b))
	}
	return fmt.Sprintf("%q", b)
}

// ClientConfigKey is blackbox's name for the client config.
func (s *WebsocketSettings) ClientConfigKey() string { return "http_config" }
