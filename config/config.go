// Package config is the probe server's configuration: schema, defaults,
// strict decoding with file and line in every error, and safe reload.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/greybox-probe/greybox/internal/secretfile"
	"github.com/greybox-probe/greybox/internal/yamlerr"
)

// DefaultModuleTimeout applies when a module sets no timeout.
const DefaultModuleTimeout = 10 * time.Second

// Config is the whole probe-server configuration file.
type Config struct {
	// DefaultModule is used when /probe gets no module parameter.
	DefaultModule string             `yaml:"default_module,omitempty"`
	Modules       map[string]*Module `yaml:"modules"`
}

// Settings is one prober's own section of a module. Each prober defines its
// settings type next to its probe function and registers it with Register.
type Settings interface {
	// Validate runs once at load, after decoding and defaults: compile what
	// needs compiling, reject impossible combinations.
	Validate() error
}

// Module is a named probe recipe: which prober, how long it may take, which
// targets it may touch, and the prober's own settings.
type Module struct {
	Name           string    `yaml:"-"`
	Prober         string    `yaml:"prober"`
	Timeout        Duration  `yaml:"timeout,omitempty"`
	AllowedTargets Allowlist `yaml:"allowed_targets,omitempty"`
	// Settings holds the registered settings type of Prober; it is
	// serialised under a key named after the prober.
	Settings Settings `yaml:"-"`

	// rendered is the module as YAML (secrets redacted), made once at load
	// because debug output and history show it for every probe.
	rendered string
}

// YAML returns the module's configuration as YAML, secrets redacted.
func (m *Module) YAML() string { return m.rendered }

// Module keys shared by every prober; anything else must be the section
// named after the module's prober.
var commonModuleKeys = []string{"prober", "timeout", "allowed_targets"}

var (
	registryMu sync.RWMutex
	registry   = map[string]func() Settings{}
)

// RegisterSettings makes a prober's settings known to the config loader.
// newSettings returns a fresh pointer with defaults filled in. It is called by
// prober.Register; a prober's file is the only place that names it.
func RegisterSettings(prober string, newSettings func() Settings) {
	registryMu.Lock()
	defer registryMu.Unlock()
	if _, dup := registry[prober]; dup {
		panic("config: prober registered twice: " + prober)
	}
	if !regexp.MustCompile(`^[a-z][a-z0-9_]*$`).MatchString(prober) {
		panic("config: bad prober name: " + prober)
	}
	registry[prober] = newSettings
}

// Probers lists the registered prober names, sorted.
func Probers() []string {
	registryMu.RLock()
	defer registryMu.RUnlock()
	names := make([]string, 0, len(registry))
	for n := range registry {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

func newSettings(prober string) (Settings, bool) {
	registryMu.RLock()
	defer registryMu.RUnlock()
	f, ok := registry[prober]
	if !ok {
		return nil, false
	}
	return f(), true
}

// lineError carries the YAML line an error belongs to until the loader adds
// the file name and module name.
type lineError struct {
	line int
	err  error
}

func (e *lineError) Error() string { return fmt.Sprintf("line %d: %v", e.line, e.err) }
func (e *lineError) Unwrap() error { return e.err }

// UnmarshalYAML uses the yaml.v2-style signature on purpose: yaml.v3 passes its
// own decoder (with KnownFields and line tracking) to such unmarshalers, while
// a yaml.Node-based one would decode the prober section leniently.
func (m *Module) UnmarshalYAML(unmarshal func(any) error) error {
	var c nodeCapture
	if err := unmarshal(&c); err != nil {
		return err
	}
	n := c.node
	if n.Kind != yaml.MappingNode {
		return &lineError{n.Line, errors.New("a module must be a mapping")}
	}
	var proberName string
	proberLine := n.Line
	for i := 0; i+1 < len(n.Content); i += 2 {
		if k, v := n.Content[i], n.Content[i+1]; k.Value == "prober" {
			proberName, proberLine = v.Value, v.Line
		}
	}
	if proberName == "" {
		return &lineError{n.Line, fmt.Errorf("missing key \"prober\" (one of: %s)", strings.Join(Probers(), ", "))}
	}
	settings, ok := newSettings(proberName)
	if !ok {
		return &lineError{proberLine, fmt.Errorf("unknown prober %q (known: %s)", proberName, strings.Join(Probers(), ", "))}
	}
	sectionLine := n.Line
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := n.Content[i]
		switch {
		case slices.Contains(commonModuleKeys, k.Value):
		case k.Value == proberName:
			sectionLine = k.Line
		default:
			return &lineError{k.Line, fmt.Errorf("unknown key %q in a %s module (allowed: %s, %s)",
				k.Value, proberName, strings.Join(commonModuleKeys, ", "), proberName)}
		}
	}
	// Decode again, strictly, into a struct whose last field is the prober's
	// section. The field tag is the prober name, so the section key is fixed
	// by registration, not by a switch here.
	v := reflect.New(moduleType(proberName, settings))
	v.Elem().Field(3).Set(reflect.ValueOf(settings))
	if err := unmarshal(v.Interface()); err != nil {
		var te *yaml.TypeError
		var le *lineError
		if errors.As(err, &te) || errors.As(err, &le) {
			return err
		}
		// Validation inside third-party unmarshallers (http_client_config)
		// knows no line; point at the prober section.
		return &lineError{sectionLine, fmt.Errorf("%s: %w", proberName, err)}
	}
	e := v.Elem()
	m.Prober = e.Field(0).String()
	m.Timeout = e.Field(1).Interface().(Duration)
	m.AllowedTargets = e.Field(2).Interface().(Allowlist)
	m.Settings = settings
	if m.Timeout < 0 {
		return &lineError{n.Line, errors.New("timeout must not be negative")}
	}
	if m.Timeout == 0 {
		m.Timeout = Duration(DefaultModuleTimeout)
	}
	if err := settings.Validate(); err != nil {
		return &lineError{sectionLine, fmt.Errorf("%s: %w", proberName, err)}
	}
	return nil
}

// nodeCapture grabs the raw node from inside a yaml.v2-style unmarshaller
// (decoding straight into a *yaml.Node there would treat Node as a struct).
type nodeCapture struct{ node *yaml.Node }

func (c *nodeCapture) UnmarshalYAML(n *yaml.Node) error { c.node = n; return nil }

func moduleType(proberName string, s Settings) reflect.Type {
	return reflect.StructOf([]reflect.StructField{
		{Name: "Prober", Type: reflect.TypeFor[string](), Tag: `yaml:"prober"`},
		{Name: "Timeout", Type: reflect.TypeFor[Duration](), Tag: `yaml:"timeout"`},
		{Name: "AllowedTargets", Type: reflect.TypeFor[Allowlist](), Tag: `yaml:"allowed_targets"`},
		{Name: "Settings", Type: reflect.TypeOf(s), Tag: reflect.StructTag(`yaml:"` + proberName + `"`)},
	})
}

// MarshalYAML writes the module back with its prober section under the
// prober's name. Secrets inside render as <secret>.
func (m Module) MarshalYAML() (any, error) {
	out := yaml.Node{Kind: yaml.MappingNode}
	add := func(key string, val any) error {
		var vn yaml.Node
		if err := vn.Encode(val); err != nil {
			return err
		}
		out.Content = append(out.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: key}, &vn)
		return nil
	}
	if err := add("prober", m.Prober); err != nil {
		return nil, err
	}
	if err := add("timeout", m.Timeout); err != nil {
		return nil, err
	}
	if len(m.AllowedTargets.Entries) > 0 {
		if err := add("allowed_targets", m.AllowedTargets); err != nil {
			return nil, err
		}
	}
	if m.Settings != nil {
		if err := add(m.Prober, m.Settings); err != nil {
			return nil, err
		}
	}
	return &out, nil
}

// Load reads and validates a config file. Errors name the file and line.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(data, path)
}

// Parse decodes and validates a config document; name is used in errors,
// which are always one line (yaml.v3 quotes offending values verbatim, line
// breaks included, and a reload error must stay one log line).
func Parse(data []byte, name string) (*Config, error) {
	cfg, err := parse(data, name)
	if err != nil {
		return nil, errors.New(oneLineReplacer.Replace(err.Error()))
	}
	return cfg, nil
}

var oneLineReplacer = strings.NewReplacer("\r", `\r`, "\n", `\n`)

func parse(data []byte, name string) (*Config, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, yamlerr.Syntax(err, name)
	}
	if err := duplicateModules(&doc, name); err != nil {
		return nil, err
	}
	var strict struct {
		DefaultModule string    `yaml:"default_module"`
		Modules       moduleMap `yaml:"modules"`
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&strict); err != nil && err != io.EOF {
		return nil, describe(err, name, &doc)
	}
	cfg := &Config{DefaultModule: strict.DefaultModule, Modules: strict.Modules}
	if len(cfg.Modules) == 0 {
		return nil, fmt.Errorf("%s: no modules defined (add a \"modules:\" mapping)", name)
	}
	for n, m := range cfg.Modules {
		if m == nil {
			return nil, fmt.Errorf("%s:%d: module %q is empty", name, moduleLine(&doc, n), n)
		}
		m.Name = n
		if hc, ok := m.Settings.(interface{ HTTPClient() *HTTPClientConfig }); ok {
			// Relative paths are relative to the config file, as in
			// Prometheus; every file must be readable now, not at the
			// first probe.
			c := &hc.HTTPClient().HTTPClientConfig
			c.SetDirectory(filepath.Dir(name))
			if err := secretfile.Check(c, m.Prober+".http_client_config"); err != nil {
				return nil, fmt.Errorf("%s:%d: module %q: %v", name, moduleLine(&doc, n), n, err)
			}
		}
		out, err := yaml.Marshal(map[string]*Module{n: m})
		if err != nil {
			return nil, fmt.Errorf("%s: module %q cannot be rendered: %v", name, n, err)
		}
		m.rendered = string(out)
	}
	if cfg.DefaultModule != "" {
		if _, ok := cfg.Modules[cfg.DefaultModule]; !ok {
			return nil, fmt.Errorf("%s: default_module %q is not a defined module", name, cfg.DefaultModule)
		}
	}
	return cfg, nil
}

// moduleMap decodes the modules mapping one module at a time. yaml.v3
// checks every mapping's keys for duplicates pair by pair, quadratic in
// the number of modules (40k modules took 49 s to load); duplicateModules
// does that check in one pass, and each module is decoded by the same
// strict decoder (KnownFields, lines) from a one-entry view of the node.
type moduleMap map[string]*Module

func (mm *moduleMap) UnmarshalYAML(unmarshal func(any) error) error {
	var c nodeCapture
	if err := unmarshal(&c); err != nil {
		return err
	}
	n := c.node
	if n.Kind != yaml.MappingNode {
		return &lineError{n.Line, errors.New("modules must be a mapping of module names to modules")}
	}
	// unmarshal decodes n, whatever its content is at the time of the call.
	all := n.Content
	defer func() { n.Content = all }()
	out := make(moduleMap, len(all)/2)
	var typeErrs []string
	for i := 0; i+1 < len(all); i += 2 {
		n.Content = all[i : i+2]
		one := map[string]*Module{}
		if err := unmarshal(&one); err != nil {
			var te *yaml.TypeError
			if !errors.As(err, &te) {
				return err
			}
			typeErrs = append(typeErrs, te.Errors...)
		}
		maps.Copy(out, one)
	}
	*mm = out
	if len(typeErrs) > 0 {
		return &yaml.TypeError{Errors: typeErrs}
	}
	return nil
}

// duplicateModules refuses a module name given twice, as yaml.v3 would
// for a map, in one pass.
func duplicateModules(doc *yaml.Node, name string) error {
	mods := modulesNode(doc)
	if mods == nil {
		return nil
	}
	seen := make(map[string]int, len(mods.Content)/2)
	for i := 0; i+1 < len(mods.Content); i += 2 {
		k := mods.Content[i]
		if first, dup := seen[k.Value]; dup {
			return fmt.Errorf("%s:%d: module %q is defined twice (first at %s:%d)", name, k.Line, k.Value, name, first)
		}
		seen[k.Value] = k.Line
	}
	return nil
}

// describe turns yaml.v3's errors into "file:line: reason (module "x")".
func describe(err error, name string, doc *yaml.Node) error {
	var le *lineError
	if errors.As(err, &le) {
		return fmt.Errorf("%s:%d: %s%v", name, le.line, moduleAt(doc, le.line), le.err)
	}
	if described, ok := yamlerr.TypeErrors(err, name, func(line int) string { return moduleAt(doc, line) }); ok {
		return described
	}
	return yamlerr.Syntax(err, name)
}

// moduleAt names the module whose YAML spans line, for error messages.
func moduleAt(doc *yaml.Node, line int) string {
	mods := modulesNode(doc)
	if mods == nil {
		return ""
	}
	found := ""
	for i := 0; i+1 < len(mods.Content); i += 2 {
		if mods.Content[i].Line <= line {
			found = mods.Content[i].Value
		}
	}
	if found == "" {
		return ""
	}
	return fmt.Sprintf("module %q: ", found)
}

func moduleLine(doc *yaml.Node, module string) int {
	if mods := modulesNode(doc); mods != nil {
		for i := 0; i+1 < len(mods.Content); i += 2 {
			if mods.Content[i].Value == module {
				return mods.Content[i].Line
			}
		}
	}
	return 0
}

func modulesNode(doc *yaml.Node) *yaml.Node {
	if doc == nil || len(doc.Content) == 0 {
		return nil
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(root.Content); i += 2 {
		if root.Content[i].Value == "modules" && root.Content[i+1].Kind == yaml.MappingNode {
			return root.Content[i+1]
		}
	}
	return nil
}

// Redacted renders the config as YAML with every Secret shown as <secret>.
func (c *Config) Redacted() ([]byte, error) {
	return yaml.Marshal(c)
}
