package prober

import (
	"context"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/greybox-probe/greybox/internal/testpeer/traefik"
)

// BenchmarkTraefikParity is the design's yardstick: 20 replicas × 5,000
// routers on loopback, one full probe per iteration. The fake servers run in
// the same process, so ns/op and B/op include serving the pages.
func BenchmarkTraefikParity(b *testing.B) {
	for _, perPage := range []int{100, 1000} {
		b.Run("replicas=20/routers=5000/per_page="+strconv.Itoa(perPage), func(b *testing.B) {
			table := traefik.Generate(5000)
			var urls []string
			for range 20 {
				s := traefik.NewServer(table)
				b.Cleanup(s.Close)
				urls = append(urls, s.URL)
			}
			target := strings.Join(urls, ",")
			m := parityModule(b, "30s", "per_page: "+strconv.Itoa(perPage))
			logger := slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelDebug}))
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				ok := ProbeTraefikParity(ctx, target, m, prometheus.NewRegistry(), logger, Env{Guard: NewGuard(ctx, m.AllowedTargets)})
				cancel()
				if !ok {
					b.Fatal("probe failed")
				}
			}
		})
	}
}
