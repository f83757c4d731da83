package main

import (
	"fmt"
	"net/url"
	"strings"
)

// webPaths checks --web.external-url and --web.route-prefix as Prometheus
// reads them: the prefix defaults to the external URL's path, and both are
// normalised to "/path" without a trailing slash ("" for the root).
func webPaths(external, prefix string) (*url.URL, string, error) {
	var u *url.URL
	if external != "" {
		var err error
		u, err = url.Parse(external)
		if err != nil {
			return nil, "", fmt.Errorf("--web.external-url: %v", err)
		}
		if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
			return nil, "", fmt.Errorf("--web.external-url: %q must be an absolute http:// or https:// URL", external)
		}
		if u.RawQuery != "" || u.Fragment != "" {
			return nil, "", fmt.Errorf("--web.external-url: %q must not have a query or fragment", external)
		}
		u.Path = strings.TrimRight(u.Path, "/")
	}
	if prefix == "" && u != nil {
		prefix = u.Path
	}
	if prefix != "" {
		if !strings.HasPrefix(prefix, "/") {
			prefix = "/" + prefix
		}
		if strings.ContainsAny(prefix, "?#") {
			return nil, "", fmt.Errorf("--web.route-prefix: %q must be a path", prefix)
		}
		prefix = strings.TrimRight(prefix, "/")
	}
	return u, prefix, nil
}
