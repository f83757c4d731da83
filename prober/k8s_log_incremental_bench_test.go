package prober

import (
	"fmt"
	"net/http/httptest"
	"testing"
	"time"
)

// trim drops lines older than before from every current file: what is
// outside every window changes no count, and the benchmark's log would
// otherwise grow with b.N.
func (a *logAPI) trim(before time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, c := range a.ctrs {
		i := 0
		for i < len(c.cur) && c.cur[i].ts.Before(before) {
			i++
		}
		c.cur = c.cur[i:]
	}
}

// BenchmarkK8sLogScrape is one scrape every 30 s of an 11 min window of a
// whisker pod logging 5 lines a second (one in 20 an error), in the
// steady state: the full mode re-reads the window, the incremental mode
// the last 30 s. log-bytes/scrape is what the API server sent.
func BenchmarkK8sLogScrape(b *testing.B) {
	for _, mode := range []string{"full", "incremental"} {
		b.Run(mode, func(b *testing.B) {
			t0 := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
			api := newLogAPI(t0, "whisker-1")
			srv := httptest.NewServer(api)
			defer srv.Close()
			env := fastClient(b, srv)
			full, incr := logModules(b, api, "")
			m := full
			if mode == "incremental" {
				m = incr
			}
			sec := 0
			writeUntil := func(to int) {
				for ; sec < to; sec++ {
					base := t0.Add(time.Duration(sec) * time.Second)
					for k := range 5 {
						text := fmt.Sprintf("2026-12-02 10:00:00.000 [INFO][1] whisker-backend/pkg/handlers/v1/flows.go 85: Received flow batch from goldmane count=%d cluster=default filter={\"namespace\":\"app-%d\"}", sec%97, k)
						if (sec*5+k)%20 == 0 {
							text = "2026-12-02 10:00:00.000 [ERROR][1] whisker-backend/pkg/handlers/v1/flows.go 92: failed to stream flows error=rpc error: code = Unavailable desc = lookup goldmane: i/o timeout"
						}
						api.write("whisker-1", base.Add(time.Duration(k)*190*time.Millisecond), text, false)
					}
				}
			}
			step := func() {
				writeUntil(sec + 30)
				api.advance(t0.Add(time.Duration(sec) * time.Second).Sub(api.clock()))
				api.trim(api.clock().Add(-12 * time.Minute))
				r := runProbeDirect(b, probeK8sLogErrors, "calico-system/k8s-app=whisker", m, env)
				if v, _ := metricValue(b, r.reg, "probe_k8s_log_matched_lines", ctr("whisker-1", logAPIContainer)); v != 165 && sec > 11*60 {
					b.Fatalf("matched %v, want 165 (660 s x 5 lines / 20)\n%s", v, r.logs)
				}
			}
			// Fill the window, then one scrape so the incremental mode has
			// its state: the steady state is what is measured.
			for sec < 12*60 {
				step()
			}
			b.ReportAllocs()
			before := api.sent()
			b.ResetTimer()
			for b.Loop() {
				step()
			}
			b.StopTimer()
			b.ReportMetric(float64(api.sent()-before)/float64(b.N), "log-bytes/scrape")
		})
	}
}
