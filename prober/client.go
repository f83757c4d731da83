package prober

import (
	"context"
	"net"
	"net/http"
	"net/url"

	pconfig "github.com/prometheus/common/config"

	"github.com/greybox-probe/greybox/config"
)

// NewHTTPClient builds the client for one probe: the module's
// http_client_config, every request checked and every connection dialled
// by the guard, and no connection reuse unless keepAlive (a probe measures
// what a new client experiences). An oauth2 token_url is a destination
// too: it is checked here, and its request (which prometheus/common makes
// on a context of its own) dials through the guard like the rest.
func NewHTTPClient(ctx context.Context, cfg config.HTTPClientConfig, env Env, name string, keepAlive bool) (*http.Client, error) {
	return newHTTPClient(ctx, cfg, env, name, UserAgent, keepAlive, env.Guard.DialContext)
}

// newHTTPClient is NewHTTPClient with the User-Agent every request (the
// oauth2 token request too) carries, and the dial to use: the guard's, or
// one that keeps its promises (http's chosen address and source).
// prometheus/common sets the User-Agent after the prober's own headers,
// so an http module's User-Agent header reaches here as ua.
func newHTTPClient(ctx context.Context, cfg config.HTTPClientConfig, env Env, name, ua string, keepAlive bool, dial func(context.Context, string, string) (net.Conn, error)) (*http.Client, error) {
	c := cfg.HTTPClientConfig
	// Proxy() memoises into c, a copy, so the transport common builds and
	// the guard's check use the same choice of proxy.
	proxy := ProxyFunc(c.ProxyConfig.Proxy())
	opts := []pconfig.HTTPClientOption{pconfig.WithUserAgent(ua), pconfig.WithDialContextFunc(dial)}
	if !keepAlive {
		opts = append(opts, pconfig.WithKeepAlivesDisabled())
	}
	if c.OAuth2 != nil {
		// A copy of its own: common memoises the token request's proxy
		// into it, and the module's is shared by concurrent probes.
		o := *c.OAuth2
		c.OAuth2 = &o
		if err := checkURL(ctx, env.Guard, o.TokenURL, ProxyFunc(o.ProxyConfig.Proxy()), "oauth2 token_url"); err != nil {
			return nil, err
		}
	}
	client, err := pconfig.NewClientFromConfig(c, name, opts...)
	if err != nil {
		return nil, err
	}
	client.Transport = env.Guard.Transport(client.Transport, proxy)
	return client, nil
}

// checkURL runs a URL that a config names (not a request a probe builds)
// through the guard's destination check.
func checkURL(ctx context.Context, g *Guard, raw string, proxy ProxyFunc, what string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return err
	}
	req := (&http.Request{Method: http.MethodPost, URL: u, Host: u.Host, Header: http.Header{}}).WithContext(ctx)
	if err := g.Destination(ctx, req, proxy); err != nil {
		return &destinationError{what: what, err: err}
	}
	return nil
}

type destinationError struct {
	what string
	err  error
}

func (e *destinationError) Error() string { return e.what + ": " + e.err.Error() }
func (e *destinationError) Unwrap() error { return e.err }

// UserAgent is sent by every probe unless a module sets its own header.
var UserAgent = "greybox/dev"
