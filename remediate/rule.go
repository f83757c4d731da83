package remediate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/common/model"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/clock"
)

// Candidate is one target a rule's expression returned: a pod, identified
// by the rule's target labels. Like a Prometheus alert it is pending until
// it has been present in every evaluation for the rule's `for`; a candidate
// missing from one successful evaluation starts over.
type Candidate struct {
	Namespace    string
	Pod          string
	Labels       model.Metric
	Value        float64
	PendingSince time.Time
	LastSeen     time.Time
	// LastResult is the outcome of the last attempt: a result or skipped_<reason>.
	LastResult  string
	LastMessage string
}

// Key identifies the candidate's target.
func (c *Candidate) Key() string { return c.Namespace + "/" + c.Pod }

// ruleState is a rule's evaluation state, owned by the evaluating goroutine.
type ruleState struct {
	rule       *Rule
	candidates map[string]*Candidate
	lastEval   time.Time
	lastError  string
}

// ActionLog is one entry of the status page's recent actions.
type ActionLog struct {
	Time    time.Time
	Rule    string
	Action  string
	Target  string
	Object  string
	Result  string
	Message string
}

// Options wires an Engine.
type Options struct {
	Config *Config
	Source Source
	Kube   kubernetes.Interface
	// Store keeps action records across restarts; nil keeps them in memory.
	Store Store
	// Clock drives `for`, cooldowns and windows; nil is the real clock.
	Clock    clock.WithTicker
	Logger   *slog.Logger
	Metrics  *Metrics
	Identity string
	// Leader is the initial leadership; with leader election the elector
	// flips it through SetLeader.
	Leader bool
}

const recentActions = 50

// Engine evaluates the rules. Evaluate is level-triggered and idempotent:
// everything it decides comes from the current query results, the live
// objects and the persisted records.
type Engine struct {
	cfg     *Config
	source  Source
	kube    kubernetes.Interface
	store   Store
	clock   clock.WithTicker
	logger  *slog.Logger
	metrics *Metrics
	events  *eventRecorder
	leader  atomic.Bool

	evalMu sync.Mutex // one evaluation at a time
	rules  []*ruleState
	ledger ledger
	loaded bool // ledger reloaded from the store in this evaluation

	mu     sync.Mutex // guards snapshot and recent, read by the status page
	snap   []RuleStatus
	recent []ActionLog
	ready  bool
}

// NewEngine builds an engine; it does not start anything.
func NewEngine(o Options) (*Engine, error) {
	if o.Config == nil || o.Source == nil {
		return nil, errors.New("remediate: config and source are required")
	}
	e := &Engine{
		cfg: o.Config, source: o.Source, kube: o.Kube, store: o.Store,
		clock: o.Clock, logger: o.Logger, metrics: o.Metrics,
	}
	if e.store == nil {
		e.store = &MemoryStore{}
	}
	if e.clock == nil {
		e.clock = clock.RealClock{}
	}
	if e.logger == nil {
		e.logger = slog.New(slog.DiscardHandler)
	}
	if e.metrics == nil {
		e.metrics = NewMetrics(nil)
	}
	e.events = &eventRecorder{client: o.Kube, instance: o.Identity, logger: e.logger}
	for _, r := range o.Config.Rules {
		e.rules = append(e.rules, &ruleState{rule: r, candidates: map[string]*Candidate{}})
		e.metrics.pending.WithLabelValues(r.Name)
		e.metrics.evaluations.WithLabelValues(r.Name)
		e.metrics.queryErrors.WithLabelValues(r.Name)
		e.metrics.actions.WithLabelValues(r.Name, r.Action, ResultSuccess)
	}
	e.SetLeader(o.Leader)
	e.publish()
	return e, nil
}

// SetLeader is called by the leader elector.
func (e *Engine) SetLeader(leader bool) {
	e.leader.Store(leader)
	if leader {
		e.metrics.isLeader.Set(1)
	} else {
		e.metrics.isLeader.Set(0)
	}
}

// IsLeader reports the current leadership.
func (e *Engine) IsLeader() bool { return e.leader.Load() }

// Ready reports whether at least one evaluation round completed.
func (e *Engine) Ready() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.ready
}

// Run evaluates at once and then every evaluation_interval until ctx ends.
func (e *Engine) Run(ctx context.Context) {
	t := e.clock.NewTicker(time.Duration(e.cfg.EvaluationInterval))
	defer t.Stop()
	for {
		e.Evaluate(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C():
		}
	}
}

// Evaluate runs one round over all rules.
func (e *Engine) Evaluate(ctx context.Context) {
	e.evalMu.Lock()
	defer e.evalMu.Unlock()
	e.loaded = false
	for _, rs := range e.rules {
		if ctx.Err() != nil {
			return
		}
		e.evalRule(ctx, rs)
	}
	e.metrics.lastEvaluation.Set(float64(e.clock.Now().Unix()))
	e.mu.Lock()
	e.ready = true
	e.mu.Unlock()
	e.publish()
}

func (e *Engine) evalRule(ctx context.Context, rs *ruleState) {
	r := rs.rule
	now := e.clock.Now()
	rs.lastEval = now
	e.metrics.evaluations.WithLabelValues(r.Name).Inc()
	logger := e.logger.With("rule", r.Name)

	vec, warnings, err := e.source.Query(ctx, r.Expr)
	if err == nil && len(vec) == 0 && len(warnings) > 0 {
		// An empty answer with warnings may be "no data" rather than "no
		// problem"; neither acting nor resetting is justified.
		err = fmt.Errorf("empty result with warnings: %s", strings.Join(warnings, "; "))
	}
	if err != nil {
		// Keep pending candidates as they are (as Prometheus keeps alerts on
		// a failed evaluation), but act on nothing.
		rs.lastError = err.Error()
		e.metrics.queryErrors.WithLabelValues(r.Name).Inc()
		e.count(r, "skipped_"+SkipQueryError)
		logger.Warn("rule query failed; no action", "reason", SkipQueryError, "err", err)
		return
	}
	rs.lastError = ""
	if len(warnings) > 0 {
		logger.Warn("rule query returned warnings", "warnings", strings.Join(warnings, "; "))
	}

	nsLabel, podLabel := model.LabelName(r.TargetLabels.Namespace), model.LabelName(r.TargetLabels.Pod)
	present := map[string]bool{}
	for _, s := range vec {
		ns, pod := string(s.Metric[nsLabel]), string(s.Metric[podLabel])
		if ns == "" || pod == "" {
			e.count(r, "skipped_"+SkipMissingLabels)
			logger.Warn("series lacks target labels; ignored", "reason", SkipMissingLabels,
				"series", s.Metric.String(), "namespace_label", nsLabel, "pod_label", podLabel)
			continue
		}
		key := ns + "/" + pod
		if present[key] {
			continue // several series (containers) for one pod: one candidate
		}
		present[key] = true
		c, ok := rs.candidates[key]
		if !ok {
			c = &Candidate{Namespace: ns, Pod: pod, PendingSince: now}
			rs.candidates[key] = c
			logger.Info("candidate pending", "target", key, "for", r.For)
		}
		c.Labels, c.Value, c.LastSeen = s.Metric, float64(s.Value), now
	}
	for key := range rs.candidates {
		if !present[key] {
			logger.Info("candidate resolved", "target", key)
			delete(rs.candidates, key)
		}
	}
	e.metrics.pending.WithLabelValues(r.Name).Set(float64(len(rs.candidates)))

	var firing []*Candidate
	for _, key := range slices.Sorted(maps.Keys(rs.candidates)) {
		if c := rs.candidates[key]; now.Sub(c.PendingSince) >= time.Duration(r.For) {
			firing = append(firing, c)
		}
	}
	if len(firing) == 0 {
		return
	}
	guardReason, guardMsg := e.checkGuards(ctx, r)
	for _, c := range firing {
		if guardReason != "" {
			e.skip(r, c, guardReason, guardMsg)
			continue
		}
		e.attempt(ctx, rs, c)
	}
}

// checkGuards runs every guard; each must answer at least one sample.
func (e *Engine) checkGuards(ctx context.Context, r *Rule) (reason, msg string) {
	for _, g := range r.Guards {
		vec, warnings, err := e.source.Query(ctx, g)
		if err == nil && len(warnings) > 0 {
			err = fmt.Errorf("warnings: %s", strings.Join(warnings, "; "))
		}
		if err != nil {
			e.metrics.queryErrors.WithLabelValues(r.Name).Inc()
			return SkipGuardError, fmt.Sprintf("guard %q: %v", g, err)
		}
		if len(vec) == 0 {
			return SkipGuardFailed, fmt.Sprintf("guard %q returned no sample", g)
		}
	}
	return "", ""
}

// attempt runs the gates in order, cheapest and most local first, and acts
// only when every one passes.
func (e *Engine) attempt(ctx context.Context, rs *ruleState, c *Candidate) {
	r := rs.rule
	now := e.clock.Now()
	dry := e.cfg.DryRun || r.DryRun
	key := c.Key()

	if !r.NamespaceAllowed(c.Namespace) {
		e.skip(r, c, SkipNamespace, fmt.Sprintf("namespace %q is not in the rule's namespaces", c.Namespace))
		return
	}
	if !e.IsLeader() {
		e.skip(r, c, SkipNotLeader, "another instance holds the leader Lease")
		return
	}
	if err := e.loadLedger(ctx); err != nil {
		e.skip(r, c, SkipStateError, err.Error())
		return
	}
	if reason, msg := e.checkBudgets(r, key, "", now, dry); reason != "" {
		e.skip(r, c, reason, msg)
		return
	}
	if e.kube == nil {
		e.skip(r, c, SkipKubeError, "no Kubernetes client configured")
		return
	}
	pod, err := e.kube.CoreV1().Pods(c.Namespace).Get(ctx, c.Pod, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		e.skip(r, c, SkipPodGone, "pod no longer exists")
		return
	case err != nil:
		e.skip(r, c, SkipKubeError, err.Error())
		return
	case pod.DeletionTimestamp != nil:
		e.skip(r, c, SkipPodTerminating, "pod is already terminating")
		return
	case !r.Matches(pod.Labels):
		e.skip(r, c, SkipSelectorMismatch, fmt.Sprintf("pod labels do not match selector %q", r.Selector))
		return
	case pod.CreationTimestamp.After(c.PendingSince):
		// The pod was (re)created after the condition was first seen: the
		// data describes its predecessor.
		e.skip(r, c, SkipAlreadyReplaced, fmt.Sprintf("pod created %s, after the condition began %s",
			pod.CreationTimestamp.UTC().Format(time.RFC3339), c.PendingSince.UTC().Format(time.RFC3339)))
		return
	}

	target := podRef(pod)
	if r.Action == ActionRolloutRestart {
		w, err := resolveOwner(ctx, e.kube, pod)
		if err != nil {
			reason := SkipKubeError
			if errors.Is(err, errNoOwner) {
				reason = SkipNoOwner
			}
			e.skip(r, c, reason, err.Error())
			return
		}
		target = w
		if reason, msg := e.checkBudgets(r, key, target.String(), now, dry); reason != "" {
			e.skip(r, c, reason, msg)
			return
		}
	}

	rec := Record{Rule: r.Name, Action: r.Action, Target: key, Object: target.String(), Time: now, DryRun: dry}
	if dry {
		e.ledger = append(e.ledger, rec)
		e.finish(r, c, rec, ResultDryRun, fmt.Sprintf("dry run: would %s %s (uid %s)", r.Action, target, pod.UID))
		c.PendingSince = now
		return
	}

	// Reserve before acting: if the process dies right after the API call,
	// its successor still sees the cooldown.
	e.ledger = append(e.ledger, rec)
	if err := e.store.Save(ctx, e.ledger.persisted()); err != nil {
		e.ledger = e.ledger[:len(e.ledger)-1]
		e.skip(r, c, SkipStateError, "could not persist the action record: "+err.Error())
		return
	}

	switch r.Action {
	case ActionEvictPod:
		err = evictPod(ctx, e.kube, pod)
	case ActionDeletePod:
		err = deletePod(ctx, e.kube, pod)
	case ActionRolloutRestart:
		err = rolloutRestart(ctx, e.kube, target, now)
	}
	result := classify(err)
	if result != ResultSuccess {
		e.ledger = e.ledger[:len(e.ledger)-1]
		if serr := e.store.Save(ctx, e.ledger.persisted()); serr != nil {
			e.logger.Warn("could not release the action record", "rule", r.Name, "target", key, "err", serr)
		}
		msg := fmt.Sprintf("%s %s failed: %v", r.Action, target, err)
		if result == ResultBlocked {
			msg = fmt.Sprintf("%s %s blocked by a PodDisruptionBudget; retrying next interval", r.Action, target)
			e.events.record(ctx, target, corev1.EventTypeWarning, ReasonBlocked,
				fmt.Sprintf("rule %s: eviction blocked by a PodDisruptionBudget", r.Name), now)
		}
		e.finish(r, c, rec, result, msg)
		return
	}
	reason := map[string]string{ActionEvictPod: ReasonEvicted, ActionDeletePod: ReasonDeleted, ActionRolloutRestart: ReasonRolloutRestarted}[r.Action]
	e.events.record(ctx, target, corev1.EventTypeNormal, reason,
		fmt.Sprintf("rule %s: %s after the condition held since %s (value %g)", r.Name, r.Action,
			c.PendingSince.UTC().Format(time.RFC3339), c.Value), now)
	e.finish(r, c, rec, ResultSuccess, fmt.Sprintf("%s %s (uid %s)", r.Action, target, pod.UID))
	// The replacement must prove itself wedged for a full `for` again.
	c.PendingSince = now
}

// loadLedger reloads the records once per evaluation round, so a new
// leader sees what its predecessor did.
func (e *Engine) loadLedger(ctx context.Context) error {
	if e.loaded {
		return nil
	}
	recs, err := e.store.Load(ctx)
	if err != nil {
		return fmt.Errorf("could not load the action records: %w", err)
	}
	l := ledger(recs)
	for _, r := range e.ledger {
		if r.DryRun {
			l = append(l, r)
		}
	}
	e.ledger = l.prune(e.clock.Now(), e.horizon())
	e.loaded = true
	return nil
}

// horizon is how long a record can still matter.
func (e *Engine) horizon() time.Duration {
	h := time.Duration(e.cfg.StormGuard.Window)
	for _, r := range e.cfg.Rules {
		h = max(h, time.Duration(r.Cooldown), time.Duration(r.Window))
	}
	return h
}

// checkBudgets applies the per-target cooldown (across rules: two rules must
// not take turns on one pod), the rule's budget and the global storm guard.
func (e *Engine) checkBudgets(r *Rule, target, object string, now time.Time, dry bool) (string, string) {
	if last, ok := e.ledger.lastOn(target, object, dry); ok && now.Sub(last) < time.Duration(r.Cooldown) {
		return SkipCooldown, fmt.Sprintf("last action on this target at %s, cooldown %s", last.UTC().Format(time.RFC3339), r.Cooldown)
	}
	if n := e.ledger.since(r.Name, now, time.Duration(r.Window), dry); n >= r.MaxActions {
		return SkipRuleBudget, fmt.Sprintf("%d actions in the last %s (max_actions %d)", n, r.Window, r.MaxActions)
	}
	sg := e.cfg.StormGuard
	if n := e.ledger.since("", now, time.Duration(sg.Window), dry); n >= sg.MaxActions {
		return SkipStormGuard, fmt.Sprintf("%d actions across all rules in the last %s (storm_guard.max_actions %d)", n, sg.Window, sg.MaxActions)
	}
	return "", ""
}

func (e *Engine) count(r *Rule, result string) {
	e.metrics.actions.WithLabelValues(r.Name, r.Action, result).Inc()
}

func (e *Engine) skip(r *Rule, c *Candidate, reason, msg string) {
	result := "skipped_" + reason
	e.count(r, result)
	c.LastResult, c.LastMessage = result, msg
	e.logger.Info("no action", "rule", r.Name, "target", c.Key(), "reason", reason, "detail", msg)
}

func (e *Engine) finish(r *Rule, c *Candidate, rec Record, result, msg string) {
	e.count(r, result)
	c.LastResult, c.LastMessage = result, msg
	if result == ResultSuccess || result == ResultDryRun {
		e.metrics.lastAction.WithLabelValues(r.Name).Set(float64(rec.Time.Unix()))
	}
	level := slog.LevelWarn
	if result == ResultSuccess || result == ResultDryRun {
		level = slog.LevelInfo
	}
	e.logger.Log(context.Background(), level, "action", "rule", r.Name, "action", r.Action, "target", rec.Target,
		"object", rec.Object, "result", result, "detail", msg)
	e.mu.Lock()
	e.recent = append(e.recent, ActionLog{Time: rec.Time, Rule: r.Name, Action: r.Action, Target: rec.Target,
		Object: rec.Object, Result: result, Message: msg})
	if len(e.recent) > recentActions {
		e.recent = e.recent[len(e.recent)-recentActions:]
	}
	e.mu.Unlock()
}
