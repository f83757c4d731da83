package prober

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"
)

// BenchmarkHandlerHTTP is one whole /probe of the http module per op, as
// Prometheus asks for it: the handler's own cost (metrics, log capture,
// history, the answer's encoding) on top of the prober's. The target runs in
// the same process.
func BenchmarkHandlerHTTP(b *testing.B) {
	h, _, _ := newTestHandler(b, "modules:\n  http_2xx:\n    prober: http\n    timeout: 5s\n", 100)
	benchSerial(b, h, "/probe?module=http_2xx&target="+benchTarget(b))
}

// BenchmarkHandlerFloor is bench/cmd/floor's work in the same harness as
// BenchmarkHandlerHTTP: one GET on a fresh connection, three metric
// lines. The two side by side are greybox's own cost per probe.
func BenchmarkHandlerFloor(b *testing.B) {
	benchSerial(b, floorHandler(), "/probe?target="+benchTarget(b))
}

// The two under concurrency (8 probes at once on 2 cores, as `make bench`
// loads them at concurrency 8): costs that only show when probes overlap,
// such as GC marking and scheduling, count here.
func BenchmarkHandlerHTTPParallel(b *testing.B) {
	h, _, _ := newTestHandler(b, "modules:\n  http_2xx:\n    prober: http\n    timeout: 5s\n", 100)
	benchParallel(b, h, "/probe?module=http_2xx&target="+benchTarget(b))
}

func BenchmarkHandlerFloorParallel(b *testing.B) {
	benchParallel(b, floorHandler(), "/probe?target="+benchTarget(b))
}

// benchTarget is the probed page: a fixed 3-byte 200, closed with b.
func benchTarget(b *testing.B) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) }))
	b.Cleanup(srv.Close)
	return srv.URL
}

// benchSerial asks h for url once per op, checking the probe succeeded.
func benchSerial(b *testing.B, h http.Handler, url string) {
	b.ReportAllocs()
	for b.Loop() {
		rec := get(h, url, nil)
		if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), "probe_success 1") {
			b.Fatalf("probe: %d %s", rec.Code, rec.Body)
		}
	}
}

func benchParallel(b *testing.B, h http.Handler, url string) {
	b.ReportAllocs()
	b.SetParallelism(8 / max(1, runtime.GOMAXPROCS(0)))
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			rec := get(h, url, nil)
			if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), "probe_success 1") {
				b.Errorf("probe: %d %s", rec.Code, rec.Body)
				return
			}
		}
	})
}

// floorHandler is bench/cmd/floor's handler.
func floorHandler() http.Handler {
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start, ok := time.Now(), 0
		if resp, err := client.Get(r.URL.Query().Get("target")); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode/100 == 2 {
				ok = 1
			}
		}
		fmt.Fprintf(w, "probe_duration_seconds %g\nprobe_success %d\nprobe_http_status_code 200\n", time.Since(start).Seconds(), ok)
	})
}
