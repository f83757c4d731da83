package prober

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strconv"
	"strings"

	"github.com/greybox-probe/greybox/config"
)

// HostnameSettings is implemented by the settings of probers whose requests
// can name another host than the target's: the /probe?hostname= parameter
// (blackbox_exporter's), for probing one backend by address while asking for
// the virtual host users ask for. The target stays what is dialled and what
// allowed_targets checks; the hostname goes in the Host header and the TLS
// server name (SNI and certificate verification).
type HostnameSettings interface {
	// WithHostname returns a copy of the settings that sends h; the
	// module's own settings are shared by concurrent probes and stay as
	// they are. It fails when the module pins another host.
	WithHostname(h Hostname) (config.Settings, error)
}

// Hostname is a validated hostname parameter.
type Hostname struct {
	// Host is the Host header: a name or address, with the port if given.
	Host string
	// ServerName is the TLS server name: Host without port or brackets.
	ServerName string
}

// maxHostnameLength is a DNS name (253) plus ":65535".
const maxHostnameLength = 253 + 6

var dnsNameRE = regexp.MustCompile(`^[a-z0-9_]([a-z0-9_-]{0,62})(\.[a-z0-9_]([a-z0-9_-]{0,62}))*\.?$`)

// ParseHostname validates a hostname parameter: a DNS name or IP address,
// optionally with a port; no scheme, path, credentials or spaces, so the
// value cannot smuggle anything into a request line or a header.
func ParseHostname(v string) (Hostname, error) {
	if v == "" {
		return Hostname{}, errors.New("hostname parameter is empty")
	}
	if len(v) > maxHostnameLength {
		return Hostname{}, fmt.Errorf("hostname is %d bytes; the limit is %d", len(v), maxHostnameLength)
	}
	if strings.ContainsFunc(v, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		return Hostname{}, fmt.Errorf("hostname %q must not contain spaces or control characters", oneLine(v))
	}
	host, port := v, ""
	if h, p, err := net.SplitHostPort(v); err == nil {
		host, port = h, p
		n, err := strconv.Atoi(port)
		if err != nil || n < 1 || n > 65535 || strconv.Itoa(n) != port {
			return Hostname{}, fmt.Errorf("hostname %q: port %q is not a number from 1 to 65535", oneLine(v), oneLine(port))
		}
	} else if strings.HasPrefix(v, "[") && strings.HasSuffix(v, "]") {
		host = v // [v6] without a port
	} else if strings.HasPrefix(v, "[") || strings.Count(v, ":") == 1 {
		return Hostname{}, fmt.Errorf("hostname %q is not host or host:port: %v", oneLine(v), err)
	}
	bare := strings.TrimSuffix(strings.Trim(host, "[]"), ".")
	if ip, err := netip.ParseAddr(bare); err == nil {
		if ip.Zone() != "" {
			return Hostname{}, fmt.Errorf("hostname %q: an address with a zone cannot be a Host header", oneLine(v))
		}
		hp := ip.String()
		if ip.Is6() {
			hp = "[" + hp + "]"
		}
		if port != "" {
			hp += ":" + port
		}
		return Hostname{Host: hp, ServerName: ip.String()}, nil
	}
	if strings.HasPrefix(v, "[") || strings.ContainsAny(bare, "[]") {
		return Hostname{}, fmt.Errorf("hostname %q: brackets are only for IPv6 addresses", oneLine(v))
	}
	name, err := canonicalHost(host)
	if err != nil {
		return Hostname{}, fmt.Errorf("hostname %q is not a DNS name or IP address: %v", oneLine(v), err)
	}
	if !dnsNameRE.MatchString(name) {
		return Hostname{}, fmt.Errorf("hostname %q is not a DNS name or IP address (letters, digits, '-', '_' and '.' only, labels of at most 63)", oneLine(v))
	}
	hp := name
	if port != "" {
		hp = net.JoinHostPort(name, port)
	}
	return Hostname{Host: hp, ServerName: name}, nil
}

// withHostname is WithHostname's common part: a copy of headers with Host
// set, and the TLS server name set on tlsServerName. A module that already
// pins a different Host header or server_name is a contradiction the
// operator must see, not a silent choice.
func withHostname(headers config.Headers, tlsServerName *string, h Hostname) (config.Headers, error) {
	out := make(config.Headers, len(headers)+1)
	for k, v := range headers {
		if strings.EqualFold(k, "Host") {
			if !strings.EqualFold(v, h.Host) {
				return nil, fmt.Errorf("the module sets header Host: %s and the hostname parameter asks for %s; drop one", oneLine(v), h.Host)
			}
			continue
		}
		out[k] = v
	}
	out["Host"] = h.Host
	switch sn := *tlsServerName; {
	case sn == "":
		*tlsServerName = h.ServerName
	case !strings.EqualFold(sn, h.ServerName):
		return nil, fmt.Errorf("the module sets tls_config.server_name: %s and the hostname parameter asks for %s; drop one", oneLine(sn), h.ServerName)
	}
	return out, nil
}

func (s *HTTPSettings) WithHostname(h Hostname) (config.Settings, error) {
	c := *s
	var err error
	c.Headers, err = withHostname(s.Headers, &c.HTTPClientConfig.TLSConfig.ServerName, h)
	return &c, err
}

func (s *TTYDTokenSettings) WithHostname(h Hostname) (config.Settings, error) {
	c := *s
	var err error
	c.Headers, err = withHostname(s.Headers, &c.HTTPClientConfig.TLSConfig.ServerName, h)
	return &c, err
}

func (s *TTYDWSSettings) WithHostname(h Hostname) (config.Settings, error) {
	c := *s
	var err error
	c.Headers, err = withHostname(s.Headers, &c.HTTPClientConfig.TLSConfig.ServerName, h)
	return &c, err
}
