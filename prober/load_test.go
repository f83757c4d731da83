package prober

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/greybox-probe/greybox/config"
)

// loadProbes counts probes of the test_load_http prober (the http prober,
// counted) as the handler runs them.
var loadProbes struct {
	handler           atomic.Pointer[Handler]
	running, max, ran atomic.Int64
	maxGauge          atomic.Int64
}

func init() {
	Register("test_load_http", Spec{
		Settings: func() config.Settings {
			return &HTTPSettings{HTTPClientConfig: config.NewHTTPClientConfig(true)}
		},
		Probe: func(ctx context.Context, target string, m config.Module, reg *Metrics, logger *slog.Logger, env Env) bool {
			loadProbes.ran.Add(1)
			atomicMax(&loadProbes.max, loadProbes.running.Add(1))
			defer loadProbes.running.Add(-1)
			if h := loadProbes.handler.Load(); h != nil {
				atomicMax(&loadProbes.maxGauge, int64(testutil.ToFloat64(h.inFlight)))
			}
			return ProbeHTTP(ctx, target, m, reg, logger, env)
		},
	})
}

func atomicMax(a *atomic.Int64, v int64) {
	for {
		old := a.Load()
		if v <= old || a.CompareAndSwap(old, v) {
			return
		}
	}
}

// holdTarget holds every request until release is closed or the request
// ends (the probe's deadline), and counts how many it holds at once.
type holdTarget struct {
	*httptest.Server
	release         chan struct{}
	held, max, seen atomic.Int64
	// reached is closed once held first reaches want.
	want    int64
	reached chan struct{}
	once    sync.Once
}

func newHoldTarget(want int64) *holdTarget {
	ht := &holdTarget{release: make(chan struct{}), want: want, reached: make(chan struct{})}
	ht.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ht.seen.Add(1)
		n := ht.held.Add(1)
		defer ht.held.Add(-1)
		atomicMax(&ht.max, n)
		if ht.want > 0 && n >= ht.want {
			ht.once.Do(func() { close(ht.reached) })
		}
		select {
		case <-ht.release:
		case <-r.Context().Done():
		}
	}))
	return ht
}

// deadAddr is a loopback address nothing listens on any more.
func deadAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

type loadAnswer struct {
	code    int
	body    string
	elapsed time.Duration
}

func loadProbe(h http.Handler, module, target string) loadAnswer {
	req := httptest.NewRequest(http.MethodGet, "/probe?module="+module+"&target="+target, nil)
	rec := httptest.NewRecorder()
	start := time.Now()
	h.ServeHTTP(rec, req)
	return loadAnswer{rec.Code, rec.Body.String(), time.Since(start)}
}

const loadConfig = `
modules:
  load:
    prober: test_load_http
    timeout: 500ms
    allowed_targets: ["127.0.0.0/8"]
  hold:
    prober: test_load_http
    timeout: 10s
    allowed_targets: ["127.0.0.0/8"]
`

// TestLoad500ConcurrentProbes runs 500 probes at once through the real
// handler against slow and dead loopback targets, with a cap of 200 in
// flight. It proves the cap holds under load and that overload costs a
// 503, not a queue: every request is answered, every 503 is a request that
// found the cap full (503s + probes run = requests), no more than 200
// probes ever run at once, every probe answers within its deadline plus
// slack, and nothing is left running afterwards.
func TestLoad500ConcurrentProbes(t *testing.T) {
	if testing.Short() {
		t.Skip("load test")
	}
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	const (
		total    = 500
		capacity = 200
		slack    = 5 * time.Second
	)
	cfg, err := config.Parse([]byte(loadConfig), "load.yml")
	if err != nil {
		t.Fatal(err)
	}
	h := NewHandler(HandlerOptions{Config: func() *config.Config { return cfg }, MaxInFlight: capacity, History: NewHistory(16, 0)})
	loadProbes.handler.Store(h)
	defer loadProbes.handler.Store(nil)
	loadProbes.ran.Store(0)
	loadProbes.max.Store(0)
	loadProbes.maxGauge.Store(0)

	dead := "http://" + deadAddr(t) + "/"

	// Phase 1, deterministic: fill every slot with a held probe, then
	// 300 more requests must all be refused at once.
	hold := newHoldTarget(capacity)
	answers := make(chan loadAnswer, total)
	var wg sync.WaitGroup
	for range capacity {
		wg.Go(func() { answers <- loadProbe(h, "hold", hold.URL+"/") })
	}
	select {
	case <-hold.reached:
	case <-time.After(8 * time.Second):
		t.Fatalf("only %d of %d probes reached the held target", hold.held.Load(), capacity)
	}
	for i := range total - capacity {
		target := hold.URL + "/"
		if i%2 == 0 {
			target = dead
		}
		a := loadProbe(h, "load", target)
		if a.code != http.StatusServiceUnavailable || !strings.Contains(a.body, "too many probes in flight (limit 200)") {
			t.Fatalf("request %d with every slot taken: %d %q", i, a.code, a.body)
		}
		if a.elapsed > slack {
			t.Errorf("503 took %v; overload must answer at once", a.elapsed)
		}
	}
	close(hold.release)
	wg.Wait()
	close(answers)
	for a := range answers {
		if a.code != http.StatusOK || !strings.Contains(a.body, "probe_success 1") {
			t.Errorf("held probe: %d %q", a.code, a.body)
		}
	}
	if got := testutil.ToFloat64(h.requests.WithLabelValues("load", resultOverloaded)); got != total-capacity {
		t.Errorf("overloaded counter = %v, want %d", got, total-capacity)
	}
	hold.Close()

	// Phase 2, realistic: 500 at once, 3 in 5 against a target that
	// holds until the probe's 500ms deadline, the rest against a dead port.
	slow := newHoldTarget(0)
	ranBefore := loadProbes.ran.Load()
	start := make(chan struct{})
	answers = make(chan loadAnswer, total)
	for i := range total {
		target := slow.URL + "/"
		if i%5 >= 3 {
			target = dead
		}
		wg.Go(func() {
			<-start
			answers <- loadProbe(h, "load", target)
		})
	}
	close(start)
	wg.Wait()
	close(answers)
	var ok, overloaded int
	for a := range answers {
		switch a.code {
		case http.StatusOK:
			ok++
			if !strings.Contains(a.body, "probe_success 0") {
				t.Errorf("a slow or dead target succeeded: %q", a.body)
			}
			if a.elapsed > 500*time.Millisecond+slack {
				t.Errorf("probe answered after %v with a 500ms timeout", a.elapsed)
			}
		case http.StatusServiceUnavailable:
			overloaded++
		default:
			t.Errorf("unexpected answer %d %q", a.code, a.body)
		}
	}
	ran := loadProbes.ran.Load() - ranBefore
	t.Logf("phase 2: %d probed, %d refused; at most %d probes and %d held target requests at once",
		ok, overloaded, loadProbes.max.Load(), slow.max.Load())
	if ok+overloaded != total {
		t.Errorf("%d answers, want %d", ok+overloaded, total)
	}
	if int64(ok) != ran {
		t.Errorf("%d probes answered 200 but %d ran", ok, ran)
	}
	if got := testutil.ToFloat64(h.requests.WithLabelValues("load", resultOverloaded)); int(got) != total-capacity+overloaded {
		t.Errorf("overloaded counter = %v, want %d", got, total-capacity+overloaded)
	}
	if m := loadProbes.max.Load(); m > capacity {
		t.Errorf("%d probes ran at once, cap is %d", m, capacity)
	}
	if m := loadProbes.maxGauge.Load(); m > capacity {
		t.Errorf("greybox_probes_in_flight reached %d, cap is %d", m, capacity)
	}
	if m := slow.max.Load(); m > capacity {
		t.Errorf("the slow target held %d requests at once, cap is %d", m, capacity)
	}
	if got := testutil.ToFloat64(h.inFlight); got != 0 {
		t.Errorf("greybox_probes_in_flight = %v after the load", got)
	}
	slow.Close()
}
