package config

import (
	"fmt"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// yaml.v3 compares every pair of keys of a mapping it decodes (its
// duplicate check), so handing it the modules mapping whole costs
// modules² comparisons: 40k modules took 49 s. This counts, without timing
// anything, what the modules decoder hands to yaml.v3: one call per
// module, each seeing a one-entry mapping, so the key comparisons yaml.v3
// makes total len(modules), not len(modules)².
func TestModulesDecodeIsLinear(t *testing.T) {
	const n = 5000
	var b strings.Builder
	b.WriteString("m0: {prober: x}\n")
	for i := 1; i < n; i++ {
		fmt.Fprintf(&b, "m%d: {prober: x}\n", i)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(b.String()), &doc); err != nil {
		t.Fatal(err)
	}
	node := doc.Content[0]
	var calls, comparisons, largest int
	unmarshal := func(v any) error {
		if c, ok := v.(*nodeCapture); ok {
			c.node = node
			return nil
		}
		calls++
		keys := len(node.Content) / 2
		comparisons += keys * (keys - 1) / 2 // what yaml.v3's duplicate check costs on this view
		largest = max(largest, keys)
		m, ok := v.(*map[string]*Module)
		if !ok {
			t.Fatalf("decoded into %T", v)
		}
		(*m)[node.Content[0].Value] = &Module{Prober: "x"}
		return nil
	}
	var mm moduleMap
	if err := mm.UnmarshalYAML(unmarshal); err != nil {
		t.Fatal(err)
	}
	if calls != n || largest != 1 || comparisons != 0 {
		t.Errorf("%d modules: %d decodes, largest view %d keys, %d key comparisons in yaml.v3; want %d, 1, 0", n, calls, largest, comparisons, n)
	}
	if len(mm.byName) != n || len(mm.order) != n || mm.order[0].name != "m0" || mm.order[n-1].name != fmt.Sprintf("m%d", n-1) {
		t.Errorf("got %d modules, %d in order", len(mm.byName), len(mm.order))
	}
	if len(node.Content) != 2*n {
		t.Errorf("the modules node was not restored: %d entries", len(node.Content)/2)
	}
}

// One error per module must not make the error message quadratic either:
// naming the module of each line is a binary search.
func TestModuleIndex(t *testing.T) {
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte("default_module: b\nmodules:\n  a:\n    prober: http\n  b: {prober: http}\n  c:\n    prober: http\n"), &doc); err != nil {
		t.Fatal(err)
	}
	idx := newModuleIndex(&doc)
	for line, want := range map[int]string{1: "", 2: "", 3: `module "a": `, 4: `module "a": `, 5: `module "b": `, 6: `module "c": `, 99: `module "c": `} {
		if got := idx.at(line); got != want {
			t.Errorf("line %d: %q, want %q", line, got, want)
		}
	}
	if got := newModuleIndex(&yaml.Node{}).at(3); got != "" {
		t.Errorf("empty document: %q", got)
	}
}
