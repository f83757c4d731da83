package prober

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
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
