package hostile

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/greybox-probe/greybox/prober"
)

func TestMemoryTargetLength(t *testing.T) {
	gb := newGreybox(t, "modules:\n  web: {prober: http, timeout: 1s}\n", gbOptions{})
	long := "http://127.0.0.1:9/" + strings.Repeat("a", 900<<10)
	code, body := gb.probe(t, "web", long)
	if code != http.StatusBadRequest || !strings.Contains(body, "limit") {
		t.Fatalf("900 KB target: %d %q, want 400 naming the limit", code, body)
	}
	if len(body) > 1024 {
		t.Errorf("the refusal echoes the target: %d bytes", len(body))
	}
	edge := "http://127.0.0.1:9/" + strings.Repeat("a", prober.MaxTargetLength-len("http://127.0.0.1:9/"))
	if code, body := gb.probe(t, "web", edge); code != http.StatusOK {
		t.Fatalf("target of exactly MaxTargetLength: %d %s", code, body)
	}
}

// A burst of the largest targets greybox accepts, to a module that fails
// (failures are kept longest), must leave memory within history's bound:
// the documented figure is --history.max-bytes plus a small constant.
func TestMemoryBurstBound(t *testing.T) {
	const historyBytes = 2 << 20
	gb := newGreybox(t, "modules:\n  web: {prober: http, timeout: 1s}\n", gbOptions{historyBytes: historyBytes, maxInFlight: 64, discardLog: true})
	prefix := "http://127.0.0.1:9/?"
	heapBefore := heapAfterGC()

	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for i := range 400 {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			pad := strings.Repeat("x", prober.MaxTargetLength-len(prefix)-8)
			target := fmt.Sprintf("%s%08d%s", prefix, i, pad)[:prober.MaxTargetLength]
			req, _ := http.NewRequest(http.MethodGet, gb.http.URL+"/probe?module=web&target="+target, nil)
			resp, err := gb.http.Client().Do(req)
			if err == nil {
				resp.Body.Close()
			}
		}()
	}
	wg.Wait()
	gb.waitIdle(t, 10*time.Second)

	if got := gb.srv.HistoryBytes(); got > historyBytes {
		t.Errorf("history holds %d bytes, bound %d", got, historyBytes)
	}
	_, landing := gb.get(t, "/")
	if len(landing) > 1<<20 {
		t.Errorf("landing page is %d bytes after the burst", len(landing))
	}
	growth := int64(heapAfterGC()) - int64(heapBefore)
	t.Logf("heap growth after 400 probes with %d-byte targets: %.1f MiB (history bound %d MiB)", prober.MaxTargetLength, float64(growth)/(1<<20), historyBytes>>20)
	if limit := int64(historyBytes + 8<<20); growth > limit {
		t.Errorf("heap grew %d bytes, want under %d", growth, limit)
	}
}

func heapAfterGC() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// History alone: many probes with the largest captured log stay within
// the byte bound, newest kept, failures outliving successes.
func TestMemoryHistoryBytes(t *testing.T) {
	const bound = 4 << 20
	h := prober.NewHistory(100, bound)
	logs := strings.Repeat("l", 256<<10)
	var last *prober.Entry
	for i := range 1000 {
		last = &prober.Entry{Module: "m", Target: fmt.Sprint(i), Logs: logs, Success: i%2 == 0}
		h.Add(last)
		if b := h.Bytes(); b > bound {
			t.Fatalf("after %d entries history holds %d bytes, bound %d", i+1, b, bound)
		}
	}
	if _, ok := h.Get(last.ID); !ok {
		t.Fatal("the newest entry was dropped")
	}
	failures := 0
	for _, e := range h.List() {
		if !e.Success {
			failures++
		}
	}
	if failures == 0 {
		t.Fatal("no failure kept")
	}
	// One entry larger than the whole bound is still kept: it is the one
	// someone is about to look at.
	small := prober.NewHistory(10, 1024)
	big := &prober.Entry{Module: "m", Target: "t", Logs: logs}
	small.Add(big)
	if _, ok := small.Get(big.ID); !ok {
		t.Fatal("an entry over the bound on its own was dropped")
	}
}

// Response bodies held across probes in flight share one budget: a body
// that would pass it fails its probe with the reason instead of growing
// memory.
func TestMemoryBodyBudget(t *testing.T) {
	big := strings.Repeat("b", 1<<20)
	srv := newLoopbackHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte(big))
	}))
	yml := `
modules:
  regexp:
    prober: http
    timeout: 2s
    http: {fail_if_body_not_matches_regexp: ["b+"], body_size_limit: 8MiB}
  plain:
    prober: http
    timeout: 2s
`
	gb := newGreybox(t, yml, gbOptions{maxBodyMemory: 256 << 10})
	_, body := gb.probe(t, "regexp", srv.URL)
	assertSuccess(t, body, 0)
	if debug := gb.debug(t, "regexp", srv.URL); !strings.Contains(debug, "max-body-memory") {
		t.Errorf("debug output does not name the budget:\n%s", debug)
	}
	// A body that is only counted, not kept, needs no budget.
	_, body = gb.probe(t, "plain", srv.URL)
	assertSuccess(t, body, 1)
}

// A target that answers with headers that never end: net/http would read
// 10 MiB of them per probe and gorilla's upgrade had no bound at all; the
// guard's connections stop each probe at MaxResponseHeaderBytes.
func TestMemoryHeaderFlood(t *testing.T) {
	flood := func(status string) func(p *peer, c net.Conn, _ string) {
		return func(p *peer, c net.Conn, _ string) {
			_, _ = io.WriteString(c, "HTTP/1.1 "+status+"\r\nContent-Type: application/json\r\n")
			line := []byte("X-Pad: " + strings.Repeat("a", 1000) + "\r\n")
			for {
				if _, err := c.Write(line); err != nil {
					return
				}
			}
		}
	}
	ok := newPeer(t, "127.0.0.1:0", flood("200 OK"))
	upgrade := newPeer(t, "127.0.0.1:0", flood("101 Switching Protocols"))
	yml := `
modules:
  web: {prober: http, timeout: 3s}
  token: {prober: ttyd_token, timeout: 3s}
  ws: {prober: ttyd_ws, timeout: 3s, ttyd_ws: {fetch_token: false}}
  parity: {prober: traefik_parity, timeout: 3s}
`
	gb := newGreybox(t, yml, gbOptions{})
	for _, tc := range []struct{ module, target string }{
		{"web", ok.url()}, {"token", ok.url()}, {"ws", upgrade.url()}, {"parity", ok.url()},
	} {
		t.Run(tc.module, func(t *testing.T) {
			debug := gb.debug(t, tc.module, tc.target)
			if !strings.Contains(debug, "probe_success 0") || !strings.Contains(debug, "response headers larger than 64 KiB") {
				t.Errorf("debug output:\n%s", debug)
			}
		})
	}
}
