package prober

import (
	"net/http"

	pconfig "github.com/prometheus/common/config"

	"github.com/greybox-probe/greybox/config"
)

// NewHTTPClient builds the client for one probe: the module's
// http_client_config, dialling only through the guard, and no connection
// reuse — a probe measures what a new client experiences.
func NewHTTPClient(cfg config.HTTPClientConfig, env Env, name string) (*http.Client, error) {
	opts := []pconfig.HTTPClientOption{pconfig.WithKeepAlivesDisabled(), pconfig.WithUserAgent(UserAgent)}
	if env.Guard != nil {
		opts = append(opts, pconfig.WithDialContextFunc(env.Guard.DialContext))
	}
	return pconfig.NewClientFromConfig(cfg.HTTPClientConfig, name, opts...)
}

// UserAgent is sent by every probe unless a module sets its own header.
var UserAgent = "greybox/dev"
