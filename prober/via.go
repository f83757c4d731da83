package prober

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/proto"

	"github.com/greybox-probe/greybox/config"
)

// A module's via: sends the user's own request through every replica of
// a load balancer and names the one that fails. Through the Service a
// replica without the router fails a third of the probes at random and
// nothing says which replica it was; through each replica it fails every
// time, by name. Any prober whose Spec says Via runs this way: each
// replica gets a run of the prober of its own, with a guard (Through)
// that dials only that replica.

// viaConcurrency bounds the replicas one probe runs at once.
const viaConcurrency = 16

const viaForms = "want " + replicaSetForms + " or a comma-separated list of host:port"

// probeFor is the function the handler runs for a module: the prober,
// or the prober through each replica.
func probeFor(spec Spec, m config.Module) ProbeFunc {
	if m.Via != nil {
		return viaProbe(spec.Probe)
	}
	return spec.Probe
}

// viaSet is a parsed via.replicas: discovered, or a static host:port list.
type viaSet struct {
	discovered *replicaSet
	static     []string
}

func parseViaReplicas(spec string) (*viaSet, error) {
	spec = strings.TrimSpace(spec)
	rs, err := parseReplicaSet("replicas", spec, viaForms)
	if err != nil {
		return nil, err
	}
	if rs != nil {
		return &viaSet{discovered: rs}, nil
	}
	set := &viaSet{}
	for part := range strings.SplitSeq(spec, ",") {
		part = strings.TrimSpace(part)
		host, port, err := net.SplitHostPort(part)
		if err != nil {
			return nil, fmt.Errorf("replicas %q: %q is not host:port (%s)", spec, part, viaForms)
		}
		if _, err := parsePort(port); err != nil {
			return nil, fmt.Errorf("replicas %q: %q: %w", spec, part, err)
		}
		if host == "" || strings.ContainsAny(host, "/?#@ ") {
			return nil, fmt.Errorf("replicas %q: bad host in %q", spec, part)
		}
		if slices.Contains(set.static, part) {
			return nil, fmt.Errorf("replicas %q: %s listed twice", spec, part)
		}
		set.static = append(set.static, part)
	}
	return set, nil
}

// checkViaConfig is the load-time check of a via section.
func checkViaConfig(v *config.Via) error {
	_, err := parseViaReplicas(v.Replicas)
	return err
}

// checkViaTarget is the handler's check of a target sent through
// replicas: a URL, whose host is not dialled but is what the replicas
// route by, so it is checked as a destination behind a proxy is. The
// replicas' own addresses are checked one by one as each is probed.
func checkViaTarget(ctx context.Context, target string, m config.Module, g *Guard) error {
	u, err := ParseHTTPTarget(target)
	if err != nil {
		return err
	}
	if m.AllowedTargets.Empty() {
		return nil
	}
	return forbiddenOnly(g.viaProxy(ctx, u.Hostname(), "the replicas of "+m.Via.Replicas))
}

// viaReplica is one replica and how its run went.
type viaReplica struct {
	foundReplica
	ran      bool // the prober ran (it was not refused or left unstarted)
	ok       bool
	reason   string
	duration time.Duration
	reg      *Metrics
}

func (r *viaReplica) name() string {
	if r.pod != "" {
		return fmt.Sprintf("%s (pod %s/%s)", r.addr, r.namespace, r.pod)
	}
	return r.addr
}

func viaProbe(fn ProbeFunc) ProbeFunc {
	return func(ctx context.Context, target string, module config.Module, reg *Metrics, logger *slog.Logger, env Env) bool {
		v := module.Via
		total := gauge(reg, "probe_replicas", "Replicas discovered for via: (pods skipped as not running or terminating are not counted).")
		succeeded := gauge(reg, "probe_replicas_succeeded", "Replicas through which the probe succeeded.")
		replicaLabels := []string{"replica", "namespace", "pod"}
		successVec := newGaugeVec("probe_replica_success", "Whether the probe through this replica succeeded (1) or failed (0).", replicaLabels...)
		durationVec := newGaugeVec("probe_replica_duration_seconds", "How long the probe through this replica took, in seconds.", replicaLabels...)
		reg.MustRegister(successVec, durationVec)

		set, err := parseViaReplicas(v.Replicas)
		if err != nil { // checked at load; a bug if seen
			logger.Error("via.replicas", "err", err)
			return false
		}
		// Leave a little of the budget for the summary: a replica that
		// never answers must not make the whole probe miss the scrape.
		runCtx := ctx
		if dl, ok := ctx.Deadline(); ok {
			margin := min(time.Until(dl)/10, 250*time.Millisecond)
			var cancel context.CancelFunc
			runCtx, cancel = context.WithDeadline(ctx, dl.Add(-margin))
			defer cancel()
		}
		var found []foundReplica
		if set.discovered != nil {
			var ok bool
			if found, _, ok = discoverReplicas(runCtx, set.discovered, env, logger); !ok {
				return false
			}
		} else {
			for _, a := range set.static {
				found = append(found, foundReplica{addr: a})
			}
		}
		total.Set(float64(len(found)))
		need := v.MinSuccess.Need(len(found))
		if len(found) == 0 {
			logger.Error("no replicas found", "replicas", v.Replicas)
			return false
		}
		logger.Info("probing through each replica", "replicas", len(found), "min_success", v.MinSuccess.String(), "need", need)

		replicas := make([]*viaReplica, len(found))
		var wg sync.WaitGroup
		sem := make(chan struct{}, viaConcurrency)
		for i, f := range found {
			r := &viaReplica{foundReplica: f}
			replicas[i] = r
			wg.Go(func() {
				select {
				case sem <- struct{}{}:
					defer func() { <-sem }()
				case <-runCtx.Done():
					r.reason = "not started before the deadline"
					return
				}
				viaRun(runCtx, fn, target, module, logger, env, r)
			})
		}
		wg.Wait()

		n := 0
		var failing []string
		for _, r := range replicas {
			successVec.WithLabelValues(r.addr, r.namespace, r.pod).Set(boolValue(r.ok))
			durationVec.WithLabelValues(r.addr, r.namespace, r.pod).Set(r.duration.Seconds())
			if r.ok {
				n++
			} else {
				failing = append(failing, r.name()+": "+r.reason)
			}
		}
		succeeded.Set(float64(n))
		success := n >= need
		// The summary comes first: it is the probe's one-line reason.
		if !success {
			logger.Error(fmt.Sprintf("%d of %d replicas succeeded, min_success %s needs %d", n, len(replicas), v.MinSuccess, need),
				"failing", strings.Join(failing, "; "))
		}
		for _, r := range replicas {
			attrs := []any{"replica", r.addr, "duration_seconds", r.duration.Seconds()}
			if r.pod != "" {
				attrs = append(attrs, "namespace", r.namespace, "pod", r.pod)
			}
			switch {
			case r.ok:
				logger.Info("replica succeeded", attrs...)
			case success:
				logger.Warn("replica failed", append(attrs, "reason", r.reason)...)
			default:
				logger.Error("replica failed", append(attrs, "reason", r.reason)...)
			}
		}
		if success {
			logger.Info(fmt.Sprintf("%d of %d replicas succeeded, min_success %s", n, len(replicas), v.MinSuccess))
		}
		viaShowProberMetrics(replicas, success, reg, logger)
		return success
	}
}

// viaRun runs the prober through one replica. A replica whose address
// allowed_targets refuses is not dialled at all.
func viaRun(ctx context.Context, fn ProbeFunc, target string, module config.Module, logger *slog.Logger, env Env, r *viaReplica) {
	start := time.Now()
	defer func() { r.duration = time.Since(start) }()
	sub := env.Guard.Through(r.addr)
	defer sub.Finish()
	host, _, _ := net.SplitHostPort(r.addr)
	if _, err := sub.Resolve(ctx, host); err != nil {
		var fe *config.ForbiddenError
		if errors.As(err, &fe) {
			r.reason = "not dialled: " + fe.Reason
		} else {
			r.reason = "resolving the replica: " + err.Error()
		}
		return
	}
	attrs := []slog.Attr{slog.String("replica", r.addr)}
	if r.pod != "" {
		attrs = append(attrs, slog.String("pod", r.pod))
	}
	capture := newProbeLog(0) // the replica's first error line, redacted
	sublog := slog.New(slog.NewMultiHandler(replicaLines{logger.Handler().WithAttrs(attrs)}, capture.handler()))
	subEnv := env
	subEnv.Guard = sub
	r.reg = NewMetrics()
	r.ran = true
	ok, panicked := runProbe(ctx, fn, target, module, r.reg, sublog, subEnv)
	r.ok = ok
	if ok {
		return
	}
	switch {
	case viaUnrouted(r.reg):
		r.reason = "404 page not found: the replica has no router for this host"
	case panicked != "":
		r.reason = "prober panicked: " + panicked
	case capture.Reason() != "":
		r.reason = capture.Reason()
	default:
		r.reason = "failed without an error line"
	}
}

// viaUnrouted reports whether the prober said the reverse proxy answered
// its own 404 (probe_<prober>_routed 0): the replica has no router.
func viaUnrouted(reg *Metrics) bool {
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		if !strings.HasSuffix(mf.GetName(), "_routed") {
			continue
		}
		for _, m := range mf.Metric {
			if m.Gauge != nil && m.Gauge.GetValue() == 0 {
				return true
			}
		}
	}
	return false
}

// replicaLines writes a replica's lines to the probe's log with error
// lines as warnings: whether a replica's failure fails the probe is
// min_success's to say, and the probe's reason is the summary line.
type replicaLines struct{ next slog.Handler }

func (h replicaLines) Enabled(ctx context.Context, l slog.Level) bool { return h.next.Enabled(ctx, l) }

func (h replicaLines) Handle(ctx context.Context, r slog.Record) error {
	if r.Level >= slog.LevelError {
		r.Level = slog.LevelWarn
	}
	return h.next.Handle(ctx, r)
}

func (h replicaLines) WithAttrs(as []slog.Attr) slog.Handler {
	return replicaLines{h.next.WithAttrs(as)}
}
func (h replicaLines) WithGroup(name string) slog.Handler {
	return replicaLines{h.next.WithGroup(name)}
}

// viaShowProberMetrics puts one replica's prober metrics in the answer,
// so dashboards and alerts on the prober's own metrics keep working: a
// failing replica's when the probe failed, else a succeeding one's.
func viaShowProberMetrics(replicas []*viaReplica, success bool, reg *Metrics, logger *slog.Logger) {
	for _, r := range replicas {
		if !r.ran || r.ok != success {
			continue
		}
		mfs, err := r.reg.Gather()
		if err != nil {
			logger.Error("gathering a replica's metrics failed", "replica", r.addr, "err", err)
			return
		}
		if err := reg.Register(gatheredMetrics(mfs)); err != nil {
			logger.Error("showing a replica's metrics failed", "replica", r.addr, "err", err)
			return
		}
		logger.Debug("the prober's own metrics are this replica's", "replica", r.addr)
		return
	}
}

// gatheredMetrics serves metric families already gathered from another
// registry (an unchecked collector: it describes nothing).
type gatheredMetrics []*dto.MetricFamily

func (g gatheredMetrics) Describe(chan<- *prometheus.Desc) {}

func (g gatheredMetrics) Collect(ch chan<- prometheus.Metric) {
	for _, mf := range g {
		for _, m := range mf.Metric {
			names := make([]string, 0, len(m.Label))
			for _, l := range m.Label {
				names = append(names, l.GetName())
			}
			ch <- gatheredMetric{prometheus.NewDesc(mf.GetName(), mf.GetHelp(), names, nil), m}
		}
	}
}

type gatheredMetric struct {
	desc *prometheus.Desc
	m    *dto.Metric
}

func (g gatheredMetric) Desc() *prometheus.Desc { return g.desc }

func (g gatheredMetric) Write(out *dto.Metric) error {
	proto.Merge(out, g.m)
	return nil
}
