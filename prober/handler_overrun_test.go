package prober

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/greybox-probe/greybox/config"
)

// stuckRelease ends every test_stuck probe.
var stuckRelease = make(chan struct{})

func init() {
	// A prober that ignores its context: only the handler's watchdog can
	// answer for it.
	Register("test_stuck", Spec{
		Settings: func() config.Settings { return &testSettings{} },
		Probe: func(_ context.Context, _ string, _ config.Module, reg *Metrics, logger *slog.Logger, _ Env) bool {
			gauge(reg, "test_stuck_started", "1 once the stuck prober ran.").Set(1)
			logger.Info("test_stuck waiting")
			<-stuckRelease
			return true
		},
		CheckTarget: func(context.Context, string, config.Module, *Guard) error { return nil },
	})
}

// The watchdog's answer for a prober that overran reaches the client whole
// while the prober still runs, in every format, with its length and
// Connection: close (the handler's goroutine keeps the connection until
// the prober returns); the slot stays taken until then.
func TestHandlerOverrunAnswer(t *testing.T) {
	h, _, hist := newTestHandler(t, "modules:\n  stuck: {prober: test_stuck, timeout: 300ms}\n", 4)
	srv := httptest.NewServer(h)
	defer srv.Close()
	released := false
	release := func() {
		if !released {
			released = true
			close(stuckRelease)
		}
	}
	defer release()
	for _, c := range []struct{ name, accept, tail string }{
		{"text", "", "test_stuck_started 1\n"},
		{"openmetrics", "application/openmetrics-text; version=1.0.0", "# EOF\n"},
		{"protobuf", "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited", ""},
	} {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+"/probe?module=stuck&target=x", nil)
		if c.accept != "" {
			req.Header.Set("Accept", c.accept)
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatalf("%s: reading the answer: %v", c.name, err)
		}
		if resp.StatusCode != http.StatusOK || resp.ContentLength != int64(len(body)) || !resp.Close {
			t.Errorf("%s: status %d, Content-Length %d for %d bytes, Connection: close %v; want 200, the length, close",
				c.name, resp.StatusCode, resp.ContentLength, len(body), resp.Close)
		}
		if c.name != "protobuf" && (!strings.Contains(string(body), "probe_success 0") || !strings.HasSuffix(string(body), c.tail)) {
			t.Errorf("%s: answer\n%s\nwant probe_success 0 and the prober's own metric, ending %q", c.name, body, c.tail)
		}
		if len(body) == 0 {
			t.Errorf("%s: empty answer", c.name)
		}
	}
	if n := h.InFlight(); n != 3 {
		t.Errorf("%d probes in flight while 3 stuck probers run, want 3", n)
	}
	if e, ok := hist.Newest("stuck", "x"); !ok || !strings.Contains(e.Reason, "did not return by its deadline") {
		t.Errorf("history's entry for the overrun: %+v", e)
	}
	release()
}

// Every answer carries its length: net/http would chunk one over 2 KiB
// (an http probe's is 2.6 KB).
func TestHandlerAnswerLength(t *testing.T) {
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") }))
	defer target.Close()
	h, _, _ := newTestHandler(t, "modules:\n  http_2xx: {prober: http, timeout: 5s}\n", 4)
	srv := httptest.NewServer(h)
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL + "/probe?module=http_2xx&target=" + target.URL)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if len(body) <= 2048 || resp.ContentLength != int64(len(body)) || len(resp.TransferEncoding) != 0 {
		t.Errorf("answer of %d bytes: Content-Length %d, Transfer-Encoding %v", len(body), resp.ContentLength, resp.TransferEncoding)
	}
}
