package config

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strings"

	"github.com/alecthomas/units"
	"github.com/prometheus/common/model"
	"gopkg.in/yaml.v3"
)

// Regexp is a regular expression compiled when the config is loaded, so a
// typo fails the load (with its line) instead of every probe.
type Regexp struct {
	*regexp.Regexp
	original string
}

// NewRegexp compiles s; for tests and defaults.
func NewRegexp(s string) (Regexp, error) {
	re, err := regexp.Compile(s)
	if err != nil {
		return Regexp{}, err
	}
	return Regexp{Regexp: re, original: s}, nil
}

// MustNewRegexp is NewRegexp for literals known to compile.
func MustNewRegexp(s string) Regexp {
	re, err := NewRegexp(s)
	if err != nil {
		panic(err)
	}
	return re
}

func (r *Regexp) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return &lineError{n.Line, errors.New("a regular expression must be a string")}
	}
	re, err := NewRegexp(n.Value)
	if err != nil {
		return &lineError{n.Line, fmt.Errorf("invalid regular expression %q: %v", n.Value, err)}
	}
	*r = re
	return nil
}

func (r Regexp) MarshalYAML() (any, error) { return r.original, nil }

// String returns the expression as written.
func (r Regexp) String() string { return r.original }

// IsZero reports whether no expression was configured.
func (r Regexp) IsZero() bool { return r.Regexp == nil }

// Allowlist is a module's SSRF guard: the host names and networks its probes
// may reach. Empty allows everything (the blackbox_exporter behaviour).
// Entries: an exact host name ("terminal.example.com"), a wildcard suffix
// ("*.svc.cluster.local"), an IP address, or a CIDR ("10.0.0.0/8", "::1/128").
type Allowlist struct {
	Entries  []string
	names    []string
	suffixes []string
	prefixes []netip.Prefix
}

// ParseAllowlist validates entries; for tests and callers outside YAML.
func ParseAllowlist(entries []string) (Allowlist, error) {
	a := Allowlist{Entries: entries}
	for _, e := range entries {
		e = strings.TrimSpace(strings.ToLower(e))
		switch {
		case e == "":
			return Allowlist{}, errors.New("allowed_targets: empty entry")
		case strings.Contains(e, "/"):
			p, err := netip.ParsePrefix(e)
			if err != nil {
				return Allowlist{}, fmt.Errorf("allowed_targets: %q is not a CIDR: %v", e, err)
			}
			a.prefixes = append(a.prefixes, p.Masked())
		case strings.HasPrefix(e, "*."):
			a.suffixes = append(a.suffixes, e[1:])
		default:
			if ip, err := netip.ParseAddr(e); err == nil {
				a.prefixes = append(a.prefixes, netip.PrefixFrom(ip.Unmap(), ip.Unmap().BitLen()))
				continue
			}
			if strings.ContainsAny(e, "*:[] ") {
				return Allowlist{}, fmt.Errorf("allowed_targets: %q is neither a host name, *.suffix, IP nor CIDR", e)
			}
			a.names = append(a.names, strings.TrimSuffix(e, "."))
		}
	}
	return a, nil
}

func (a *Allowlist) UnmarshalYAML(n *yaml.Node) error {
	var entries []string
	if err := n.Decode(&entries); err != nil {
		return &lineError{n.Line, errors.New("allowed_targets must be a list of host names, IPs or CIDRs")}
	}
	parsed, err := ParseAllowlist(entries)
	if err != nil {
		return &lineError{n.Line, err}
	}
	*a = parsed
	return nil
}

func (a Allowlist) MarshalYAML() (any, error) { return a.Entries, nil }

// Empty reports whether the module allows every target.
func (a Allowlist) Empty() bool { return len(a.Entries) == 0 }

// AllowsName reports whether host is allowed by name alone, whatever it
// resolves to.
func (a Allowlist) AllowsName(host string) bool {
	if a.Empty() {
		return true
	}
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	for _, n := range a.names {
		if host == n {
			return true
		}
	}
	for _, s := range a.suffixes {
		if strings.HasSuffix(host, s) {
			return true
		}
	}
	return false
}

// AllowsAddr reports whether an address falls inside an allowed network.
func (a Allowlist) AllowsAddr(ip netip.Addr) bool {
	if a.Empty() {
		return true
	}
	ip = ip.Unmap()
	for _, p := range a.prefixes {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// ForbiddenError says why a target is outside the module's allowlist.
type ForbiddenError struct{ Reason string }

func (e *ForbiddenError) Error() string { return e.Reason }

// Resolve looks host up once and returns the addresses the probe may dial:
// all of them when the name itself is allowed, otherwise only those inside an
// allowed network (none → ForbiddenError). Dialling exactly these addresses,
// rather than the name, closes the DNS-rebinding window.
func (a Allowlist) Resolve(ctx context.Context, r *net.Resolver, host string) ([]netip.Addr, error) {
	host = strings.Trim(host, "[]")
	if ip, err := netip.ParseAddr(host); err == nil {
		if !a.AllowsAddr(ip) {
			return nil, &ForbiddenError{fmt.Sprintf("target address %s is not in allowed_targets", ip)}
		}
		return []netip.Addr{ip.Unmap()}, nil
	}
	byName := a.AllowsName(host)
	if !byName && len(a.prefixes) == 0 {
		return nil, &ForbiddenError{fmt.Sprintf("target host %q is not in allowed_targets", host)}
	}
	if r == nil {
		r = net.DefaultResolver
	}
	addrs, err := r.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return nil, err
	}
	var ok []netip.Addr
	for _, ip := range addrs {
		if byName || a.AllowsAddr(ip) {
			ok = append(ok, ip.Unmap())
		}
	}
	if len(ok) == 0 {
		return nil, &ForbiddenError{fmt.Sprintf("target host %q resolves to %v, none of which is in allowed_targets", host, addrs)}
	}
	return ok, nil
}

// Bytes is a size written like "10MiB" or "512KB" (alecthomas/units base-2
// syntax) or a plain number of bytes.
type Bytes int64

func (b *Bytes) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return &lineError{n.Line, errors.New("a size must be a scalar like 10MiB")}
	}
	v, err := units.ParseBase2Bytes(n.Value)
	if err != nil {
		var plain int64
		if _, perr := fmt.Sscan(n.Value, &plain); perr != nil || fmt.Sprint(plain) != n.Value {
			return &lineError{n.Line, fmt.Errorf("invalid size %q (use e.g. 512KiB, 10MiB)", n.Value)}
		}
		v = units.Base2Bytes(plain)
	}
	if v < 0 {
		return &lineError{n.Line, fmt.Errorf("size %q must not be negative", n.Value)}
	}
	*b = Bytes(v)
	return nil
}

func (b Bytes) MarshalYAML() (any, error) { return units.Base2Bytes(b).String(), nil }

// Duration is a Prometheus-style duration ("30s", "11m", "1h30m") whose
// parse errors carry the YAML line. It converts to time.Duration directly.
type Duration model.Duration

func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return &lineError{n.Line, errors.New("a duration must be a string like 30s or 11m")}
	}
	v, err := model.ParseDuration(n.Value)
	if err != nil {
		return &lineError{n.Line, fmt.Errorf("invalid duration %q (use e.g. 500ms, 30s, 11m)", n.Value)}
	}
	*d = Duration(v)
	return nil
}

func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

func (d Duration) String() string { return model.Duration(d).String() }
