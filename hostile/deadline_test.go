package hostile

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/greybox-probe/greybox/config"
	"github.com/greybox-probe/greybox/prober"
)

// slack is how far past its timeout a probe's answer may come and still
// count as "by the deadline": it asserts bounded, not fast, so a loaded
// CI machine cannot fail it. The bug class it catches ran 30 s and more.
const slack = 2 * time.Second

// Every second-hop request a module can make, pointed at a peer that
// accepts and never answers: the probe answers by its deadline and nothing
// it started is left running.
func TestDeadlineSecondHops(t *testing.T) {
	stall := newPeer(t, "127.0.0.1:0", hang)
	redirect := newLoopbackHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, stall.url()+"/", http.StatusFound)
	}))
	backend, _ := okServer(t)
	oauth := fmt.Sprintf(`{oauth2: {client_id: greybox, client_secret: s3cret, token_url: "%s/token"}}`, stall.url())
	proxy := fmt.Sprintf(`{proxy_url: %q}`, stall.url())
	yml := fmt.Sprintf(`
modules:
  http_oauth2: {prober: http, timeout: 1s, http: {http_client_config: %[1]s}}
  http_proxy: {prober: http, timeout: 1s, http: {http_client_config: %[2]s}}
  http_redirect: {prober: http, timeout: 1s, http: {http_client_config: {follow_redirects: true}}}
  token_oauth2: {prober: ttyd_token, timeout: 1s, ttyd_token: {http_client_config: %[1]s}}
  token_proxy: {prober: ttyd_token, timeout: 1s, ttyd_token: {http_client_config: %[2]s}}
  ws_token: {prober: ttyd_ws, timeout: 1s, ttyd_ws: {fetch_token: true}}
  ws_proxy: {prober: ttyd_ws, timeout: 1s, ttyd_ws: {fetch_token: false, http_client_config: %[2]s}}
  parity_oauth2: {prober: traefik_parity, timeout: 1s, traefik_parity: {http_client_config: %[1]s}}
  parity_proxy: {prober: traefik_parity, timeout: 1s, traefik_parity: {http_client_config: %[2]s}}
`, oauth, proxy)
	gb := newGreybox(t, yml, gbOptions{maxInFlight: 64})

	cases := []struct{ module, target string }{
		{"http_oauth2", backend.URL},
		{"http_proxy", backend.URL},
		{"http_redirect", redirect.URL},
		{"token_oauth2", backend.URL},
		{"token_proxy", backend.URL},
		{"ws_token", stall.url()},
		{"ws_proxy", backend.URL},
		{"parity_oauth2", backend.URL},
		{"parity_proxy", backend.URL},
	}
	for _, tc := range cases {
		t.Run(tc.module, func(t *testing.T) {
			code, body := gb.probe(t, tc.module, tc.target)
			if code != http.StatusOK {
				t.Fatalf("status %d: %s", code, body)
			}
			assertSuccess(t, body, 0)
			if d := mustSample(t, body, "probe_duration_seconds"); d > (time.Second + slack).Seconds() {
				t.Errorf("probe took %.1fs on a 1s timeout", d)
			}
			gb.waitIdle(t, 10*time.Second)
		})
	}
	if n := gb.ownMetric(t, "greybox_probe_overruns_total"); n != 0 {
		t.Errorf("%v probes needed the handler's backstop: the guard should have ended them", n)
	}
}

// Stuck second hops must not starve the other modules: once the stuck
// probes have answered, their slots are free again.
func TestDeadlineNoStarvation(t *testing.T) {
	stall := newPeer(t, "127.0.0.1:0", hang)
	backend, _ := okServer(t)
	yml := fmt.Sprintf(`
modules:
  stuck: {prober: http, timeout: 1s, http: {http_client_config: {oauth2: {client_id: a, client_secret: b, token_url: "%s/token"}}}}
  healthy: {prober: http, timeout: 1s}
`, stall.url())
	const slots = 20
	gb := newGreybox(t, yml, gbOptions{maxInFlight: slots})
	var wg sync.WaitGroup
	for range slots {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest(http.MethodGet, gb.http.URL+"/probe?module=stuck&target="+backend.URL, nil)
			resp, err := gb.http.Client().Do(req)
			if err == nil {
				resp.Body.Close()
			}
		}()
	}
	wg.Wait()
	gb.waitIdle(t, 10*time.Second)
	code, body := gb.probe(t, "healthy", backend.URL)
	if code != http.StatusOK {
		t.Fatalf("healthy module after %d stuck probes: %d %s", slots, code, body)
	}
	assertSuccess(t, body, 1)
}

// stuckRelease ends the hostile_stuck prober's wait.
var (
	stuckMu      sync.Mutex
	stuckRelease = make(chan struct{})
)

type stuckSettings struct{}

func (*stuckSettings) Validate() error { return nil }

func init() {
	// A prober that ignores its context entirely: the handler alone must
	// answer by the deadline.
	prober.Register("hostile_stuck", prober.Spec{
		Settings: func() config.Settings { return &stuckSettings{} },
		Probe: func(context.Context, string, config.Module, *prober.Metrics, *slog.Logger, prober.Env) bool {
			stuckMu.Lock()
			ch := stuckRelease
			stuckMu.Unlock()
			<-ch
			return true
		},
	})
}

func TestDeadlineProberIgnoresContext(t *testing.T) {
	gb := newGreybox(t, "modules:\n  stuck: {prober: hostile_stuck, timeout: 500ms}\n", gbOptions{maxInFlight: 4})
	code, body := gb.probe(t, "stuck", "http://127.0.0.1:9/")
	if code != http.StatusOK {
		t.Fatalf("status %d: %s", code, body)
	}
	assertSuccess(t, body, 0)
	if d := mustSample(t, body, "probe_duration_seconds"); d > (500*time.Millisecond + slack).Seconds() {
		t.Errorf("answer took %.1fs on a 0.5s timeout", d)
	}
	if n := gb.ownMetric(t, "greybox_probe_overruns_total"); n != 1 {
		t.Errorf("greybox_probe_overruns_total = %v, want 1", n)
	}
	// The slot stays taken while the prober really runs, and is freed when
	// it returns: the cap counts work, not answers.
	if n := gb.srv.ProbesInFlight(); n != 1 {
		t.Errorf("in flight while the prober is stuck: %d, want 1", n)
	}
	debug := gb.debug(t, "stuck", "http://127.0.0.1:9/")
	stuckMu.Lock()
	close(stuckRelease)
	stuckMu.Unlock()
	if !strings.Contains(debug, "did not return by its deadline") {
		t.Errorf("debug output does not say the prober overran:\n%s", debug)
	}
	gb.waitIdle(t, 10*time.Second)
}
