package prober

import (
	"compress/flate"
	"compress/gzip"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/netip"
	"net/textproto"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/andybalholm/brotli"
	"github.com/prometheus/client_golang/prometheus"
	pconfig "github.com/prometheus/common/config"

	"github.com/greybox-probe/greybox/config"
	"github.com/greybox-probe/greybox/internal/regularfile"
)

// HTTPSettings is the `http:` section of a module: greybox's keys and
// blackbox_exporter's http_probe keys.
type HTTPSettings struct {
	Method  string         `yaml:"method,omitempty"`
	Headers config.Headers `yaml:"headers,omitempty"`
	Body    string         `yaml:"body,omitempty"`
	// BodyFile is read once at load (blackbox reads it for every probe).
	BodyFile string `yaml:"body_file,omitempty"`
	// ValidStatusCodes defaults to any 2xx.
	ValidStatusCodes            []int                   `yaml:"valid_status_codes,omitempty"`
	ValidHTTPVersions           []string                `yaml:"valid_http_versions,omitempty"`
	FailIfBodyMatchesRegexp     []config.Regexp         `yaml:"fail_if_body_matches_regexp,omitempty"`
	FailIfBodyNotMatchesRegexp  []config.Regexp         `yaml:"fail_if_body_not_matches_regexp,omitempty"`
	FailIfBodyJSONMatchesCEL    string                  `yaml:"fail_if_body_json_matches_cel,omitempty"`
	FailIfBodyJSONNotMatchesCEL string                  `yaml:"fail_if_body_json_not_matches_cel,omitempty"`
	FailIfHeaderMatches         []HeaderMatch           `yaml:"fail_if_header_matches,omitempty"`
	FailIfHeaderNotMatches      []HeaderMatch           `yaml:"fail_if_header_not_matches,omitempty"`
	FailIfSSL                   bool                    `yaml:"fail_if_ssl,omitempty"`
	FailIfNotSSL                bool                    `yaml:"fail_if_not_ssl,omitempty"`
	BodySizeLimit               config.Bytes            `yaml:"body_size_limit,omitempty"`
	Compression                 string                  `yaml:"compression,omitempty"`
	PreferredIPProtocol         string                  `yaml:"preferred_ip_protocol,omitempty"`
	IPProtocolFallback          *bool                   `yaml:"ip_protocol_fallback,omitempty"`
	SourceIPAddress             string                  `yaml:"source_ip_address,omitempty"`
	SkipResolvePhaseWithProxy   bool                    `yaml:"skip_resolve_phase_with_proxy,omitempty"`
	NoFollowRedirects           *bool                   `yaml:"no_follow_redirects,omitempty"`
	EnableHTTP3                 bool                    `yaml:"enable_http3,omitempty"`
	HTTPClientConfig            config.HTTPClientConfig `yaml:"http_client_config,omitempty"`
	// Inline takes blackbox's spelling, where tls_config, basic_auth,
	// proxy_url … sit directly in the http section; UnmarshalYAML moves
	// them into HTTPClientConfig, so it is nil after load.
	Inline *pconfig.HTTPClientConfig `yaml:",inline"`

	// Built at load, so a probe without these options pays nothing.
	bodyFromFile   string
	selectAddr     bool // preferred_ip_protocol, ip_protocol_fallback or source_ip_address set
	ipProtocol     IPProtocol
	source         netip.Addr
	acceptEncoding string // sent when compression is set and headers do not say
	userAgent      string // the module's User-Agent header; "" for UserAgent
	celMatch       *celProgram
	celNotMatch    *celProgram
	shared         *sharedClient // plain-HTTP requests' client, built on first use
}

// HeaderMatch is blackbox's http_header_match_spec.
type HeaderMatch struct {
	Header       string        `yaml:"header,omitempty"`
	Regexp       config.Regexp `yaml:"regexp,omitempty"`
	AllowMissing bool          `yaml:"allow_missing,omitempty"`
}

// DefaultBodySizeLimit bounds what a probe reads of a body.
const DefaultBodySizeLimit = 10 << 20

// HTTPClient is the module's client config, for the handler's target check.
func (s *HTTPSettings) HTTPClient() *config.HTTPClientConfig { return &s.HTTPClientConfig }

func (s *HTTPSettings) UnmarshalYAML(unmarshal func(any) error) error {
	type plain HTTPSettings
	// common's defaults (follow_redirects and enable_http2 true) for keys
	// the inline spelling leaves out, as blackbox has them.
	inline := pconfig.DefaultHTTPClientConfig
	s.Inline = &inline
	if err := unmarshal((*plain)(s)); err != nil {
		return err
	}
	if reflect.DeepEqual(*s.Inline, pconfig.DefaultHTTPClientConfig) {
		s.Inline = nil
		return nil
	}
	if !reflect.DeepEqual(s.HTTPClientConfig, config.NewHTTPClientConfig(true)) {
		return errors.New("http_client_config and blackbox's inline client keys (tls_config, basic_auth, authorization, oauth2, proxy_url, follow_redirects, enable_http2, http_headers …) cannot both be used: write them in one place")
	}
	s.HTTPClientConfig = config.HTTPClientConfig{HTTPClientConfig: *s.Inline}
	s.Inline = nil
	return nil
}

var validHTTPVersions = []string{"HTTP/1.0", "HTTP/1.1", "HTTP/2.0"}

func (s *HTTPSettings) Validate() error {
	s.Method = strings.ToUpper(s.Method)
	if s.Method == "" {
		s.Method = http.MethodGet
	}
	s.shared = &sharedClient{}
	for _, c := range s.ValidStatusCodes {
		if c < 100 || c > 599 {
			return fmt.Errorf("valid_status_codes: %d is not an HTTP status code", c)
		}
	}
	if err := s.validateHTTP3(); err != nil {
		return err
	}
	for _, v := range s.ValidHTTPVersions {
		if !slices.Contains(validHTTPVersions, v) && !(s.EnableHTTP3 && v == "HTTP/3.0") {
			return fmt.Errorf("valid_http_versions: %q is not one of %s", v, strings.Join(validHTTPVersions, ", "))
		}
	}
	for key, list := range map[string][]HeaderMatch{"fail_if_header_matches": s.FailIfHeaderMatches, "fail_if_header_not_matches": s.FailIfHeaderNotMatches} {
		for i, h := range list {
			if h.Header == "" {
				return fmt.Errorf("%s[%d]: header must be set", key, i)
			}
			if h.Regexp.IsZero() {
				return fmt.Errorf("%s[%d]: regexp must be set", key, i)
			}
		}
	}
	if s.FailIfSSL && s.FailIfNotSSL {
		return errors.New("fail_if_ssl and fail_if_not_ssl cannot both be set")
	}
	if s.BodySizeLimit == 0 {
		// blackbox's 0 means unlimited; here a body is always bounded.
		s.BodySizeLimit = DefaultBodySizeLimit
	}
	if s.Body != "" && s.BodyFile != "" {
		return errors.New("body and body_file cannot both be set")
	}
	if s.NoFollowRedirects != nil {
		s.HTTPClientConfig.FollowRedirects = !*s.NoFollowRedirects
	}
	for k, v := range s.Headers {
		if textproto.CanonicalMIMEHeaderKey(k) == "User-Agent" {
			s.userAgent = string(v) // as in blackbox, the module's wins
		}
	}
	if err := s.validateCompression(); err != nil {
		return err
	}
	if s.PreferredIPProtocol != "" || s.IPProtocolFallback != nil || s.SourceIPAddress != "" {
		s.selectAddr = true
		s.ipProtocol = IPProtocol{PreferredIPProtocol: s.PreferredIPProtocol, IPProtocolFallback: s.IPProtocolFallback == nil || *s.IPProtocolFallback}
		if err := s.ipProtocol.validate(); err != nil {
			return err
		}
		var err error
		if s.source, err = parseSourceIP(s.SourceIPAddress); err != nil {
			return err
		}
	}
	var err error
	if s.celMatch, err = compileCEL("fail_if_body_json_matches_cel", s.FailIfBodyJSONMatchesCEL); err != nil {
		return err
	}
	if s.celNotMatch, err = compileCEL("fail_if_body_json_not_matches_cel", s.FailIfBodyJSONNotMatchesCEL); err != nil {
		return err
	}
	return s.HTTPClientConfig.Validate()
}

// ReadFiles reads body_file once at load, relative to the config file's
// directory (blackbox opens it for every probe, relative to its working
// directory, and only logs a failure).
func (s *HTTPSettings) ReadFiles(dir string) error {
	if s.BodyFile == "" {
		return nil
	}
	path := s.BodyFile
	if !filepath.IsAbs(path) {
		path = filepath.Join(dir, path)
	}
	b, err := regularfile.ReadFile(path, maxBodyFile)
	if err != nil {
		return fmt.Errorf("body_file: %w", err)
	}
	s.bodyFromFile = string(b)
	return nil
}

// maxBodyFile bounds body_file: it is held in memory for every probe.
const maxBodyFile = 16 << 20

// agent is the User-Agent the module's requests carry.
func (s *HTTPSettings) agent() string {
	if s.userAgent != "" {
		return s.userAgent
	}
	return UserAgent
}

// validateCompression checks compression and, as blackbox does, that an
// Accept-Encoding header the module sets accepts it.
func (s *HTTPSettings) validateCompression() error {
	s.Compression = strings.ToLower(s.Compression)
	switch s.Compression {
	case "", "gzip", "br", "deflate", "identity":
	default:
		return fmt.Errorf("compression %q must be one of gzip, br, deflate, identity", s.Compression)
	}
	for k, v := range s.Headers {
		if textproto.CanonicalMIMEHeaderKey(k) != "Accept-Encoding" {
			continue
		}
		if s.Compression != "" && !acceptsEncoding(string(v), s.Compression) {
			return fmt.Errorf("compression %s: header %s: %s does not accept it", s.Compression, k, v)
		}
		return nil
	}
	if s.Compression != "" {
		// prometheus/common's transport sends no Accept-Encoding, and a
		// server that negotiates would answer with identity, which the
		// decoder this option asks for then refuses.
		s.acceptEncoding = s.Compression
	}
	return nil
}

// acceptsEncoding: coding (or *) listed with a q-value other than 0.
func acceptsEncoding(header, coding string) bool {
	for _, part := range strings.Split(header, ",") {
		name, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		name = strings.ToLower(strings.TrimSpace(name))
		if name != coding && name != "*" {
			continue
		}
		q := 1.0
		for _, p := range strings.Split(params, ";") {
			if k, v, ok := strings.Cut(strings.TrimSpace(p), "="); ok && strings.EqualFold(strings.TrimSpace(k), "q") {
				if f, err := strconv.ParseFloat(strings.TrimSpace(v), 64); err == nil {
					q = f
				}
			}
		}
		if q > 0 {
			return true
		}
	}
	return false
}

func init() {
	Register("http", Spec{
		Settings: func() config.Settings {
			return &HTTPSettings{HTTPClientConfig: config.NewHTTPClientConfig(true)}
		},
		Probe: ProbeHTTP,
		Via:   true,
	})
}

// httpPhases times one request with httptrace; redirects add up. It also
// remembers the phase in progress, so a deadline can be blamed on the step
// that stalled (a TLS handshake that never completes vs. a slow answer).
type httpPhases struct {
	mu                                   sync.Mutex
	resolve, connect, tls, processing    time.Duration
	connectStart, tlsStart, wroteRequest time.Time
	firstByte                            time.Time
	current                              string
	tlsOpen                              bool
}

func (p *httpPhases) set(f func()) {
	p.mu.Lock()
	f()
	p.mu.Unlock()
}

func (p *httpPhases) trace() *httptrace.ClientTrace {
	return &httptrace.ClientTrace{
		ConnectStart: func(string, string) {
			p.set(func() { p.connectStart, p.current = time.Now(), "connect" })
		},
		ConnectDone: func(string, string, error) {
			p.set(func() { p.connect += time.Since(p.connectStart) })
		},
		TLSHandshakeStart: func() {
			p.set(func() { p.tlsStart, p.tlsOpen, p.current = time.Now(), true, "tls handshake" })
		},
		TLSHandshakeDone: func(tls.ConnectionState, error) {
			p.set(func() { p.tls += time.Since(p.tlsStart); p.tlsOpen = false })
		},
		WroteRequest: func(httptrace.WroteRequestInfo) {
			p.set(func() { p.wroteRequest, p.current = time.Now(), "waiting for the response headers" })
		},
		GotFirstResponseByte: func() {
			p.set(func() {
				p.firstByte = time.Now()
				p.processing += p.firstByte.Sub(p.wroteRequest)
				p.current = "reading the response headers"
			})
		},
	}
}

// phase names the step in progress, for error messages.
func (p *httpPhases) phase() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.current == "" {
		return "before connecting"
	}
	return p.current
}

// ProbeHTTP requests target once (following redirects if configured) and
// checks status, version, headers, TLS and body.
func ProbeHTTP(ctx context.Context, target string, module config.Module, reg *Metrics, logger *slog.Logger, env Env) bool {
	s := module.Settings.(*HTTPSettings)
	var (
		statusCode    = gauge(reg, "probe_http_status_code", "Response HTTP status code.")
		contentLength = gauge(reg, "probe_http_content_length", "Length of the response body as announced by Content-Length (-1 if unknown).")
		bodyBytes     = gauge(reg, "probe_http_body_bytes", "Bytes of the response body read as they came over the wire (compressed, with compression), up to body_size_limit.")
		uncompressed  = gauge(reg, "probe_http_uncompressed_body_length", "Length of the response body after decompression, up to body_size_limit.")
		truncated     = gauge(reg, "probe_http_body_truncated", "1 if the body was larger than body_size_limit.")
		redirects     = gauge(reg, "probe_http_redirects", "Number of redirects followed.")
		isSSL         = gauge(reg, "probe_http_ssl", "1 if the final response came over TLS.")
		version       = gauge(reg, "probe_http_version", "HTTP version of the response (1.1, 2, 3).")
		regexFailed   = gauge(reg, "probe_failed_due_to_regex", "1 if a body or header regexp check failed.")
		phases        = newGaugeVec("probe_http_duration_seconds", "Duration of each phase of the HTTP request, in seconds.", "phase")
		celFailed     prometheus.Gauge
	)
	reg.MustRegister(phases)
	for _, p := range []string{"resolve", "connect", "tls", "processing", "transfer"} {
		phases.WithLabelValues(p)
	}
	if s.celMatch != nil || s.celNotMatch != nil {
		celFailed = gauge(reg, "probe_failed_due_to_cel", "1 if a CEL body check failed.")
	}

	u, err := ParseHTTPTarget(target)
	if err != nil {
		logger.Error("invalid target", "err", err)
		return false
	}
	if s.EnableHTTP3 && u.Scheme == "http" {
		// As blackbox: HTTP/3 is over TLS only.
		logger.Warn("enable_http3: probing the http:// target over https://", "url", u.Redacted())
		u.Scheme = "https"
	}
	dial := env.Guard.DialContext
	if s.selectAddr {
		if dial, err = s.addressDial(ctx, u.Hostname(), reg, logger, env.Guard); err != nil {
			phases.WithLabelValues("resolve").Set(env.Guard.LookupDuration().Seconds())
			logger.Error("resolving the target failed", "err", err)
			return false
		}
	}
	var client *http.Client
	if !s.EnableHTTP3 {
		client, err = s.shared.probeClient(ctx, s.HTTPClientConfig, env, "http_probe", s.agent(), dial)
	}
	if client == nil && err == nil {
		client, err = newHTTPClient(ctx, s.HTTPClientConfig, env, "http_probe", s.agent(), false, dial)
	}
	if err != nil {
		logger.Error("building HTTP client failed", "err", err)
		return false
	}
	if s.EnableHTTP3 {
		closeH3, err := s.useHTTP3(ctx, client, env)
		if err != nil {
			logger.Error("building HTTP/3 client failed", "err", err)
			return false
		}
		defer closeH3()
	}
	if client.CheckRedirect == nil {
		client.CheckRedirect = func(req *http.Request, via []*http.Request) error {
			logger.Info("following redirect", "location", req.URL.Redacted())
			if len(via) >= 10 {
				return errors.New("stopped after 10 redirects")
			}
			redirects.Set(float64(len(via)))
			return nil
		}
	}

	var body io.Reader
	if s.Body != "" {
		body = strings.NewReader(s.Body)
	} else if s.bodyFromFile != "" {
		body = strings.NewReader(s.bodyFromFile)
	}
	tr := &httpPhases{}
	req, err := http.NewRequestWithContext(httptrace.WithClientTrace(ctx, tr.trace()), s.Method, u.String(), body)
	if err != nil {
		logger.Error("building request failed", "err", err)
		return false
	}
	req.Header["User-Agent"] = []string{s.agent()} // the module's header, if any, is among these
	for k, v := range s.Headers {
		if strings.EqualFold(k, "Host") {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	if s.acceptEncoding != "" {
		req.Header.Set("Accept-Encoding", s.acceptEncoding)
	}

	logLine(ctx, logger, slog.LevelInfo, "making HTTP request", "method", s.Method, "url", u.Redacted())
	resp, err := client.Do(req)
	// The guard resolves every name (and pins the answer for the dial), so
	// its lookups are the resolve phase.
	phases.WithLabelValues("resolve").Set(env.Guard.LookupDuration().Seconds())
	if !s.selectAddr {
		// blackbox's address metrics, from the connection Go's dialer made
		// (no ip6-first selection unless the module asks for it).
		recordConnectedAddr(reg, env.Guard.firstRemote(), env.Guard.LookupDuration())
	}
	if err != nil {
		logger.Error("HTTP request failed", "phase", tr.phase(), "err", err)
		recordPhases(phases, tr, time.Time{})
		return false
	}
	defer resp.Body.Close()

	success := true
	var (
		bodyReader io.Reader = resp.Body
		wire       *countingReader
	)
	if s.Compression != "" {
		// Decoded here, not by the transport, and bounded after decoding
		// below: body_size_limit is a limit on what is decompressed, so a
		// small bomb cannot make the probe hold gigabytes.
		wire = &countingReader{r: resp.Body}
		dec, err := decompressor(s.Compression, wire)
		if err != nil {
			logger.Error("response body cannot be decompressed", "compression", s.Compression, "content_encoding", resp.Header.Get("Content-Encoding"), "err", err)
			success = false
			bodyReader = strings.NewReader("")
		} else {
			bodyReader = dec
		}
	}

	headersOK := true
	if len(s.FailIfHeaderMatches) > 0 || len(s.FailIfHeaderNotMatches) > 0 {
		headersOK = matchHeaders(resp.Header, s, logger)
	}
	lease := env.Bodies.Lease()
	defer lease.Release()
	needJSON := s.celMatch != nil || s.celNotMatch != nil
	n, tooBig, regexOK, buf, readErr := readBody(bodyReader, int64(s.BodySizeLimit), s.FailIfBodyMatchesRegexp, s.FailIfBodyNotMatchesRegexp, needJSON, lease, logger)
	recordPhases(phases, tr, time.Now())
	statusCode.Set(float64(resp.StatusCode))
	contentLength.Set(float64(resp.ContentLength))
	uncompressed.Set(float64(n))
	if wire != nil {
		bodyBytes.Set(float64(wire.n))
	} else {
		bodyBytes.Set(float64(n))
	}
	version.Set(float64(resp.ProtoMajor) + float64(resp.ProtoMinor)/10)
	logLine(ctx, logger, slog.LevelInfo, "received HTTP response", "status_code", resp.StatusCode, "proto", resp.Proto, "body_bytes", n)
	if lm := resp.Header.Get("Last-Modified"); lm != "" {
		if t, err := http.ParseTime(lm); err == nil {
			gauge(reg, "probe_http_last_modified_timestamp_seconds", "Last-Modified of the response, as a Unix time.").Set(float64(t.Unix()))
		}
	}

	if !statusValid(resp.StatusCode, s.ValidStatusCodes) {
		logger.Error("invalid HTTP status code", "status_code", resp.StatusCode, "valid", describeCodes(s.ValidStatusCodes))
		success = false
	}
	if len(s.ValidHTTPVersions) > 0 && !slices.Contains(s.ValidHTTPVersions, resp.Proto) {
		logger.Error("invalid HTTP version", "version", resp.Proto, "valid", s.ValidHTTPVersions)
		success = false
	}
	if readErr != nil {
		logger.Error("reading body failed", "phase", "transfer", "err", readErr)
		success = false
	}
	if tooBig {
		truncated.Set(1)
		logger.Error("body larger than body_size_limit", "limit_bytes", int64(s.BodySizeLimit))
		success = false
	}
	if !regexOK || !headersOK {
		regexFailed.Set(1)
		success = false
	}
	if celFailed != nil {
		// A truncated or unreadable body is not judged: its JSON is cut.
		celOK := false
		if readErr == nil && !tooBig {
			var err error
			if celOK, err = checkCEL(ctx, buf, s.celMatch, s.celNotMatch); err != nil {
				logger.Error("CEL body check failed", "err", err)
			}
		}
		if !celOK {
			celFailed.Set(1)
			success = false
		}
	}
	if resp.TLS != nil {
		isSSL.Set(1)
		// blackbox's TLS metric set, shared with tcp and grpc; without a
		// verified chain there is no last-chain expiry to report.
		(&tlsMetrics{reg: reg}).record(*resp.TLS)
		if s.FailIfSSL {
			logger.Error("final response was TLS and fail_if_ssl is set")
			success = false
		}
	} else if s.FailIfNotSSL {
		logger.Error("final response was not TLS and fail_if_not_ssl is set")
		success = false
	}
	return success
}

// matchHeaders is blackbox's header check: a header with several values
// fails fail_if_header_matches if any matches, fail_if_header_not_matches
// if none does; a missing header fails unless allow_missing.
func matchHeaders(h http.Header, s *HTTPSettings, logger *slog.Logger) bool {
	ok := true
	check := func(specs []HeaderMatch, failOnMatch bool) {
		for _, spec := range specs {
			values := h.Values(spec.Header)
			if len(values) == 0 {
				if !spec.AllowMissing {
					logger.Error("missing required header", "header", spec.Header)
					ok = false
				}
				continue
			}
			matched := slices.ContainsFunc(values, spec.Regexp.MatchString)
			if matched && failOnMatch {
				logger.Error("header matched fail_if_header_matches", "header", spec.Header, "regexp", spec.Regexp.String(), "value_count", len(values))
				ok = false
			} else if !matched && !failOnMatch {
				logger.Error("header did not match fail_if_header_not_matches", "header", spec.Header, "regexp", spec.Regexp.String(), "value_count", len(values))
				ok = false
			}
		}
	}
	check(s.FailIfHeaderMatches, true)
	check(s.FailIfHeaderNotMatches, false)
	return ok
}

// decompressor is blackbox's choice of decoder; identity passes through.
func decompressor(algorithm string, r io.Reader) (io.Reader, error) {
	switch algorithm {
	case "gzip":
		return gzip.NewReader(r)
	case "deflate":
		return flate.NewReader(r), nil
	case "br":
		return brotli.NewReader(r), nil
	}
	return r, nil
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// addressDial resolves host through the guard, picks an address as
// blackbox does (probe_ip_protocol, probe_ip_addr_hash,
// probe_dns_lookup_time_seconds) and returns a dial that connects to it,
// from source_ip_address if set. URL, Host header and TLS server name stay
// the target's. Through a proxy with skip_resolve_phase_with_proxy the
// target is not resolved here; through a replica (via) the replica is what
// is dialled, so the choice does not apply.
func (s *HTTPSettings) addressDial(ctx context.Context, host string, reg *Metrics, logger *slog.Logger, g *Guard) (func(context.Context, string, string) (net.Conn, error), error) {
	if g.replica != "" {
		return g.DialContext, nil
	}
	c := s.HTTPClientConfig
	proxied := c.ProxyURL.URL != nil || c.ProxyFromEnvironment
	var chosen netip.Addr
	if !(s.SkipResolvePhaseWithProxy && proxied) {
		var err error
		if chosen, err = chooseAddr(ctx, g, host, s.ipProtocol, reg, logger); err != nil {
			return nil, err
		}
	}
	return func(ctx context.Context, network, address string) (net.Conn, error) {
		h, port, err := net.SplitHostPort(address)
		if err != nil {
			return nil, err
		}
		if chosen.IsValid() && strings.EqualFold(strings.Trim(h, "[]"), strings.Trim(host, "[]")) {
			return dialAddr(ctx, g, tcpNetwork(chosen), chosen, port, s.source)
		}
		if !s.source.IsValid() {
			return g.DialContext(ctx, network, address)
		}
		// A redirect to another host, or the proxy: from the source
		// address too, at an address of its family.
		addrs, err := g.Resolve(ctx, h)
		if err != nil {
			return nil, err
		}
		var errs []error
		for _, a := range addrs {
			if a.Is4() != s.source.Is4() {
				continue
			}
			conn, err := dialAddr(ctx, g, tcpNetwork(a), a, port, s.source)
			if err == nil {
				return conn, nil
			}
			errs = append(errs, err)
		}
		if len(errs) == 0 {
			return nil, fmt.Errorf("%s has no address of source_ip_address %s's family", h, s.source)
		}
		return nil, errors.Join(errs...)
	}, nil
}

func tcpNetwork(a netip.Addr) string {
	if a.Is4() {
		return "tcp4"
	}
	return "tcp6"
}

// readBody drains up to limit bytes and applies the body regexps. The
// regexps (and keep, for CEL) need the body in memory, so they only run
// within the limit.
func readBody(r io.Reader, limit int64, mustNot, must []config.Regexp, keep bool, lease *Lease, logger *slog.Logger) (n int64, tooBig, regexOK bool, buf []byte, err error) {
	needBody := keep || len(mustNot) > 0 || len(must) > 0
	if needBody {
		buf, err = readInto(nil, io.LimitReader(r, limit+1), lease)
		n = int64(len(buf))
	} else {
		n, err = io.Copy(io.Discard, io.LimitReader(r, limit+1))
	}
	tooBig = n > limit
	if tooBig {
		n = limit
		if needBody {
			buf = buf[:limit]
		}
	}
	if err != nil {
		return n, tooBig, true, buf, err
	}
	regexOK = true
	for _, re := range mustNot {
		if re.Match(buf) {
			logger.Error("body matched fail_if_body_matches_regexp", "regexp", re.String())
			regexOK = false
		}
	}
	for _, re := range must {
		if !re.Match(buf) {
			logger.Error("body did not match fail_if_body_not_matches_regexp", "regexp", re.String())
			regexOK = false
		}
	}
	return n, tooBig, regexOK, buf, nil
}

func recordPhases(g *gaugeFamily, p *httpPhases, end time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	tlsTime := p.tls
	if p.tlsOpen {
		// The handshake never finished: the time it took so far is the
		// answer to "where did the budget go".
		tlsTime += time.Since(p.tlsStart)
	}
	g.WithLabelValues("connect").Set(p.connect.Seconds())
	g.WithLabelValues("tls").Set(tlsTime.Seconds())
	g.WithLabelValues("processing").Set(p.processing.Seconds())
	if !end.IsZero() && !p.firstByte.IsZero() {
		g.WithLabelValues("transfer").Set(end.Sub(p.firstByte).Seconds())
	}
}

func earliestExpiry(cs *tls.ConnectionState) time.Time {
	var earliest time.Time
	for _, c := range cs.PeerCertificates {
		if earliest.IsZero() || c.NotAfter.Before(earliest) {
			earliest = c.NotAfter
		}
	}
	return earliest
}

// statusValid: an empty list means any 2xx.
func statusValid(code int, valid []int) bool {
	if len(valid) == 0 {
		return code >= 200 && code < 300
	}
	for _, v := range valid {
		if v == code {
			return true
		}
	}
	return false
}

func describeCodes(valid []int) string {
	if len(valid) == 0 {
		return "2xx"
	}
	return fmt.Sprint(valid)
}

// recordConnectedAddr registers probe_ip_protocol, probe_ip_addr_hash and
// probe_dns_lookup_time_seconds as blackbox names them, for the address
// of the probe's first connection; without one the first two are 0
// (blackbox reports the address it chose even when the connect fails).
func recordConnectedAddr(reg *Metrics, remote netip.Addr, lookup time.Duration) {
	m := newAddrMetrics(reg)
	m.lookup.Set(lookup.Seconds())
	if remote.IsValid() {
		m.set(remote)
	}
}
