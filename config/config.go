// Package config is the probe server's configuration: schema, defaults,
// strict decoding with file and line in every error, and safe reload.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
	"unicode"

	"gopkg.in/yaml.v3"

	"github.com/greybox-probe/greybox/internal/regularfile"
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
	// Warnings are what the file has that greybox accepts and does not
	// use ("file:line: …"), in document order, for --config.check and
	// the load log.
	Warnings []string `yaml:"-"`
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
	// Via sends the probe through each replica of a load balancer; nil
	// probes the target as it resolves.
	Via *Via `yaml:"via,omitempty"`
	// Settings holds the registered settings type of Prober; it is
	// serialised under a key named after the prober.
	Settings Settings `yaml:"-"`

	// rendered is the module as YAML (secrets redacted), made once at load
	// because debug output and history show it for every probe.
	rendered string
	// ignored are other probers' sections in this module.
	ignored []ignoredSection
}

type ignoredSection struct {
	key  string
	line int
}

// isProberSection: key is a registered prober's section (greybox has a
// prober for each of blackbox's, so a blackbox module's leftovers are all
// known sections).
func isProberSection(key string) bool {
	_, ok := newSettings(key)
	return ok
}

// YAML returns the module's configuration as YAML, secrets redacted.
func (m *Module) YAML() string { return m.rendered }

// Module keys shared by every prober; anything else must be the section
// named after the module's prober.
var commonModuleKeys = []string{"prober", "timeout", "allowed_targets", "via"}

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
	kept := make([]*yaml.Node, 0, len(n.Content))
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := n.Content[i]
		switch {
		case slices.Contains(commonModuleKeys, k.Value):
		case k.Value == proberName:
			sectionLine = k.Line
		case isProberSection(k.Value):
			// blackbox decodes every prober's section and uses only its
			// own, so files carry leftovers (an http: block in a tcp
			// module); accepted, left out of the decode, and reported.
			m.ignored = append(m.ignored, ignoredSection{k.Value, k.Line})
			continue
		default:
			return &lineError{k.Line, fmt.Errorf("unknown key %q in a %s module (allowed: %s, %s)",
				k.Value, proberName, strings.Join(commonModuleKeys, ", "), proberName)}
		}
		kept = append(kept, k, n.Content[i+1])
	}
	if len(m.ignored) > 0 {
		all := n.Content
		n.Content = kept
		defer func() { n.Content = all }()
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
	m.Via = e.Field(4).Interface().(*Via)
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
	if m.Via != nil {
		return checkVia(proberName, m.Via, settings)
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
		{Name: "Via", Type: reflect.TypeFor[*Via](), Tag: `yaml:"via"`},
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
	if m.Via != nil {
		if err := add("via", m.Via); err != nil {
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

// MaxFileSize is the largest config file Load reads. A generated config
// of 40k modules is a few MiB; anything near this is a mistake (a log or
// a disk image given as --config.file), refused before it is read.
const MaxFileSize = 64 << 20

// Load reads and validates a config file. Errors name the file and line.
// A path that is not a regular file (a directory, or a FIFO that would
// block the read forever) or is larger than MaxFileSize is refused.
func Load(path string) (*Config, error) {
	data, err := regularfile.ReadFile(path, MaxFileSize)
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
	var strict struct {
		DefaultModule string    `yaml:"default_module"`
		Modules       moduleMap `yaml:"modules"`
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&strict); err != nil && err != io.EOF {
		return nil, describe(err, name, data)
	}
	cfg := &Config{DefaultModule: strict.DefaultModule, Modules: strict.Modules.byName}
	if len(cfg.Modules) == 0 {
		return nil, fmt.Errorf("%s: no modules defined (add a \"modules:\" mapping)", name)
	}
	// Document order, so that of several broken modules the first in the
	// file is reported, every time.
	for _, e := range strict.Modules.order {
		n, m := e.name, cfg.Modules[e.name]
		if m == nil {
			return nil, fmt.Errorf("%s:%d: module %q is empty", name, e.line, n)
		}
		m.Name = n
		for _, ig := range m.ignored {
			cfg.Warnings = append(cfg.Warnings, fmt.Sprintf("%s:%d: module %q: %s section ignored: a %s module uses only its %s section (blackbox ignores it too)",
				name, ig.line, n, ig.key, m.Prober, m.Prober))
		}
		if f, ok := m.Settings.(interface{ ReadFiles(dir string) error }); ok {
			// A file a section names (http's body_file), relative to
			// the config file like every other path.
			if err := f.ReadFiles(filepath.Dir(name)); err != nil {
				return nil, fmt.Errorf("%s:%d: module %q: %s.%v", name, e.line, n, m.Prober, err)
			}
		}
		if hc, ok := m.Settings.(interface{ HTTPClient() *HTTPClientConfig }); ok {
			// Relative paths are relative to the config file, as in
			// Prometheus; every file must be readable now, not at the
			// first probe.
			c := &hc.HTTPClient().HTTPClientConfig
			c.SetDirectory(filepath.Dir(name))
			key := m.Prober + ".http_client_config"
			// A prober whose client config sits under another key (or
			// is only a tls_config) names the key the user wrote.
			if k, ok := m.Settings.(interface{ ClientConfigKey() string }); ok {
				key = strings.TrimSuffix(m.Prober+"."+k.ClientConfigKey(), ".")
			}
			if err := secretfile.Check(c, key); err != nil {
				return nil, fmt.Errorf("%s:%d: module %q: %v", name, e.line, n, err)
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

// moduleMap is the modules mapping, decoded one module at a time. yaml.v3
// checks every mapping's keys for duplicates pair by pair, quadratic in
// the number of modules (40k modules took 49 s to load); here that check
// is one pass over the keys, and each module is decoded by the same strict
// decoder (KnownFields, lines) from a one-entry view of the node.
type moduleMap struct {
	byName map[string]*Module
	order  []moduleEntry // document order
}

type moduleEntry struct {
	name string
	line int
}

// moduleKeyError is about a module's name itself (given twice, empty);
// the message names the module, the loader adds file and line.
type moduleKeyError struct {
	line  int
	msg   string
	first int // line of the first definition, for a duplicate
}

func (e *moduleKeyError) Error() string { return fmt.Sprintf("line %d: %s", e.line, e.msg) }

func (mm *moduleMap) UnmarshalYAML(unmarshal func(any) error) error {
	var c nodeCapture
	if err := unmarshal(&c); err != nil {
		return err
	}
	n := c.node
	if n.Kind != yaml.MappingNode {
		return &lineError{n.Line, errors.New("modules must be a mapping of module names to modules")}
	}
	all := n.Content
	first := make(map[string]int, len(all)/2)
	var merges []int // "<<: *other" entries, which yaml.v3 merges after the explicit keys
	for i := 0; i+1 < len(all); i += 2 {
		k := all[i]
		if isMergeKey(k) {
			merges = append(merges, i)
			continue
		}
		if line, dup := first[k.Value]; dup && k.Kind == yaml.ScalarNode {
			return &moduleKeyError{k.Line, fmt.Sprintf("module %q is defined twice", k.Value), line}
		}
		first[k.Value] = k.Line
	}

	// unmarshal decodes n, whatever its content is at the time of the call.
	defer func() { n.Content = all }()
	mm.byName = make(map[string]*Module, len(all)/2)
	var typeErrs []string
	decode := func(i int) (map[string]*Module, error) {
		if k := all[i]; k.Kind == yaml.ScalarNode && k.ShortTag() == "!!null" {
			// yaml.v3 would drop a null key ("~:") silently, and the
			// module with it.
			return nil, &moduleKeyError{line: k.Line, msg: checkModuleName("").Error()}
		}
		n.Content = all[i : i+2]
		one := map[string]*Module{}
		if err := unmarshal(&one); err != nil {
			var te *yaml.TypeError
			if !errors.As(err, &te) {
				return nil, err
			}
			typeErrs = append(typeErrs, te.Errors...)
		}
		for name := range one {
			if err := checkModuleName(name); err != nil {
				return nil, &moduleKeyError{line: all[i].Line, msg: err.Error()}
			}
		}
		return one, nil
	}
	for i := 0; i+1 < len(all); i += 2 {
		if isMergeKey(all[i]) {
			continue
		}
		one, err := decode(i)
		if err != nil {
			return err
		}
		for name, m := range one {
			mm.byName[name] = m
			mm.order = append(mm.order, moduleEntry{name, all[i].Line})
		}
	}
	for _, i := range merges {
		one, err := decode(i)
		if err != nil {
			return err
		}
		for _, name := range slices.Sorted(maps.Keys(one)) {
			if _, explicit := mm.byName[name]; !explicit {
				mm.byName[name] = one[name]
				mm.order = append(mm.order, moduleEntry{name, all[i].Line})
			}
		}
	}
	if len(typeErrs) > 0 {
		return &yaml.TypeError{Errors: typeErrs}
	}
	return nil
}

// isMergeKey is yaml.v3's test for "<<" (a quoted "<<" is a plain key).
func isMergeKey(k *yaml.Node) bool {
	return k.Kind == yaml.ScalarNode && k.Value == "<<" &&
		(k.Tag == "" || k.Tag == "!" || k.Tag == "!!merge" || k.Tag == "tag:yaml.org,2002:merge")
}

// checkModuleName refuses names that cannot be asked for: an empty one
// (/probe without ?module= means default_module, not "") and control
// characters, which no URL, log line or dashboard shows as written. Any
// other text works: it is URL-escaped in ?module= and any UTF-8 is a
// valid label value.
func checkModuleName(name string) error {
	if name == "" {
		return errors.New("a module name must not be empty")
	}
	if i := strings.IndexFunc(name, unicode.IsControl); i >= 0 {
		return fmt.Errorf("module name %q contains a control character", name)
	}
	return nil
}

// describe turns yaml.v3's errors into "file:line: reason (module "x")".
// The document is parsed again only here, to name modules.
func describe(err error, name string, data []byte) error {
	var ke *moduleKeyError
	if errors.As(err, &ke) {
		if ke.first > 0 {
			return fmt.Errorf("%s:%d: %s (first at %s:%d)", name, ke.line, ke.msg, name, ke.first)
		}
		return fmt.Errorf("%s:%d: %s", name, ke.line, ke.msg)
	}
	var doc yaml.Node
	_ = yaml.Unmarshal(data, &doc) // a syntax error leaves doc empty: no module names
	idx := newModuleIndex(&doc)
	var le *lineError
	if errors.As(err, &le) {
		return fmt.Errorf("%s:%d: %s%v", name, le.line, idx.at(le.line), le.err)
	}
	if described, ok := yamlerr.TypeErrors(err, name, idx.at); ok {
		return described
	}
	return yamlerr.Syntax(err, name)
}

// moduleIndex names the module whose YAML spans a line; a binary search,
// as one error per module must not make a big config's error quadratic.
type moduleIndex struct{ keys []*yaml.Node }

func newModuleIndex(doc *yaml.Node) moduleIndex {
	var idx moduleIndex
	if mods := modulesNode(doc); mods != nil {
		for i := 0; i+1 < len(mods.Content); i += 2 {
			idx.keys = append(idx.keys, mods.Content[i])
		}
	}
	return idx
}

func (idx moduleIndex) at(line int) string {
	// Keys are in document order, so their lines never decrease.
	i := sort.Search(len(idx.keys), func(i int) bool { return idx.keys[i].Line > line })
	if i == 0 {
		return ""
	}
	return fmt.Sprintf("module %q: ", idx.keys[i-1].Value)
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
