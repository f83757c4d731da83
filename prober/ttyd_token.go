package prober

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/greybox-probe/greybox/config"
)

// TTYDTokenSettings is the ttyd_token section of a module.
type TTYDTokenSettings struct {
	// HTTPClientConfig: basic auth for ttyd -c, TLS, proxy, cookies via
	// http_headers. Redirects are not followed unless the user says so, so a
	// forward-auth login redirect shows as the 302 it is.
	HTTPClientConfig config.HTTPClientConfig `yaml:"http_client_config"`
	// Headers are set on the request; "Host" sets the request's host.
	Headers config.Headers `yaml:"headers,omitempty"`
	// ValidStatusCodes the /token answer may have.
	ValidStatusCodes []int `yaml:"valid_status_codes"`
	// RedirectHost pins where a 3xx must point (host or host:port), e.g.
	// the forward-auth domain; anything else is a failure.
	RedirectHost string `yaml:"redirect_host,omitempty"`
	// BodySizeLimit caps how much of the answer is read.
	BodySizeLimit config.Bytes `yaml:"body_size_limit"`
}

// DefaultTTYDBodySizeLimit bounds /token answers; the real one is ~100 bytes.
const DefaultTTYDBodySizeLimit config.Bytes = 64 << 10

// HTTPClient is the module's client config, for the handler's target check.
func (s *TTYDTokenSettings) HTTPClient() *config.HTTPClientConfig { return &s.HTTPClientConfig }

func (s *TTYDTokenSettings) Validate() error {
	if err := validateTTYDHTTP(&s.HTTPClientConfig, s.ValidStatusCodes, "body_size_limit", s.BodySizeLimit); err != nil {
		return err
	}
	if s.RedirectHost != "" {
		if strings.ContainsAny(s.RedirectHost, "/?#@ ") {
			return fmt.Errorf("redirect_host %q must be a host name or host:port, not a URL", s.RedirectHost)
		}
		s.RedirectHost = strings.ToLower(s.RedirectHost)
	}
	return nil
}

func validateTTYDHTTP(c *config.HTTPClientConfig, codes []int, limitName string, limit config.Bytes) error {
	if err := c.Validate(); err != nil {
		return fmt.Errorf("http_client_config: %w", err)
	}
	for _, code := range codes {
		if code < 100 || code > 599 {
			return fmt.Errorf("status code %d is not an HTTP status", code)
		}
	}
	if limit <= 0 {
		return fmt.Errorf("%s must be positive (e.g. 64KiB)", limitName)
	}
	return nil
}

func init() {
	Register("ttyd_token", Spec{
		Settings: func() config.Settings {
			return &TTYDTokenSettings{
				HTTPClientConfig: config.NewHTTPClientConfig(false),
				ValidStatusCodes: []int{http.StatusOK},
				BodySizeLimit:    DefaultTTYDBodySizeLimit,
			}
		},
		Probe: probeTTYDToken,
		Via:   true,
	})
}

// ttydTokenResult is one GET <base>/token. Token is a secret: it must
// never reach a log line, a metric or an error.
type ttydTokenResult struct {
	StatusCode int
	// Unrouted: the reverse proxy's own 404, no router matched.
	Unrouted bool
	// Received: 200 with a JSON string "token".
	Received bool
	Token    string
	Location *url.URL
	Duration time.Duration
}

// Traefik (and Go's http.NotFound) answer exactly this when no router matches.
const ttydUnroutedBody = "404 page not found"

func ttydIsUnrouted(status int, contentType string, body []byte) bool {
	if status != http.StatusNotFound || strings.TrimRight(string(body), "\r\n") != ttydUnroutedBody {
		return false
	}
	mt, _, err := mime.ParseMediaType(contentType)
	return contentType == "" || err == nil && mt == "text/plain"
}

// ttydBaseURL parses a probe target: an http(s) base URL whose path is
// ttyd's -b base path.
func ttydBaseURL(target string) (*url.URL, error) {
	u, err := url.Parse(WithScheme(target))
	if err != nil {
		return nil, fmt.Errorf("target is not a URL: %w", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("target %q must be an http:// or https:// base URL", u.Redacted())
	}
	if u.User != nil {
		return nil, errors.New("target must not carry credentials; use http_client_config.basic_auth")
	}
	u.Path = strings.TrimRight(u.Path, "/")
	u.RawPath, u.RawQuery, u.Fragment = "", "", ""
	return u, nil
}

// fetchTTYDToken does GET <base>/token with the module's client settings.
// With keep, the request keeps its connection open for keep.take.
func fetchTTYDToken(ctx context.Context, base *url.URL, hc config.HTTPClientConfig, headers map[string]string, limit config.Bytes, logger *slog.Logger, env Env, keep *ttydKeep) (*ttydTokenResult, error) {
	var (
		client *http.Client
		err    error
	)
	if keep != nil {
		client, err = newHTTPClient(ctx, hc, env, "ttyd_token", UserAgent, true, keep.dial)
	} else {
		client, err = NewHTTPClient(ctx, hc, env, "ttyd_token", false)
	}
	if err != nil {
		return nil, fmt.Errorf("building HTTP client: %w", err)
	}
	if keep == nil {
		defer client.CloseIdleConnections()
	}
	tokenURL := base.JoinPath("token")
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, tokenURL.String(), nil)
	if err != nil {
		return nil, err
	}
	for k, v := range headers {
		if strings.EqualFold(k, "Host") {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	logger.Debug("requesting token", "url", tokenURL.String())
	start := time.Now()
	res := &ttydTokenResult{}
	resp, err := client.Do(req)
	if err != nil {
		res.Duration = time.Since(start)
		return res, fmt.Errorf("GET /token: %w", err)
	}
	defer resp.Body.Close()
	res.StatusCode = resp.StatusCode
	lease := env.Bodies.Lease()
	defer lease.Release()
	body, err := readInto(nil, io.LimitReader(resp.Body, int64(limit)+1), lease)
	res.Duration = time.Since(start)
	if err != nil {
		return res, fmt.Errorf("reading /token body: %w", err)
	}
	if int64(len(body)) > int64(limit) {
		return res, fmt.Errorf("/token body exceeds body_size_limit (%d bytes)", limit)
	}
	logger.Debug("token answer", "status", resp.StatusCode, "content_type", resp.Header.Get("Content-Type"), "server", resp.Header.Get("Server"), "body_bytes", len(body))
	res.Unrouted = ttydIsUnrouted(resp.StatusCode, resp.Header.Get("Content-Type"), body)
	if loc := resp.Header.Get("Location"); loc != "" && resp.StatusCode >= 300 && resp.StatusCode < 400 {
		if l, err := resp.Request.URL.Parse(loc); err == nil {
			res.Location = l
		}
	}
	if resp.StatusCode != http.StatusOK {
		return res, nil
	}
	var doc map[string]json.RawMessage
	if err := json.Unmarshal(body, &doc); err != nil {
		// The JSON error quotes no input, so the token cannot leak here.
		return res, fmt.Errorf("/token body is not a JSON object: %v", err)
	}
	raw, ok := doc["token"]
	if !ok {
		return res, errors.New(`/token JSON has no "token" field`)
	}
	if err := json.Unmarshal(raw, &res.Token); err != nil {
		return res, errors.New(`/token JSON "token" field is not a string`)
	}
	res.Received = true
	return res, nil
}

// ttydRedirectHostMatches compares a redirect's host with a pinned host or
// host:port, ignoring case and the scheme's default port.
func ttydRedirectHostMatches(loc *url.URL, pin string) bool {
	if loc == nil {
		return false
	}
	if strings.Contains(pin, ":") && !strings.HasPrefix(pin, "[") || strings.HasPrefix(pin, "[") && strings.Contains(pin, "]:") {
		port := loc.Port()
		if port == "" {
			port = map[string]string{"http": "80", "https": "443"}[loc.Scheme]
		}
		return strings.EqualFold(net.JoinHostPort(loc.Hostname(), port), pin)
	}
	return strings.EqualFold(loc.Hostname(), strings.Trim(pin, "[]"))
}

func probeTTYDToken(ctx context.Context, target string, module config.Module, reg *Metrics, logger *slog.Logger, env Env) bool {
	s, ok := module.Settings.(*TTYDTokenSettings)
	if !ok {
		logger.Error("module settings are not ttyd_token settings")
		return false
	}
	base, err := ttydBaseURL(target)
	if err != nil {
		logger.Error("bad target", "err", err)
		return false
	}
	statusG := newGauge("probe_ttyd_token_status_code", "HTTP status code of GET <base>/token (0 = no answer).")
	routedG := newGauge("probe_ttyd_token_routed", "0 when the reverse proxy answered its own \"404 page not found\" (no router), else 1.")
	receivedG := newGauge("probe_ttyd_token_received", "1 when /token answered 200 with a JSON string \"token\".")
	durationG := newGauge("probe_ttyd_token_duration_seconds", "Time of the /token request, headers and body.")
	reg.MustRegister(statusG, receivedG, durationG)

	res, err := fetchTTYDToken(ctx, base, s.HTTPClientConfig, s.Headers, s.BodySizeLimit, logger, env, nil)
	if res != nil {
		durationG.Set(res.Duration.Seconds())
		statusG.Set(float64(res.StatusCode))
		if res.StatusCode != 0 {
			reg.MustRegister(routedG)
			routedG.Set(boolValue(!res.Unrouted))
		}
		receivedG.Set(boolValue(res.Received))
	}
	if err != nil {
		logger.Error("token request failed", "err", err)
		return false
	}
	if res.Unrouted {
		logger.Error("reverse proxy answered 404 page not found: no router for this host/path (is a proxy replica missing its routes?)")
		return false
	}
	if !slices.Contains(s.ValidStatusCodes, res.StatusCode) {
		logger.Error("invalid status code", "status", res.StatusCode, "valid_status_codes", s.ValidStatusCodes, "hint", ttydStatusHint(res.StatusCode))
		return false
	}
	if res.StatusCode == http.StatusOK && !res.Received {
		return false
	}
	if res.StatusCode >= 300 && res.StatusCode < 400 && s.RedirectHost != "" {
		allowed := ttydRedirectHostMatches(res.Location, s.RedirectHost)
		g := newGauge("probe_ttyd_token_redirect_allowed", "1 when a 3xx answer redirected to the pinned redirect_host.")
		reg.MustRegister(g)
		g.Set(boolValue(allowed))
		if !allowed {
			where := "<no Location>"
			if res.Location != nil {
				where = res.Location.Host
			}
			logger.Error("redirect to unexpected host", "location_host", where, "redirect_host", s.RedirectHost)
			return false
		}
	}
	if res.Received {
		logger.Info("token received", "status", res.StatusCode)
	} else {
		logger.Info("token endpoint answered as configured", "status", res.StatusCode)
	}
	return true
}

func ttydStatusHint(code int) string {
	switch code {
	case http.StatusUnauthorized:
		return "ttyd -c wants basic auth: set http_client_config.basic_auth"
	case http.StatusProxyAuthRequired:
		return "ttyd -H wants the auth proxy's user header"
	case http.StatusNotFound:
		return "routed, but the server has no /token here: check the base path (ttyd -b)"
	case http.StatusFound, http.StatusSeeOther, http.StatusTemporaryRedirect:
		return "redirected, usually to a login page by forward auth: list the code as valid (ttyd_token: valid_status_codes, pin redirect_host; ttyd_ws: valid_handshake_status_codes)"
	}
	return ""
}
