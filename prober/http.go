package prober

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptrace"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/greybox-probe/greybox/config"
)

// HTTPSettings is the `http:` section of a module.
type HTTPSettings struct {
	Method  string         `yaml:"method,omitempty"`
	Headers config.Headers `yaml:"headers,omitempty"`
	Body    string         `yaml:"body,omitempty"`
	// ValidStatusCodes defaults to any 2xx.
	ValidStatusCodes           []int                   `yaml:"valid_status_codes,omitempty"`
	FailIfBodyMatchesRegexp    []config.Regexp         `yaml:"fail_if_body_matches_regexp,omitempty"`
	FailIfBodyNotMatchesRegexp []config.Regexp         `yaml:"fail_if_body_not_matches_regexp,omitempty"`
	FailIfSSL                  bool                    `yaml:"fail_if_ssl,omitempty"`
	FailIfNotSSL               bool                    `yaml:"fail_if_not_ssl,omitempty"`
	BodySizeLimit              config.Bytes            `yaml:"body_size_limit,omitempty"`
	HTTPClientConfig           config.HTTPClientConfig `yaml:"http_client_config,omitempty"`
}

// DefaultBodySizeLimit bounds what a probe reads of a body.
const DefaultBodySizeLimit = 10 << 20

// HTTPClient is the module's client config, for the handler's target check.
func (s *HTTPSettings) HTTPClient() *config.HTTPClientConfig { return &s.HTTPClientConfig }

func (s *HTTPSettings) Validate() error {
	s.Method = strings.ToUpper(s.Method)
	if s.Method == "" {
		s.Method = http.MethodGet
	}
	for _, c := range s.ValidStatusCodes {
		if c < 100 || c > 599 {
			return fmt.Errorf("valid_status_codes: %d is not an HTTP status code", c)
		}
	}
	if s.FailIfSSL && s.FailIfNotSSL {
		return errors.New("fail_if_ssl and fail_if_not_ssl cannot both be set")
	}
	if s.BodySizeLimit == 0 {
		s.BodySizeLimit = DefaultBodySizeLimit
	}
	return s.HTTPClientConfig.Validate()
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
// checks status, TLS and body.
func ProbeHTTP(ctx context.Context, target string, module config.Module, reg *prometheus.Registry, logger *slog.Logger, env Env) bool {
	s := module.Settings.(*HTTPSettings)
	var (
		statusCode    = gauge(reg, "probe_http_status_code", "Response HTTP status code.")
		contentLength = gauge(reg, "probe_http_content_length", "Length of the response body as announced by Content-Length (-1 if unknown).")
		bodyBytes     = gauge(reg, "probe_http_body_bytes", "Bytes of the response body read, up to body_size_limit.")
		truncated     = gauge(reg, "probe_http_body_truncated", "1 if the body was larger than body_size_limit.")
		redirects     = gauge(reg, "probe_http_redirects", "Number of redirects followed.")
		isSSL         = gauge(reg, "probe_http_ssl", "1 if the final response came over TLS.")
		version       = gauge(reg, "probe_http_version", "HTTP version of the response (1.1, 2).")
		regexFailed   = gauge(reg, "probe_failed_due_to_regex", "1 if a body regexp check failed.")
		phases        = prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "probe_http_duration_seconds", Help: "Duration of each phase of the HTTP request, in seconds.",
		}, []string{"phase"})
	)
	reg.MustRegister(phases)
	for _, p := range []string{"resolve", "connect", "tls", "processing", "transfer"} {
		phases.WithLabelValues(p)
	}

	u, err := ParseHTTPTarget(target)
	if err != nil {
		logger.Error("invalid target", "err", err)
		return false
	}
	client, err := NewHTTPClient(ctx, s.HTTPClientConfig, env, "http_probe", false)
	if err != nil {
		logger.Error("building HTTP client failed", "err", err)
		return false
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
	}
	req, err := http.NewRequestWithContext(ctx, s.Method, u.String(), body)
	if err != nil {
		logger.Error("building request failed", "err", err)
		return false
	}
	for k, v := range s.Headers {
		if strings.EqualFold(k, "Host") {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	tr := &httpPhases{}
	req = req.WithContext(httptrace.WithClientTrace(ctx, tr.trace()))

	logger.Info("making HTTP request", "method", s.Method, "url", u.Redacted())
	resp, err := client.Do(req)
	// The guard resolves every name (and pins the answer for the dial), so
	// its lookups are the resolve phase.
	phases.WithLabelValues("resolve").Set(env.Guard.LookupDuration().Seconds())
	if err != nil {
		logger.Error("HTTP request failed", "phase", tr.phase(), "err", err)
		recordPhases(phases, tr, time.Time{})
		return false
	}
	defer resp.Body.Close()

	lease := env.Bodies.Lease()
	defer lease.Release()
	n, tooBig, regexOK, readErr := readBody(resp.Body, int64(s.BodySizeLimit), s.FailIfBodyMatchesRegexp, s.FailIfBodyNotMatchesRegexp, lease, logger)
	recordPhases(phases, tr, time.Now())
	statusCode.Set(float64(resp.StatusCode))
	contentLength.Set(float64(resp.ContentLength))
	bodyBytes.Set(float64(n))
	version.Set(float64(resp.ProtoMajor) + float64(resp.ProtoMinor)/10)
	logger.Info("received HTTP response", "status_code", resp.StatusCode, "proto", resp.Proto, "body_bytes", n)

	success := true
	if !statusValid(resp.StatusCode, s.ValidStatusCodes) {
		logger.Error("invalid HTTP status code", "status_code", resp.StatusCode, "valid", describeCodes(s.ValidStatusCodes))
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
	if !regexOK {
		regexFailed.Set(1)
		success = false
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

// readBody drains up to limit bytes and applies the body regexps. The
// regexps need the body in memory, so they only run within the limit.
func readBody(r io.Reader, limit int64, mustNot, must []config.Regexp, lease *Lease, logger *slog.Logger) (n int64, tooBig, regexOK bool, err error) {
	needBody := len(mustNot) > 0 || len(must) > 0
	var buf []byte
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
		return n, tooBig, true, err
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
	return n, tooBig, regexOK, nil
}

func recordPhases(g *prometheus.GaugeVec, p *httpPhases, end time.Time) {
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
