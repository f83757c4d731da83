// Package secretfile checks, at config load, every file a prometheus/common
// HTTP client config reads at request time (passwords, tokens, TLS keys,
// header files). A missing file, a directory or a FIFO would otherwise
// pass --config.check and fail (or, for a FIFO, hang) every probe or query.
package secretfile

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	pconfig "github.com/prometheus/common/config"

	"github.com/greybox-probe/greybox/internal/regularfile"
)

// Check returns the first unusable file c names, as
// "<prefix>.basic_auth.password_file: <path>: <why>".
func Check(c *pconfig.HTTPClientConfig, prefix string) error {
	type ref struct{ key, path string }
	var refs []ref
	add := func(key, path string) {
		if path != "" {
			refs = append(refs, ref{key, path})
		}
	}
	if b := c.BasicAuth; b != nil {
		add("basic_auth.username_file", b.UsernameFile)
		add("basic_auth.password_file", b.PasswordFile)
	}
	if a := c.Authorization; a != nil {
		add("authorization.credentials_file", a.CredentialsFile)
	}
	add("bearer_token_file", c.BearerTokenFile)
	if o := c.OAuth2; o != nil {
		add("oauth2.client_secret_file", o.ClientSecretFile)
		add("oauth2.client_certificate_key_file", o.ClientCertificateKeyFile)
		tlsFiles(&o.TLSConfig, "oauth2.tls_config.", add)
	}
	tlsFiles(&c.TLSConfig, "tls_config.", add)
	if h := c.HTTPHeaders; h != nil {
		for _, name := range slices.Sorted(maps.Keys(h.Headers)) {
			for _, f := range h.Headers[name].Files {
				add("http_headers."+name+".files", f)
			}
		}
	}
	for _, r := range refs {
		if err := regularfile.Check(r.path); err != nil {
			return fmt.Errorf("%s%s: %w", dotted(prefix), r.key, err)
		}
	}
	return nil
}

func tlsFiles(t *pconfig.TLSConfig, prefix string, add func(key, path string)) {
	add(prefix+"ca_file", t.CAFile)
	add(prefix+"cert_file", t.CertFile)
	add(prefix+"key_file", t.KeyFile)
}

func dotted(prefix string) string {
	if prefix == "" || strings.HasSuffix(prefix, ".") {
		return prefix
	}
	return prefix + "."
}
