package remediate

import (
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"strconv"
	"strings"

	"github.com/prometheus/common/model"
	"gopkg.in/yaml.v3"

	"github.com/greybox-probe/greybox/internal/yamlerr"
)

// Configuration errors read "file:line: where: reason", where "where" is
// what the user wrote — `rule "x"`, `prometheus.http_client_config`,
// `rule "x": target_labels` — and never a Go type: yaml.v3 names the type
// it decodes into (remediate.plain, []*remediate.Rule), which means nothing
// to someone editing YAML.

var (
	unknownFieldErr = regexp.MustCompile(`^line (\d+): field (\S+) not found in type \S+$`)
	cannotUnmarshal = regexp.MustCompile("^line (\\d+): cannot unmarshal (!!\\w+)(?: `(.*)`)? into (.+)$")
)

// pathSeg is one step from the document root: a mapping key or a list index.
type pathSeg struct {
	key string
	idx int // -1 for a key
}

// describe turns yaml.v3's decoding errors into user-facing messages.
func describe(err error, name string, doc *yaml.Node) error {
	var root *yaml.Node
	if doc != nil && len(doc.Content) > 0 {
		root = doc.Content[0]
	}
	var te *yaml.TypeError
	if errors.As(err, &te) && len(te.Errors) > 0 {
		msgs := make([]string, 0, len(te.Errors))
		for _, e := range te.Errors {
			msgs = append(msgs, describeTypeError(e, name, root))
		}
		return errors.New(strings.Join(msgs, "; "))
	}
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	if line, reason, ok := yamlerr.Line(msg); ok {
		return fmt.Errorf("%s:%d: %s", name, line, reason)
	}
	if root != nil {
		if line, path := locate(root, reflect.TypeFor[Config](), nil); line > 0 {
			return fmt.Errorf("%s:%d: %s", name, line, prefixed(root, path, msg))
		}
	}
	return fmt.Errorf("%s: %s", name, msg)
}

func describeTypeError(e, name string, root *yaml.Node) string {
	if m := unknownFieldErr.FindStringSubmatch(e); m != nil {
		line, _ := strconv.Atoi(m[1])
		path, _ := findKey(root, nil, line, m[2])
		return fmt.Sprintf("%s:%d: %s", name, line, prefixed(root, path, fmt.Sprintf("unknown key %q", m[2])))
	}
	if m := cannotUnmarshal.FindStringSubmatch(e); m != nil {
		line, _ := strconv.Atoi(m[1])
		tag, value, goType := m[2], m[3], m[4]
		path, ok := findValue(root, line, tag, value, goType)
		want := ""
		if ok {
			want = wantFor(path, goType)
		} else {
			want = kindByName(goType)
		}
		got := map[string]string{"!!seq": "a list", "!!map": "a mapping", "!!null": "nothing"}[tag]
		if got == "" {
			got = strconv.Quote(value)
		}
		reason := fmt.Sprintf("expected %s, got %s", want, got)
		if ok && len(path) == 0 {
			reason = "the configuration must be a mapping of settings, got " + got
		}
		return fmt.Sprintf("%s:%d: %s", name, line, prefixed(root, path, reason))
	}
	if line, reason, ok := yamlerr.Line(e); ok {
		return fmt.Sprintf("%s:%d: %s", name, line, reason)
	}
	return name + ": " + e
}

// prefixed puts where the path points in front of msg.
func prefixed(root *yaml.Node, path []pathSeg, msg string) string {
	if w := where(root, path); w != "" {
		return w + ": " + msg
	}
	return msg
}

// where renders a path as the user sees it: rules by name, the rest as
// dotted keys.
func where(root *yaml.Node, path []pathSeg) string {
	head := ""
	if len(path) >= 2 && path[0].key == "rules" && path[1].idx >= 0 {
		head = fmt.Sprintf("rules[%d]", path[1].idx)
		if n := nodeAt(root, path[:2]); n != nil && n.Kind == yaml.MappingNode {
			for i := 0; i+1 < len(n.Content); i += 2 {
				if n.Content[i].Value == "name" && n.Content[i+1].Kind == yaml.ScalarNode && n.Content[i+1].Value != "" {
					head = fmt.Sprintf("rule %q", n.Content[i+1].Value)
				}
			}
		}
		path = path[2:]
	}
	var b strings.Builder
	for _, s := range path {
		if s.idx >= 0 {
			fmt.Fprintf(&b, "[%d]", s.idx)
			continue
		}
		if b.Len() > 0 {
			b.WriteByte('.')
		}
		b.WriteString(s.key)
	}
	switch {
	case head == "":
		return b.String()
	case b.Len() == 0:
		return head
	}
	return head + ": " + b.String()
}

func nodeAt(n *yaml.Node, path []pathSeg) *yaml.Node {
	for _, s := range path {
		if n == nil {
			return nil
		}
		var next *yaml.Node
		switch {
		case s.idx >= 0 && n.Kind == yaml.SequenceNode && s.idx < len(n.Content):
			next = n.Content[s.idx]
		case s.idx < 0 && n.Kind == yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				if n.Content[i].Value == s.key {
					next = n.Content[i+1]
				}
			}
		}
		n = next
	}
	return n
}

func appendSeg(path []pathSeg, s pathSeg) []pathSeg {
	return append(path[:len(path):len(path)], s)
}

// findKey returns the path of the mapping holding key at line.
func findKey(n *yaml.Node, path []pathSeg, line int, key string) ([]pathSeg, bool) {
	if n == nil {
		return nil, false
	}
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			if k := n.Content[i]; k.Line == line && k.Value == key {
				return path, true
			}
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			if p, ok := findKey(n.Content[i+1], appendSeg(path, pathSeg{key: n.Content[i].Value, idx: -1}), line, key); ok {
				return p, true
			}
		}
	case yaml.SequenceNode:
		for i, item := range n.Content {
			if p, ok := findKey(item, appendSeg(path, pathSeg{idx: i}), line, key); ok {
				return p, true
			}
		}
	}
	return nil, false
}

// findValue returns the path of the node at line that yaml.v3 could not
// decode: the deepest one there, preferring one of the reported kind and
// value that its key does not take (several can share a line in flow
// style).
func findValue(root *yaml.Node, line int, tag, value, goType string) ([]pathSeg, bool) {
	var best []pathSeg
	bestScore, found := -1, false
	var walk func(n *yaml.Node, path []pathSeg)
	walk = func(n *yaml.Node, path []pathSeg) {
		if n.Line == line {
			score := len(path)
			if n.ShortTag() == tag && (n.Kind != yaml.ScalarNode || n.Value == value) {
				score += 1000
				if k := map[yaml.Kind]string{yaml.SequenceNode: "a list", yaml.MappingNode: "a mapping"}[n.Kind]; k != "" && k != wantFor(path, goType) {
					score += 500
				}
			}
			if score > bestScore {
				best, bestScore, found = path, score, true
			}
		}
		switch n.Kind {
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				walk(n.Content[i+1], appendSeg(path, pathSeg{key: n.Content[i].Value, idx: -1}))
			}
		case yaml.SequenceNode:
			for i, item := range n.Content {
				walk(item, appendSeg(path, pathSeg{idx: i}))
			}
		}
	}
	if root != nil {
		walk(root, nil)
	}
	return best, found
}

// wantFor says what the key at path takes: from the configuration's Go
// types, walked by YAML keys, so types local to unmarshalers (plain) do not
// matter.
func wantFor(path []pathSeg, goType string) string {
	t, ok := reflect.TypeFor[Config](), true
	for _, s := range path {
		for t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		switch {
		case s.idx >= 0 && (t.Kind() == reflect.Slice || t.Kind() == reflect.Array):
			t = t.Elem()
		case s.idx < 0 && t.Kind() == reflect.Map:
			t = t.Elem()
		case s.idx < 0 && t.Kind() == reflect.Struct:
			t, ok = fieldType(t, s.key)
		default:
			ok = false
		}
		if !ok {
			return kindByName(goType)
		}
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == reflect.TypeFor[model.Duration]() {
		return "a duration such as 30s or 5m"
	}
	// A scalar type with its own unmarshaler (a URL, a secret) reads a
	// string; yaml.v3 names what it decoded into.
	if t.Kind() == reflect.Struct && !strings.Contains(goType, ".") {
		return kindByName(goType)
	}
	return kindOf(t)
}

func kindOf(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Struct, reflect.Map:
		return "a mapping"
	case reflect.Slice, reflect.Array:
		return "a list"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.String:
		return "a string"
	}
	return "another kind of value"
}

// kindByName reads yaml.v3's Go type name when the path gives no type.
func kindByName(goType string) string {
	goType = strings.TrimLeft(goType, "*")
	switch {
	case strings.HasPrefix(goType, "[]"):
		return "a list"
	case strings.HasPrefix(goType, "map["):
		return "a mapping"
	case goType == "bool":
		return "true or false"
	case goType == "string":
		return "a string"
	case strings.HasPrefix(goType, "int") || strings.HasPrefix(goType, "uint"):
		return "an integer"
	case strings.HasPrefix(goType, "float"):
		return "a number"
	}
	return "a mapping" // a package's struct
}

// locate finds the line and path of the key whose value fails to decode
// into t. Errors from nested unmarshalers (durations, prometheus/common's
// HTTP client config) carry no line; decoding one key at a time locates
// them.
func locate(n *yaml.Node, t reflect.Type, path []pathSeg) (int, []pathSeg) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if n.Kind != yaml.MappingNode || t.Kind() != reflect.Struct {
		return 0, nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		single := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Content: []*yaml.Node{k, v}}
		if single.Decode(reflect.New(t).Interface()) == nil {
			continue
		}
		kp := appendSeg(path, pathSeg{key: k.Value, idx: -1})
		ft, ok := fieldType(t, k.Value)
		if !ok {
			return k.Line, kp
		}
		for ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		if v.Kind == yaml.SequenceNode && ft.Kind() == reflect.Slice {
			for j, item := range v.Content {
				if item.Decode(reflect.New(ft.Elem()).Interface()) != nil {
					ip := appendSeg(kp, pathSeg{idx: j})
					if l, p := locate(item, ft.Elem(), ip); l > 0 {
						return l, p
					}
					return item.Line, ip
				}
			}
		}
		if l, p := locate(v, ft, kp); l > 0 {
			return l, p
		}
		return k.Line, kp
	}
	return 0, nil
}

// fieldType is the type of the field a YAML key decodes into, looking into
// inlined structs.
func fieldType(t reflect.Type, key string) (reflect.Type, bool) {
	for i := range t.NumField() {
		f := t.Field(i)
		name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == key && name != "" {
			return f.Type, true
		}
		if ft := f.Type; strings.Contains(opts, "inline") {
			for ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				if t, ok := fieldType(ft, key); ok {
					return t, true
				}
			}
		}
	}
	return nil, false
}
