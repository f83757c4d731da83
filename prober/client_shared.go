package prober

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync"
	"time"

	pconfig "github.com/prometheus/common/config"

	"github.com/greybox-probe/greybox/config"
)

// sharedClient is an http module's client for plain-HTTP requests, built
// once per loaded module instead of once per probe (issue 13: building
// prometheus/common's client was a tenth of a fast probe's allocations).
// It is safe to share because keep-alives are off: net/http hands a
// connection to no other request then, so each request still dials its
// own, through the probe's guard, which it finds in the request's
// context. HTTPS requests are not shared: an HTTP/2 connection joins the
// transport's pool whatever keep-alives say, and another probe's request
// could ride it. Nor are modules with oauth2 (its token cache is a
// probe's) or a proxy.
type sharedClient struct {
	once   sync.Once
	client *http.Client
	err    error
}

type probeDialKey struct{}

type dialFunc = func(context.Context, string, string) (net.Conn, error)

// dialFromRequest dials with the dial of the probe the request is from.
func dialFromRequest(ctx context.Context, network, addr string) (net.Conn, error) {
	dial, ok := ctx.Value(probeDialKey{}).(dialFunc)
	if !ok {
		return nil, errors.New("shared HTTP transport: request without its probe's dial")
	}
	return dial(ctx, network, addr)
}

// probeClient returns a probe's client built on the module's shared
// one when the module allows it, else nil.
func (sc *sharedClient) probeClient(ctx context.Context, cfg config.HTTPClientConfig, env Env, name, ua string, dial dialFunc) (*http.Client, error) {
	if sc == nil || cfg.OAuth2 != nil || cfg.ProxyURL.URL != nil || cfg.ProxyFromEnvironment {
		return nil, nil
	}
	sc.once.Do(func() {
		sc.client, sc.err = pconfig.NewClientFromConfig(cfg.HTTPClientConfig, name,
			pconfig.WithUserAgent(ua), pconfig.WithDialContextFunc(dialFromRequest), pconfig.WithKeepAlivesDisabled())
		if sc.err == nil && bare(cfg.HTTPClientConfig) {
			// common's client is still built above: it checks the
			// module's TLS files as before and gives the client its
			// redirect policy. Only its transport is replaced; ProbeHTTP
			// sets the User-Agent on its request itself.
			sc.client.Transport = bareTransport()
		}
	})
	if sc.err != nil {
		return nil, sc.err
	}
	client := *sc.client // its CheckRedirect (follow_redirects) and timeouts
	client.Transport = &guardTransport{g: env.Guard, dial: dial, next: &splitTransport{
		shared: sc.client.Transport,
		own: func() (*http.Client, error) {
			return newHTTPClient(ctx, cfg, env, name, ua, false, dial)
		},
	}}
	return &client, nil
}

// bare reports whether common would wrap nothing but the User-Agent
// around a plain-HTTP transport for cfg (no credentials, headers, oauth2 or
// proxy): the shared client is then bareTransport, and the User-Agent the
// request's own (ProbeHTTP sets it; common's wrapper would clone the
// request to set it again).
func bare(cfg pconfig.HTTPClientConfig) bool {
	return cfg.BasicAuth == nil && cfg.Authorization == nil && cfg.BearerToken == "" && cfg.BearerTokenFile == "" &&
		cfg.OAuth2 == nil && cfg.HTTPHeaders == nil && cfg.ProxyURL.URL == nil && !cfg.ProxyFromEnvironment
}

// bareTransport is the transport common builds for a plain-HTTP client
// with keep-alives off, less the go-conntrack wrapper common puts around
// every dial: its counters land in a registry greybox never serves, and its
// x/net/trace event log cost 6.5 KB, an eighth of a plain probe's
// allocations, per connection (issue 13). The settings that matter over
// plain HTTP are common's.
func bareTransport() *http.Transport {
	return &http.Transport{
		DialContext:           dialFromRequest,
		DisableKeepAlives:     true,
		DisableCompression:    true, // the prober asks for and decodes compression itself
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
}

// splitTransport sends plain-HTTP requests through the module's shared
// transport (the guardTransport above it has put the probe's dial in their
// context), and the rest through a client of the probe's own, built when
// the first such request (an HTTPS redirect, say) comes.
type splitTransport struct {
	shared http.RoundTripper
	own    func() (*http.Client, error)
	ownRT  http.RoundTripper
}

func (t *splitTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme == "http" {
		return t.shared.RoundTrip(req)
	}
	if t.ownRT == nil {
		c, err := t.own()
		if err != nil {
			if req.Body != nil {
				_ = req.Body.Close()
			}
			return nil, err
		}
		t.ownRT = c.Transport
	}
	return t.ownRT.RoundTrip(req)
}

func (t *splitTransport) CloseIdleConnections() {
	if c, ok := t.ownRT.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}
