package prober

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"k8s.io/client-go/kubernetes"

	"github.com/greybox-probe/greybox/config"
	"github.com/greybox-probe/greybox/internal/syncbuf"
)

// testModule parses one module's YAML (the part under its name).
func testModule(t testing.TB, yml string) config.Module {
	t.Helper()
	var b strings.Builder
	b.WriteString("modules:\n  m:\n")
	for _, line := range strings.Split(strings.TrimSpace(yml), "\n") {
		b.WriteString("    " + line + "\n")
	}
	cfg, err := config.Parse([]byte(b.String()), "test.yml")
	if err != nil {
		t.Fatalf("module config: %v\n%s", err, b.String())
	}
	return *cfg.Modules["m"]
}

// probeResult is what one direct prober call produced.
type probeResult struct {
	ok      bool
	reg     *Metrics
	logs    string
	elapsed time.Duration
}

// syncBuffer is a log sink safe for concurrent writers.
type syncBuffer = syncbuf.Buffer

// runProbeDirect calls a prober the way the handler does, with the module's
// timeout as the deadline.
func runProbeDirect(t testing.TB, fn ProbeFunc, target string, m config.Module, env Env) probeResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(m.Timeout))
	defer cancel()
	if env.Guard == nil {
		env.Guard = NewGuard(ctx, m.AllowedTargets)
	}
	if env.Kube == nil {
		env.Kube = func() (kubernetes.Interface, error) { return nil, ErrNoKube }
	}
	logs := &syncBuffer{}
	logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	reg := NewMetrics()
	start := time.Now()
	ok := fn(ctx, target, m, reg, logger, env)
	return probeResult{ok: ok, reg: reg, logs: logs.String(), elapsed: time.Since(start)}
}

// metricValue returns the value of the series name{labels}, and whether it exists.
func metricValue(t testing.TB, reg prometheus.Gatherer, name string, labels map[string]string) (float64, bool) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if labelsMatch(m, labels) {
				switch {
				case m.Gauge != nil:
					return m.GetGauge().GetValue(), true
				case m.Counter != nil:
					return m.GetCounter().GetValue(), true
				case m.Untyped != nil:
					return m.GetUntyped().GetValue(), true
				}
			}
		}
	}
	return 0, false
}

func labelsMatch(m *dto.Metric, want map[string]string) bool {
	got := map[string]string{}
	for _, lp := range m.GetLabel() {
		got[lp.GetName()] = lp.GetValue()
	}
	for k, v := range want {
		if got[k] != v {
			return false
		}
	}
	return true
}

// mustMetric fails the test unless name{labels} == want.
func mustMetric(t testing.TB, reg prometheus.Gatherer, name string, labels map[string]string, want float64) {
	t.Helper()
	got, ok := metricValue(t, reg, name, labels)
	if !ok {
		t.Errorf("metric %s%v missing", name, labels)
		return
	}
	if got != want {
		t.Errorf("metric %s%v = %v, want %v", name, labels, got, want)
	}
}
