// Package remediate is the greybox remediator: it evaluates PromQL rules over
// greybox's probe results and evicts, deletes or rollout-restarts what is
// provably wedged, behind fail-closed checks, cooldowns, budgets, a storm
// guard, dry-run and leader election. It knows greybox only by metric names.
package remediate

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/url"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	pconfig "github.com/prometheus/common/config"
	"github.com/prometheus/common/model"
	"gopkg.in/yaml.v3"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/greybox-probe/greybox/internal/regularfile"
	"github.com/greybox-probe/greybox/internal/secretfile"
	"github.com/greybox-probe/greybox/internal/yamlerr"
)

// Actions a rule may take.
const (
	ActionEvictPod       = "evict_pod"
	ActionDeletePod      = "delete_pod"
	ActionRolloutRestart = "rollout_restart"
)

var knownActions = []string{ActionEvictPod, ActionDeletePod, ActionRolloutRestart}

// Defaults.
const (
	DefaultEvaluationInterval = time.Minute
	DefaultQueryTimeout       = 30 * time.Second
	DefaultAPITimeout         = 30 * time.Second
	DefaultMaxSampleAge       = 5 * time.Minute
	DefaultCooldown           = 30 * time.Minute
	DefaultWindow             = time.Hour
	DefaultMaxActions         = 3
	DefaultStormMaxActions    = 5
	DefaultNamespace          = "greybox"
	DefaultObjectName         = "greybox-remediator"
)

// Config is the remediator's configuration file.
type Config struct {
	Prometheus         PrometheusConfig `yaml:"prometheus"`
	EvaluationInterval model.Duration   `yaml:"evaluation_interval"`
	// MaxSampleAge is the staleness bound (default 5m): a sample whose
	// timestamp is older than this before the remediator's evaluation time
	// is not a candidate, and does not let a guard pass. Prometheus stamps
	// instant-query results with its evaluation time, so an old timestamp
	// means a cache in front of Prometheus, or clocks that disagree by more
	// than this; either way the data does not describe the present.
	MaxSampleAge model.Duration `yaml:"max_sample_age"`
	// DryRun makes every rule log and count instead of acting.
	DryRun         bool                 `yaml:"dry_run"`
	LeaderElection LeaderElectionConfig `yaml:"leader_election"`
	State          StateConfig          `yaml:"state"`
	StormGuard     StormGuardConfig     `yaml:"storm_guard"`
	Rules          []*Rule              `yaml:"rules"`
}

// PrometheusConfig says where the probe results are read from.
type PrometheusConfig struct {
	URL              string                   `yaml:"url"`
	Timeout          model.Duration           `yaml:"timeout"`
	HTTPClientConfig pconfig.HTTPClientConfig `yaml:"http_client_config"`
}

// LeaderElectionConfig names the Lease used when --leader-elect is set.
type LeaderElectionConfig struct {
	Namespace     string         `yaml:"namespace"`
	LeaseName     string         `yaml:"lease_name"`
	LeaseDuration model.Duration `yaml:"lease_duration"`
	RenewDeadline model.Duration `yaml:"renew_deadline"`
	RetryPeriod   model.Duration `yaml:"retry_period"`
}

// StateConfig names the ConfigMap that keeps cooldowns and budgets across
// restarts.
type StateConfig struct {
	Namespace     string `yaml:"namespace"`
	ConfigMapName string `yaml:"config_map_name"`
}

// StormGuardConfig caps actions across all rules.
type StormGuardConfig struct {
	MaxActions int            `yaml:"max_actions"`
	Window     model.Duration `yaml:"window"`
}

// TargetLabels names the series labels that identify a candidate pod.
type TargetLabels struct {
	Namespace string `yaml:"namespace"`
	Pod       string `yaml:"pod"`
}

// ProbeLabels names the series labels that identify the greybox probe
// behind a candidate, for the status page's and the plan's links to
// greybox's /logs. The defaults follow the README's scrape jobs: a
// `module` target label, and the target relabelled into `instance`.
type ProbeLabels struct {
	Module string `yaml:"module"`
	Target string `yaml:"target"`
}

// Rule is one remediation: every series of Expr is a candidate pod.
type Rule struct {
	Name         string         `yaml:"name"`
	Expr         string         `yaml:"expr"`
	For          model.Duration `yaml:"for"`
	Guards       []string       `yaml:"guards,omitempty"`
	Action       string         `yaml:"action"`
	Cooldown     model.Duration `yaml:"cooldown"`
	MaxActions   int            `yaml:"max_actions"`
	Window       model.Duration `yaml:"window"`
	Namespaces   []string       `yaml:"namespaces"`
	Selector     string         `yaml:"selector,omitempty"`
	TargetLabels TargetLabels   `yaml:"target_labels"`
	ProbeLabels  ProbeLabels    `yaml:"probe_labels"`
	DryRun       bool           `yaml:"dry_run,omitempty"`

	selector labels.Selector
}

// Matches reports whether a live pod's labels match the rule's selector.
func (r *Rule) Matches(l map[string]string) bool {
	if r.selector == nil {
		return true
	}
	return r.selector.Matches(labels.Set(l))
}

// NamespaceAllowed reports whether the rule may act in ns.
func (r *Rule) NamespaceAllowed(ns string) bool { return slices.Contains(r.Namespaces, ns) }

// UnmarshalYAML fills defaults before decoding. The yaml.v2-style signature
// keeps yaml.v3's strict KnownFields decoding for the rule's keys.
func (r *Rule) UnmarshalYAML(unmarshal func(any) error) error {
	type plain Rule
	*r = Rule{
		Cooldown:     model.Duration(DefaultCooldown),
		MaxActions:   DefaultMaxActions,
		Window:       model.Duration(DefaultWindow),
		TargetLabels: TargetLabels{Namespace: "namespace", Pod: "pod"},
		ProbeLabels:  ProbeLabels{Module: "module", Target: "instance"},
	}
	return unmarshal((*plain)(r))
}

var ruleName = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_-]*$`)

func (r *Rule) validate() error {
	if !ruleName.MatchString(r.Name) {
		return fmt.Errorf("rule name %q must match %s", r.Name, ruleName)
	}
	if strings.TrimSpace(r.Expr) == "" {
		return errors.New("expr is required")
	}
	for i, g := range r.Guards {
		if strings.TrimSpace(g) == "" {
			return fmt.Errorf("guards[%d] is empty", i)
		}
	}
	if !slices.Contains(knownActions, r.Action) {
		return fmt.Errorf("action %q is not one of %s", r.Action, strings.Join(knownActions, ", "))
	}
	if r.For < 0 || r.Cooldown < 0 || r.Window <= 0 {
		return errors.New("for and cooldown must not be negative, window must be positive")
	}
	if r.MaxActions < 1 {
		return errors.New("max_actions must be at least 1")
	}
	if len(r.Namespaces) == 0 {
		return errors.New("namespaces must list at least one namespace the rule may act in")
	}
	if r.TargetLabels.Namespace == "" || r.TargetLabels.Pod == "" {
		return errors.New("target_labels.namespace and target_labels.pod must not be empty")
	}
	if r.Selector != "" {
		sel, err := labels.Parse(r.Selector)
		if err != nil {
			return fmt.Errorf("selector: %w", err)
		}
		r.selector = sel
	}
	return nil
}

// MaxFileSize is the largest remediator config Load reads; a few rules
// are a few KiB, so anything this size is the wrong file.
const MaxFileSize = 16 << 20

// Overrides are command-line settings that take precedence over the file.
type Overrides struct {
	// PrometheusURL replaces prometheus.url (--prometheus.url); with it
	// the file may leave prometheus.url out.
	PrometheusURL string
}

// Load reads and validates a config file. Errors name the file and line.
// A FIFO, a directory or a file over MaxFileSize is refused, not read.
func Load(path string) (*Config, error) { return LoadWith(path, Overrides{}) }

// LoadWith is Load with command-line overrides applied before validation.
func LoadWith(path string, o Overrides) (*Config, error) {
	data, err := regularfile.ReadFile(path, MaxFileSize)
	if err != nil {
		return nil, err
	}
	return ParseWith(data, path, o)
}

// CheckURL reports whether s is an absolute http(s) URL with a host; what
// names the setting in the error (a flag or a config key).
func CheckURL(what, s string) error {
	u, err := url.Parse(s)
	if s == "" || err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%s must be an http(s) URL with a host, got %q", what, s)
	}
	return nil
}

// Parse decodes and validates a config document; name is used in errors.
func Parse(data []byte, name string) (*Config, error) { return ParseWith(data, name, Overrides{}) }

// ParseWith is Parse with command-line overrides applied before validation.
func ParseWith(data []byte, name string, o Overrides) (*Config, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, yamlerr.Syntax(err, name)
	}
	cfg := &Config{
		Prometheus:         PrometheusConfig{Timeout: model.Duration(DefaultQueryTimeout), HTTPClientConfig: pconfig.DefaultHTTPClientConfig},
		EvaluationInterval: model.Duration(DefaultEvaluationInterval),
		MaxSampleAge:       model.Duration(DefaultMaxSampleAge),
		LeaderElection: LeaderElectionConfig{
			Namespace: DefaultNamespace, LeaseName: DefaultObjectName,
			LeaseDuration: model.Duration(15 * time.Second),
			RenewDeadline: model.Duration(10 * time.Second),
			RetryPeriod:   model.Duration(2 * time.Second),
		},
		State:      StateConfig{Namespace: DefaultNamespace, ConfigMapName: DefaultObjectName + "-state"},
		StormGuard: StormGuardConfig{MaxActions: DefaultStormMaxActions, Window: model.Duration(DefaultWindow)},
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(cfg); err != nil && err != io.EOF {
		return nil, describe(err, name, &doc)
	}
	at := func(path ...string) string { return fmt.Sprintf("%s:%d", name, lineOf(&doc, path...)) }
	if o.PrometheusURL != "" {
		if err := CheckURL("--prometheus.url", o.PrometheusURL); err != nil {
			return nil, err
		}
		cfg.Prometheus.URL = o.PrometheusURL
	} else if err := CheckURL("prometheus.url", cfg.Prometheus.URL); err != nil {
		return nil, fmt.Errorf("%s: %w (or set --prometheus.url)", at("prometheus", "url"), err)
	}
	if err := cfg.Prometheus.HTTPClientConfig.Validate(); err != nil {
		return nil, fmt.Errorf("%s: prometheus.http_client_config: %w", at("prometheus", "http_client_config"), err)
	}
	// Relative to the config file, as in Prometheus; readable now, not at
	// the first query.
	cfg.Prometheus.HTTPClientConfig.SetDirectory(filepath.Dir(name))
	if err := secretfile.Check(&cfg.Prometheus.HTTPClientConfig, "prometheus.http_client_config"); err != nil {
		return nil, fmt.Errorf("%s: %v", at("prometheus", "http_client_config"), err)
	}
	if cfg.Prometheus.Timeout <= 0 {
		return nil, fmt.Errorf("%s: prometheus.timeout must be positive", at("prometheus", "timeout"))
	}
	if cfg.EvaluationInterval <= 0 {
		return nil, fmt.Errorf("%s: evaluation_interval must be positive", at("evaluation_interval"))
	}
	if cfg.MaxSampleAge <= 0 {
		return nil, fmt.Errorf("%s: max_sample_age must be positive", at("max_sample_age"))
	}
	le := cfg.LeaderElection
	if le.Namespace == "" || le.LeaseName == "" {
		return nil, fmt.Errorf("%s: leader_election.namespace and lease_name must not be empty", at("leader_election"))
	}
	if le.RetryPeriod <= 0 || time.Duration(le.RenewDeadline) <= time.Duration(1.2*float64(le.RetryPeriod)) || le.LeaseDuration <= le.RenewDeadline {
		return nil, fmt.Errorf("%s: leader_election needs lease_duration > renew_deadline > 1.2 × retry_period > 0", at("leader_election"))
	}
	if cfg.State.Namespace == "" || cfg.State.ConfigMapName == "" {
		return nil, fmt.Errorf("%s: state.namespace and state.config_map_name must not be empty", at("state"))
	}
	if cfg.StormGuard.MaxActions < 1 || cfg.StormGuard.Window <= 0 {
		return nil, fmt.Errorf("%s: storm_guard.max_actions must be ≥ 1 and window positive", at("storm_guard"))
	}
	if len(cfg.Rules) == 0 {
		return nil, fmt.Errorf("%s: no rules defined (add a \"rules:\" list)", name)
	}
	seen := map[string]bool{}
	for i, r := range cfg.Rules {
		line := fmt.Sprintf("%s:%d", name, ruleLine(&doc, i))
		if r == nil {
			return nil, fmt.Errorf("%s: rule %d is empty", line, i)
		}
		if err := r.validate(); err != nil {
			return nil, fmt.Errorf("%s: rule %q: %w", line, r.Name, err)
		}
		if seen[r.Name] {
			return nil, fmt.Errorf("%s: duplicate rule name %q", line, r.Name)
		}
		seen[r.Name] = true
	}
	return cfg, nil
}

// lineOf finds the line of a key path in the document, or of the deepest
// existing ancestor (1 when nothing matches).
func lineOf(doc *yaml.Node, path ...string) int {
	if doc == nil || len(doc.Content) == 0 {
		return 1
	}
	n, line := doc.Content[0], 1
	for _, key := range path {
		if n.Kind != yaml.MappingNode {
			break
		}
		found := false
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == key {
				line, n, found = n.Content[i].Line, n.Content[i+1], true
				break
			}
		}
		if !found {
			break
		}
	}
	return line
}

func ruleLine(doc *yaml.Node, i int) int {
	if doc == nil || len(doc.Content) == 0 || doc.Content[0].Kind != yaml.MappingNode {
		return 1
	}
	root := doc.Content[0]
	for k := 0; k+1 < len(root.Content); k += 2 {
		if root.Content[k].Value == "rules" && root.Content[k+1].Kind == yaml.SequenceNode {
			if items := root.Content[k+1].Content; i < len(items) {
				return items[i].Line
			}
			return root.Content[k].Line
		}
	}
	return 1
}

// Redacted renders the config with secrets shown as <secret>.
func (c *Config) Redacted() string {
	b, err := yaml.Marshal(c)
	if err != nil {
		return "# " + strconv.Quote(err.Error())
	}
	return string(b)
}
