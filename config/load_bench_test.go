package config_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/greybox-probe/greybox/config"
)

// manyModules is a config of n http modules, each with a few settings, the
// shape of a generated config (one module per target).
func manyModules(n int) []byte {
	var b strings.Builder
	b.WriteString("modules:\n")
	for i := range n {
		fmt.Fprintf(&b, "  m%d:\n    prober: http\n    timeout: 5s\n    http:\n      method: GET\n      valid_status_codes: [200, 302]\n", i)
	}
	return []byte(b.String())
}

// BenchmarkLoad: loading must stay linear in the number of modules (ns/op
// per size should grow ~proportionally; it once grew quadratically).
func BenchmarkLoad(b *testing.B) {
	for _, n := range []int{1000, 5000, 20000} {
		data := manyModules(n)
		b.Run(fmt.Sprintf("modules=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				cfg, err := config.Parse(data, "bench.yml")
				if err != nil {
					b.Fatal(err)
				}
				if len(cfg.Modules) != n {
					b.Fatalf("%d modules, want %d", len(cfg.Modules), n)
				}
			}
		})
	}
}
