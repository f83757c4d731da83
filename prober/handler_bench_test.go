package prober

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// BenchmarkHandlerHTTP is one whole /probe of the http module per op, as
// Prometheus asks for it: the handler's own cost (metrics, log capture,
// history, the answer's encoding) on top of the prober's. The target runs in
// the same process.
func BenchmarkHandlerHTTP(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) }))
	defer srv.Close()
	h, _, _ := newTestHandler(b, "modules:\n  http_2xx:\n    prober: http\n    timeout: 5s\n", 100)
	url := "/probe?module=http_2xx&target=" + srv.URL
	b.ReportAllocs()
	for b.Loop() {
		rec := get(h, url, nil)
		if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), "probe_success 1") {
			b.Fatalf("probe: %d %s", rec.Code, rec.Body)
		}
	}
}

// BenchmarkHandlerFloor is bench/cmd/floor's work in the same harness as
// BenchmarkHandlerHTTP: one GET on a fresh connection, three metric
// lines. The two side by side are greybox's own cost per probe.
func BenchmarkHandlerFloor(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) }))
	defer srv.Close()
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	floor := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
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
	url := "/probe?target=" + srv.URL
	b.ReportAllocs()
	for b.Loop() {
		rec := get(floor, url, nil)
		if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), "probe_success 1") {
			b.Fatalf("probe: %d %s", rec.Code, rec.Body)
		}
	}
}
