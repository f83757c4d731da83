package config

import (
	"errors"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"sync"

	"gopkg.in/yaml.v3"
)

// Via is a module's `via:` section: send the probe through each replica
// of a load balancer instead of through the load balancer. The target
// stays the user's URL (its Host header and TLS server name); each
// replica's address is what is dialled.
type Via struct {
	// Replicas is where the replicas are: k8s:<ns>/<selector>:<port>,
	// dns:<host>:<port> or host:port,host:port.
	Replicas string `yaml:"replicas"`
	// MinSuccess is how many replicas must succeed for probe_success 1.
	MinSuccess MinSuccess `yaml:"min_success,omitempty"`

	line int
}

// UnmarshalYAML uses the yaml.v2-style signature to keep the strict
// decoder (unknown keys are errors with their line).
func (v *Via) UnmarshalYAML(unmarshal func(any) error) error {
	var c nodeCapture
	if err := unmarshal(&c); err != nil {
		return err
	}
	if c.node.Kind != yaml.MappingNode {
		return &lineError{c.node.Line, errors.New("via must be a mapping with replicas (and min_success)")}
	}
	type plain Via
	*v = Via{MinSuccess: MinSuccess{All: true}}
	if err := unmarshal((*plain)(v)); err != nil {
		return err
	}
	v.line = c.node.Line
	if strings.TrimSpace(v.Replicas) == "" {
		return &lineError{v.line, errors.New("via.replicas is required (k8s:<namespace>/<selector>:<port>, dns:<host>:<port> or host:port,host:port)")}
	}
	return nil
}

// MinSuccess is "all", a number of replicas, or a percentage of those
// discovered.
type MinSuccess struct {
	All     bool
	Count   int
	Percent float64
}

func (m *MinSuccess) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return &lineError{n.Line, errors.New("min_success must be all, a number or a percentage like 50%")}
	}
	p, err := ParseMinSuccess(n.Value)
	if err != nil {
		return &lineError{n.Line, err}
	}
	*m = p
	return nil
}

// ParseMinSuccess reads "all", "2" or "50%".
func ParseMinSuccess(s string) (MinSuccess, error) {
	s = strings.TrimSpace(s)
	if strings.EqualFold(s, "all") {
		return MinSuccess{All: true}, nil
	}
	if p, ok := strings.CutSuffix(s, "%"); ok {
		f, err := strconv.ParseFloat(strings.TrimSpace(p), 64)
		if err != nil || math.IsNaN(f) || f <= 0 || f > 100 {
			return MinSuccess{}, fmt.Errorf("min_success %q: a percentage must be above 0%% and at most 100%%", s)
		}
		return MinSuccess{Percent: f}, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		return MinSuccess{}, fmt.Errorf("min_success %q must be all, a number of replicas (1 or more) or a percentage like 50%%", s)
	}
	return MinSuccess{Count: n}, nil
}

// Need is how many of n discovered replicas must succeed. A count above n
// cannot be met: with fewer replicas than the operator said must work,
// the probe fails.
func (m MinSuccess) Need(n int) int {
	switch {
	case m.Count > 0:
		return m.Count
	case m.Percent > 0:
		return int(math.Ceil(m.Percent * float64(n) / 100))
	}
	return n
}

func (m MinSuccess) String() string {
	switch {
	case m.Count > 0:
		return strconv.Itoa(m.Count)
	case m.Percent > 0:
		return strconv.FormatFloat(m.Percent, 'f', -1, 64) + "%"
	}
	return "all"
}

func (m MinSuccess) MarshalYAML() (any, error) { return m.String(), nil }

// IsZero keeps the default ("all") out of rendered modules.
func (m MinSuccess) IsZero() bool { return m.All || m == MinSuccess{} }

var (
	viaMu     sync.RWMutex
	viaChecks = map[string]func(*Via) error{}
)

// RegisterVia says that prober can be sent through replicas, and how a
// via section is checked at load (the replica forms are the prober
// package's). prober.Register calls it for every prober whose spec says so.
func RegisterVia(prober string, check func(*Via) error) {
	viaMu.Lock()
	defer viaMu.Unlock()
	viaChecks[prober] = check
}

func viaProbers() string {
	viaMu.RLock()
	defer viaMu.RUnlock()
	names := make([]string, 0, len(viaChecks))
	for n := range viaChecks {
		names = append(names, n)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

// checkVia validates a module's via section against its prober.
func checkVia(proberName string, v *Via, s Settings) error {
	viaMu.RLock()
	check, ok := viaChecks[proberName]
	viaMu.RUnlock()
	if !ok {
		return &lineError{v.line, fmt.Errorf("prober %s cannot be sent through replicas (via: works with %s)", proberName, viaProbers())}
	}
	if hc, ok := s.(interface{ HTTPClient() *HTTPClientConfig }); ok {
		pc := hc.HTTPClient().ProxyConfig
		if pc.ProxyURL.URL != nil || pc.ProxyFromEnvironment {
			return &lineError{v.line, errors.New("via dials each replica directly; it cannot be combined with http_client_config.proxy_url or proxy_from_environment")}
		}
	}
	if err := check(v); err != nil {
		return &lineError{v.line, fmt.Errorf("via: %w", err)}
	}
	return nil
}
