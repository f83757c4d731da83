package config

import (
	pconfig "github.com/prometheus/common/config"
	"gopkg.in/yaml.v3"
)

// HTTPClientConfig is prometheus/common's client config (TLS, auth, proxy,
// follow_redirects; secrets redacted when marshalled), except that a
// follow_redirects the user did not write keeps the prober's own default.
// common's unmarshaller resets it to true, which would silently turn a
// ttyd_token forward-auth 302 into a followed login page.
type HTTPClientConfig struct {
	pconfig.HTTPClientConfig `yaml:",inline"`
}

// NewHTTPClientConfig returns common's defaults with followRedirects set.
func NewHTTPClientConfig(followRedirects bool) HTTPClientConfig {
	c := HTTPClientConfig{pconfig.DefaultHTTPClientConfig}
	c.FollowRedirects = followRedirects
	return c
}

func (c *HTTPClientConfig) UnmarshalYAML(unmarshal func(any) error) error {
	def := c.FollowRedirects
	var seen struct {
		FollowRedirects *bool                `yaml:"follow_redirects"`
		Rest            map[string]yaml.Node `yaml:",inline"`
	}
	if err := unmarshal(&seen); err != nil {
		return err
	}
	if err := unmarshal(&c.HTTPClientConfig); err != nil {
		return err
	}
	if seen.FollowRedirects == nil {
		c.FollowRedirects = def
	}
	return nil
}

func (c HTTPClientConfig) MarshalYAML() (any, error) { return c.HTTPClientConfig, nil }
