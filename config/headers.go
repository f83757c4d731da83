package config

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"golang.org/x/net/http/httpguts"
	"gopkg.in/yaml.v3"
)

// Headers is a prober's plain `headers:` map. Header values often carry
// credentials (a forward-auth session Cookie, an API key), so wherever the
// config is printed — /config, debug output, history — every value is
// shown as <secret> except those of headers that never carry one (Host,
// Origin, Accept…). For credentials prefer http_client_config.http_headers
// with `secrets:` or `files:`.
type Headers map[string]string

// plainHeaders are shown as written: they select or describe content and
// never authenticate.
var plainHeaders = []string{
	"Accept", "Accept-Encoding", "Accept-Language", "Cache-Control", "Connection",
	"Content-Type", "Host", "Origin", "Pragma", "User-Agent",
}

// ShowsValue reports whether name's value is printed rather than redacted.
func (Headers) ShowsValue(name string) bool {
	return slices.Contains(plainHeaders, http.CanonicalHeaderKey(name))
}

func (h *Headers) UnmarshalYAML(n *yaml.Node) error {
	var m map[string]string
	if err := n.Decode(&m); err != nil {
		return &lineError{n.Line, errors.New("headers must be a map of header names to string values")}
	}
	for k, v := range m {
		if !httpguts.ValidHeaderFieldName(k) {
			return &lineError{n.Line, fmt.Errorf("headers: %q is not a valid header name", k)}
		}
		if !httpguts.ValidHeaderFieldValue(v) {
			// The value may be a secret: name the header, not the value.
			return &lineError{n.Line, fmt.Errorf("headers: the value of %q has characters a header cannot carry (CR, LF or other control bytes)", k)}
		}
	}
	*h = m
	return nil
}

func (h Headers) MarshalYAML() (any, error) {
	if h == nil {
		return nil, nil
	}
	out := make(map[string]string, len(h))
	for k, v := range h {
		if h.ShowsValue(k) || strings.TrimSpace(v) == "" {
			out[k] = v
		} else {
			out[k] = "<secret>"
		}
	}
	return out, nil
}
