package remediate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
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
	// Resolved describes the live pod the candidate names (UID, age,
	// selector, owner), when Kubernetes was asked; "" when it was not.
	Resolved string
	// Object is the object an action would touch, once resolved
	// (kind/namespace/name; the workload for rollout_restart).
	Object string
	// History says how long Prometheus shows the condition held (plan
	// mode, which sees one evaluation and asks Prometheus for the rest).
	History string
}

// Key identifies the candidate's target.
func (c *Candidate) Key() string { return c.Namespace + "/" + c.Pod }

// ruleState is a rule's evaluation state, owned by the evaluating goroutine.
type ruleState struct {
	rule       *Rule
	candidates map[string]*Candidate
	lastEval   time.Time
	lastError  string
	// lastIgnored says which series the last evaluation ignored and why
	// (NaN, stale); shown on the status page.
	lastIgnored string
	// lastWarnings are the warnings of the last rule query (they also
	// make lastError); lastErrorHard is a failure with no answer at all.
	lastWarnings  []string
	lastErrorHard bool
	// guards is what the last guard check found, one per guard.
	guards []GuardStatus
}

// GuardStatus is one guard's last result.
type GuardStatus struct {
	Expr string `json:"expr"`
	// Result is "ok", "failed" (no usable sample), "error" (the query
	// failed), "warnings" (a partial answer, not trusted) or "not
	// checked" (no candidate needed it, or an earlier guard failed).
	Result string `json:"result"`
	Detail string `json:"detail,omitempty"`
}

// Guard results.
const (
	GuardOK         = "ok"
	GuardFailed     = "failed"
	GuardError      = "error"
	GuardWarnings   = "warnings"
	GuardNotChecked = "not checked"
)

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
	// Electing says a leader elector runs (--leader-elect); the status
	// page says "not electing" otherwise.
	Electing bool
	// Links are the browser-facing URLs the status page and the plan
	// link to; empty fields mean no such links.
	Links Links
	// Plan makes a fresh engine ask Prometheus how long each new
	// candidate has held (a subquery over `for`), and check guards even
	// when nothing fires, so that one evaluation says what a long-running
	// remediator would do now. Only for dry runs (the plan command).
	Plan bool
}

// Links are base URLs as a browser reaches them.
type Links struct {
	// Greybox is greybox's URL: candidates link to its /logs.
	Greybox string
	// Prometheus is Prometheus's URL: rules link to its graph page.
	Prometheus string
}

const recentActions = 50

// recentSkips bounds the status page's skip list; a skip that repeats
// (same rule, target and reason) updates its entry instead of adding one.
const recentSkips = 50

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

	// Every call to Prometheus is bounded by queryTimeout, every call to
	// the Kubernetes API (the state store included) by apiTimeout; both
	// are at most one evaluation interval, so a hung upstream costs an
	// evaluation, never the loop.
	queryTimeout time.Duration
	apiTimeout   time.Duration
	maxSampleAge time.Duration

	evalMu sync.Mutex // one evaluation at a time
	rules  []*ruleState
	// ledger is everything this process knows was done: records it wrote
	// and records it read. It is only ever merged with what the store
	// returns, never replaced by it, so a store that forgets cannot make
	// the process forget.
	ledger ledger
	loaded bool // state store read in this evaluation
	// stateErr is the state store's current problem: a failed read or
	// write, or a read that lacks records this process holds. While set,
	// no action is taken; only a read that agrees clears it.
	stateErr error

	electing bool
	links    Links
	plan     bool
	// stateRead is when the state store was last read successfully.
	stateRead time.Time

	mu     sync.Mutex // guards everything below, read by the status page
	snap   []RuleStatus
	recent []ActionLog
	skips  []SkipLog
	ready  bool
	state  string // the state store's problem, "" when fine
	health Health
	storm  Budget
	// stateReadShown is stateRead as of the last publish.
	stateReadShown time.Time
}

// NewEngine builds an engine; it does not start anything.
func NewEngine(o Options) (*Engine, error) {
	if o.Config == nil || o.Source == nil {
		return nil, errors.New("remediate: config and source are required")
	}
	if o.Plan && !o.Config.DryRun {
		return nil, errors.New("remediate: plan mode needs a dry-run config")
	}
	e := &Engine{
		cfg: o.Config, source: o.Source, kube: o.Kube, store: o.Store,
		clock: o.Clock, logger: o.Logger, metrics: o.Metrics,
		electing: o.Electing, links: o.Links, plan: o.Plan,
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
	interval := time.Duration(o.Config.EvaluationInterval)
	e.queryTimeout = positiveMin(time.Duration(o.Config.Prometheus.Timeout), interval, DefaultQueryTimeout)
	e.apiTimeout = positiveMin(DefaultAPITimeout, interval, DefaultAPITimeout)
	e.maxSampleAge = time.Duration(o.Config.MaxSampleAge)
	if e.maxSampleAge <= 0 {
		e.maxSampleAge = DefaultMaxSampleAge
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

// positiveMin is the smallest positive of a and b, or def when neither is.
func positiveMin(a, b, def time.Duration) time.Duration {
	switch {
	case a > 0 && b > 0:
		return min(a, b)
	case a > 0:
		return a
	case b > 0:
		return b
	}
	return def
}

// query asks the source with the per-query timeout.
func (e *Engine) query(ctx context.Context, expr string) (model.Vector, []string, error) {
	ctx, cancel := context.WithTimeout(ctx, e.queryTimeout)
	defer cancel()
	vec, warnings, err := e.source.Query(ctx, expr)
	e.notePrometheus(err)
	return vec, warnings, err
}

// apiCtx bounds one Kubernetes API or state store call.
func (e *Engine) apiCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, e.apiTimeout)
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
	now := e.clock.Now()
	e.metrics.lastEvaluation.Set(float64(now.Unix()))
	var errs []string
	for _, rs := range e.rules {
		if rs.lastError != "" {
			errs = append(errs, rs.rule.Name+": "+rs.lastError)
		}
		for _, g := range rs.guards {
			if g.Result == GuardError || g.Result == GuardWarnings {
				errs = append(errs, rs.rule.Name+": "+g.Detail)
			}
		}
	}
	e.mu.Lock()
	e.ready = true
	e.health.LastEvaluation = now
	e.health.EvaluationErrors = errs
	e.mu.Unlock()
	e.publish()
}

func (e *Engine) evalRule(ctx context.Context, rs *ruleState) {
	r := rs.rule
	now := e.clock.Now()
	rs.lastEval = now
	e.metrics.evaluations.WithLabelValues(r.Name).Inc()
	logger := e.logger.With("rule", r.Name)

	vec, warnings, err := e.query(ctx, r.Expr)
	rs.lastWarnings, rs.lastErrorHard = warnings, err != nil
	rs.guards = notChecked(r.Guards)
	if err == nil && len(warnings) > 0 {
		// A warning means a partial or doubtful answer: an empty one may be
		// "no data" rather than "no problem", and a partial one can invent
		// candidates (`a unless b` with b partly missing). Neither acting
		// nor resetting is justified.
		err = fmt.Errorf("query returned warnings, the result may be partial: %s", strings.Join(warnings, "; "))
	}
	if err != nil {
		// Keep pending candidates as they are (as Prometheus keeps alerts on
		// a failed evaluation), but act on nothing.
		rs.lastError = err.Error()
		e.metrics.queryErrors.WithLabelValues(r.Name).Inc()
		e.count(r, "skipped_"+SkipQueryError)
		e.noteSkip(r, "", SkipQueryError, rs.lastError, now)
		logger.Warn("rule query failed; no action", "reason", SkipQueryError, "err", err)
		return
	}
	rs.lastError = ""

	nsLabel, podLabel := model.LabelName(r.TargetLabels.Namespace), model.LabelName(r.TargetLabels.Pod)
	present := map[string]bool{}
	var fresh []*Candidate         // new this evaluation
	invalid := map[string]string{} // target → why its only series were ignored
	var ignored []string
	for _, s := range vec {
		if s == nil {
			continue
		}
		ns, pod := string(s.Metric[nsLabel]), string(s.Metric[podLabel])
		if ns == "" || pod == "" {
			e.count(r, "skipped_"+SkipMissingLabels)
			logger.Warn("series lacks target labels; ignored", "reason", SkipMissingLabels,
				"series", s.Metric.String(), "namespace_label", nsLabel, "pod_label", podLabel)
			continue
		}
		key := ns + "/" + pod
		if reason, msg := e.sampleProblem(s, now); reason != "" {
			// Not a candidate: the number says nothing about the present.
			e.count(r, "skipped_"+reason)
			logger.Warn("sample ignored; not a candidate", "reason", reason, "series", s.Metric.String(), "detail", msg)
			ignored = append(ignored, fmt.Sprintf("%s: %s (%s)", key, reason, msg))
			if !present[key] {
				invalid[key] = reason + ": " + msg
			}
			continue
		}
		delete(invalid, key)
		if present[key] {
			continue // several series (containers) for one pod: one candidate
		}
		present[key] = true
		c, ok := rs.candidates[key]
		if !ok {
			c = &Candidate{Namespace: ns, Pod: pod, PendingSince: now}
			rs.candidates[key] = c
			fresh = append(fresh, c)
			logger.Info("candidate pending", "target", key, "for", r.For)
		}
		c.Labels, c.Value, c.LastSeen = s.Metric, float64(s.Value), now
	}
	rs.lastIgnored = strings.Join(ignored, "; ")
	for key := range rs.candidates {
		if !present[key] {
			if why, ok := invalid[key]; ok {
				logger.Warn("candidate starts over: no valid sample", "target", key, "detail", why)
			} else {
				logger.Info("candidate resolved", "target", key)
			}
			delete(rs.candidates, key)
		}
	}
	e.metrics.pending.WithLabelValues(r.Name).Set(float64(len(rs.candidates)))
	if e.plan {
		e.seedHistory(ctx, rs, fresh, now)
	}
	if e.cfg.DryRun && e.kube != nil {
		// Dry run with a cluster: say which live pod every candidate
		// names, pending ones included. Reads only.
		for _, key := range slices.Sorted(maps.Keys(rs.candidates)) {
			e.resolve(ctx, r, rs.candidates[key])
		}
	}

	var firing []*Candidate
	for _, key := range slices.Sorted(maps.Keys(rs.candidates)) {
		if c := rs.candidates[key]; now.Sub(c.PendingSince) >= time.Duration(r.For) {
			firing = append(firing, c)
		}
	}
	if len(firing) == 0 {
		if e.plan && len(r.Guards) > 0 {
			e.checkGuards(ctx, rs) // what they say now, for the plan
		}
		return
	}
	guardReason, guardMsg := e.checkGuards(ctx, rs)
	for _, c := range firing {
		if guardReason != "" {
			e.skip(r, c, guardReason, guardMsg)
			continue
		}
		e.attempt(ctx, rs, c)
	}
}

// sampleProblem says why a sample cannot be trusted: a value that is not a
// number (NaN, ±Inf), or a timestamp older than max_sample_age before now.
// A timestamp in the future is not stale.
func (e *Engine) sampleProblem(s *model.Sample, now time.Time) (reason, msg string) {
	if v := float64(s.Value); math.IsNaN(v) || math.IsInf(v, 0) {
		return SkipInvalidValue, fmt.Sprintf("value %v is not a number", v)
	}
	if age := now.Sub(s.Timestamp.Time()); age > e.maxSampleAge {
		return SkipStaleSample, fmt.Sprintf("sample from %s is %s old at evaluation time %s, more than max_sample_age %s",
			s.Timestamp.Time().UTC().Format(time.RFC3339), age.Round(time.Second), now.UTC().Format(time.RFC3339), model.Duration(e.maxSampleAge))
	}
	return "", ""
}

// notChecked is the guard status before a check.
func notChecked(guards []string) []GuardStatus {
	out := make([]GuardStatus, len(guards))
	for i, g := range guards {
		out[i] = GuardStatus{Expr: g, Result: GuardNotChecked}
	}
	return out
}

// checkGuards runs the guards in order until one fails; each must answer
// at least one valid (a number, not stale) sample. rs.guards records
// what each said.
func (e *Engine) checkGuards(ctx context.Context, rs *ruleState) (reason, msg string) {
	r := rs.rule
	now := e.clock.Now()
	rs.guards = notChecked(r.Guards)
	for i, g := range r.Guards {
		reason, msg, warned := e.checkGuard(ctx, r, g, now)
		switch {
		case reason == "":
			rs.guards[i].Result = GuardOK
			rs.guards[i].Detail = msg
			continue
		case warned:
			rs.guards[i].Result = GuardWarnings
		case reason == SkipGuardError:
			rs.guards[i].Result = GuardError
		default:
			rs.guards[i].Result = GuardFailed
		}
		rs.guards[i].Detail = msg
		return reason, msg
	}
	return "", ""
}

// checkGuard runs one guard; on success msg counts the usable samples.
// warned says the query answered with warnings (a guard_error too).
func (e *Engine) checkGuard(ctx context.Context, r *Rule, g string, now time.Time) (reason, msg string, warned bool) {
	vec, warnings, err := e.query(ctx, g)
	if err == nil && len(warnings) > 0 {
		err, warned = fmt.Errorf("warnings: %s", strings.Join(warnings, "; ")), true
	}
	if err != nil {
		e.metrics.queryErrors.WithLabelValues(r.Name).Inc()
		return SkipGuardError, fmt.Sprintf("guard %q: %v", g, err), warned
	}
	valid, why := 0, ""
	for _, s := range vec {
		if s == nil {
			continue
		}
		if reason, msg := e.sampleProblem(s, now); reason != "" {
			why = reason + ": " + msg
			continue
		}
		valid++
	}
	if valid == 0 {
		if why != "" {
			return SkipGuardFailed, fmt.Sprintf("guard %q returned no valid sample (%s)", g, why), false
		}
		return SkipGuardFailed, fmt.Sprintf("guard %q returned no sample", g), false
	}
	return "", fmt.Sprintf("%d sample(s)", valid), false
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
		if !dry {
			e.skip(r, c, SkipKubeError, "no Kubernetes client configured")
			return
		}
		// Plan mode without a cluster: everything Prometheus and the
		// rule can decide says act; the live pod is not checked.
		what := c.Key()
		if r.Action == ActionRolloutRestart {
			what = "the workload owning pod " + what
		}
		rec := Record{Rule: r.Name, Action: r.Action, Target: key, Time: now, DryRun: true}
		e.ledger = append(e.ledger, rec)
		e.finish(r, c, rec, ResultDryRun, fmt.Sprintf("dry run: would %s %s (the live pod is not checked: no Kubernetes)", r.Action, what))
		c.PendingSince = now
		return
	}
	getCtx, cancel := e.apiCtx(ctx)
	pod, err := e.kube.CoreV1().Pods(c.Namespace).Get(getCtx, c.Pod, metav1.GetOptions{})
	cancel()
	e.noteKube(err)
	if err == nil && !e.cfg.DryRun { // a global dry run resolved it already
		c.Resolved = describePod(r, pod)
	}
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
		ownerCtx, cancel := e.apiCtx(ctx)
		w, err := resolveOwner(ownerCtx, e.kube, pod)
		cancel()
		e.noteKube(err)
		if err != nil {
			reason := SkipKubeError
			if errors.Is(err, errNoOwner) {
				reason = SkipNoOwner
			}
			e.skip(r, c, reason, err.Error())
			return
		}
		target = w
		c.Object = target.String()
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
	// its successor still sees the cooldown. The reservation stays in
	// memory even when it cannot be written: the write may have landed
	// (a timeout), and the process must not forget what it may have done.
	e.ledger = append(e.ledger, rec)
	if err := e.save(ctx); err != nil {
		e.stateErr = fmt.Errorf("could not persist the action record: %w", err)
		e.skip(r, c, SkipStateError, e.stateErr.Error()+"; the reservation is kept, no action until the store holds it")
		return
	}

	actCtx, cancel := e.apiCtx(ctx)
	switch r.Action {
	case ActionEvictPod:
		err = evictPod(actCtx, e.kube, pod)
	case ActionDeletePod:
		err = deletePod(actCtx, e.kube, pod)
	case ActionRolloutRestart:
		err = rolloutRestart(actCtx, e.kube, target, now)
	}
	cancel()
	e.noteKube(err)
	result := classify(err)
	if result != ResultSuccess {
		msg := fmt.Sprintf("%s %s failed: %v", r.Action, target, err)
		if refused(err) {
			// The API refused: nothing happened, so nothing is spent.
			e.ledger = e.ledger.without(rec)
			if serr := e.save(ctx); serr != nil {
				// The store may keep the reservation; a later read merges it
				// back, which only errs on the side of waiting.
				e.stateErr = fmt.Errorf("could not release the action record: %w", serr)
				e.logger.Warn("could not release the action record", "rule", r.Name, "target", key, "err", serr)
			}
		} else {
			// A timeout or a server error does not say whether the action
			// happened: count it, so cooldown and budgets hold.
			msg += "; the outcome is unknown, so the record is kept and cooldown and budgets count it"
		}
		if result == ResultBlocked {
			msg = fmt.Sprintf("%s %s blocked by a PodDisruptionBudget; retrying next interval", r.Action, target)
			e.event(ctx, target, corev1.EventTypeWarning, ReasonBlocked,
				fmt.Sprintf("rule %s: eviction blocked by a PodDisruptionBudget", r.Name), now)
		} else {
			// kubectl describe on the pod is where an operator looks first;
			// a 403 from missing RBAC must show there, not only in our log.
			e.event(ctx, target, corev1.EventTypeWarning, ReasonFailed,
				fmt.Sprintf("rule %s: %s", r.Name, msg), now)
		}
		e.finish(r, c, rec, result, msg)
		return
	}
	reason := map[string]string{ActionEvictPod: ReasonEvicted, ActionDeletePod: ReasonDeleted, ActionRolloutRestart: ReasonRolloutRestarted}[r.Action]
	e.event(ctx, target, corev1.EventTypeNormal, reason,
		fmt.Sprintf("rule %s: %s after the condition held since %s (value %g)", r.Name, r.Action,
			c.PendingSince.UTC().Format(time.RFC3339), c.Value), now)
	e.finish(r, c, rec, ResultSuccess, fmt.Sprintf("%s %s (uid %s)", r.Action, target, pod.UID))
	// The replacement must prove itself wedged for a full `for` again.
	c.PendingSince = now
}

// event records an audit Event, bounded like every API call.
func (e *Engine) event(ctx context.Context, obj objectRef, eventType, reason, msg string, now time.Time) {
	ctx, cancel := e.apiCtx(ctx)
	defer cancel()
	e.events.record(ctx, obj, eventType, reason, msg, now)
}

// save writes the persisted records, bounded by the API timeout.
func (e *Engine) save(ctx context.Context) error {
	ctx, cancel := e.apiCtx(ctx)
	defer cancel()
	return e.store.Save(ctx, e.ledger.persisted())
}

// loadLedger reads the store once per evaluation round, so a new leader
// sees what its predecessor did, and returns the state problem that blocks
// acting this round, if any. The round's first store failure blocks the
// rest of the round.
func (e *Engine) loadLedger(ctx context.Context) error {
	if !e.loaded {
		e.loaded = true
		e.stateErr = e.syncLedger(ctx)
		if e.stateErr == nil {
			e.stateRead = e.clock.Now()
		}
		if e.stateErr != nil {
			e.logger.Warn("state store does not agree; no action until it does", "reason", SkipStateError, "err", e.stateErr)
		}
	}
	return e.stateErr
}

// syncLedger merges what the store holds into the ledger. The store must
// hold every record this process knows of (within the horizon): a read
// that lacks one — NotFound, an older document — contradicts a write, and
// nothing may be decided on it. The union is written back so that a store
// which merely lost a document can agree again on the next read.
func (e *Engine) syncLedger(ctx context.Context) error {
	now := e.clock.Now()
	horizon := e.horizon()
	lctx, cancel := e.apiCtx(ctx)
	recs, err := e.store.Load(lctx)
	cancel()
	if err != nil {
		return fmt.Errorf("could not read the action records: %w", err)
	}
	known := e.ledger.prune(now, horizon)
	missing := known.missingFrom(recs)
	e.ledger = known.merge(recs).prune(now, horizon)
	for _, r := range e.ledger {
		if r.Time.After(now) {
			e.logger.Warn("action record from the future (clock skew?); it counts as recent",
				"rule", r.Rule, "target", r.Target, "time", r.Time.UTC().Format(time.RFC3339), "now", now.UTC().Format(time.RFC3339))
		}
	}
	if len(missing) == 0 {
		return nil
	}
	m := missing[0]
	err = fmt.Errorf("the state store lacks %d action record(s) this process holds (e.g. %s %s at %s): it lost or did not keep a write",
		len(missing), m.Action, m.Target, m.Time.UTC().Format(time.RFC3339))
	if e.cfg.DryRun {
		return err
	}
	if serr := e.save(ctx); serr != nil {
		return fmt.Errorf("%w; writing them back failed: %v", err, serr)
	}
	return fmt.Errorf("%w; wrote them back, acting again once a read shows them", err)
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
	e.noteSkip(r, c.Key(), reason, msg, e.clock.Now())
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
