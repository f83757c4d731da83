package prober

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/greybox-probe/greybox/internal/testpeer/ttyd"
)

// BenchmarkProbe is one probe per op of the probers that have no
// benchmark of their own, against loopback peers, for `make bench`'s
// allocations-per-probe table (run with -benchmem). The peers run in the
// same process: B/op and allocs/op include their share.
func BenchmarkProbe(b *testing.B) {
	b.Run("http", func(b *testing.B) {
		body := []byte("<html><body>ok</body></html>\n")
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write(body) }))
		defer srv.Close()
		m := testModule(b, "prober: http\ntimeout: 5s\nhttp:\n  fail_if_body_matches_regexp: ['(?i)internal server error']")
		for b.Loop() {
			if r := runProbeDirect(b, ProbeHTTP, srv.URL, m, Env{}); !r.ok {
				b.Fatalf("probe failed:\n%s", r.logs)
			}
		}
	})
	b.Run("ttyd_token", func(b *testing.B) {
		srv := ttyd.NewServer(ttyd.Options{})
		defer srv.Close()
		m := testModule(b, "prober: ttyd_token\ntimeout: 5s")
		for b.Loop() {
			if r := runProbeDirect(b, probeTTYDToken, srv.URL, m, Env{}); !r.ok {
				b.Fatalf("probe failed:\n%s", r.logs)
			}
		}
	})
}
