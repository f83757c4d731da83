package prober

import (
	"context"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/greybox-probe/greybox/internal/testpeer/traefik"
)

// BenchmarkTraefikParity is the design's yardstick at three sizes, with
// default settings and with Traefik's own per_page of 100: one full probe per
// iteration on loopback. The fake servers run in the same process, so ns/op
// include serving the pages (rendered before timing starts) and B/op the
// fakes' share of the HTTP traffic.
func BenchmarkTraefikParity(b *testing.B) {
	for _, size := range []struct{ replicas, routers, perPage int }{
		{3, 500, 0}, {20, 5000, 0}, {20, 5000, 100}, {50, 20000, 0},
	} {
		name := "replicas=" + strconv.Itoa(size.replicas) + "/routers=" + strconv.Itoa(size.routers)
		var settings []string
		if size.perPage != 0 {
			name += "/per_page=" + strconv.Itoa(size.perPage)
			settings = append(settings, "per_page: "+strconv.Itoa(size.perPage))
		}
		b.Run(name, func(b *testing.B) {
			table := traefik.Generate(size.routers)
			var urls []string
			for range size.replicas {
				s := traefik.NewServer(table)
				b.Cleanup(s.Close)
				urls = append(urls, s.URL)
			}
			target := strings.Join(urls, ",")
			m := parityModule(b, "30s", settings...)
			logger := slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelDebug}))
			probe := func() {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				ok := ProbeTraefikParity(ctx, target, m, NewMetrics(), logger, Env{Guard: NewGuard(ctx, m.AllowedTargets)})
				cancel()
				if !ok {
					b.Fatal("probe failed")
				}
			}
			// The fakes render each page once; that is their cost, not
			// the probe's, so it stays out of ns/op and B/op.
			probe()
			b.ReportAllocs()
			for b.Loop() {
				probe()
			}
		})
	}
}
