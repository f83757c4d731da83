package remediate

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/prometheus/common/model"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Plan is what one evaluation would do, and why: the plan command's
// output. It is built from a dry-run engine's published state.
type Plan struct {
	Time       time.Time `json:"time"`
	Prometheus string    `json:"prometheus"`
	// Kubernetes says whether candidates were resolved to live pods and
	// the state store read.
	Kubernetes bool   `json:"kubernetes"`
	State      string `json:"state"`
	// StormGuard and each rule's Budget count this plan's own actions
	// (Planned) in Used: what would be left after them.
	StormGuard Budget     `json:"storm_guard"`
	Planned    int        `json:"planned"`
	Rules      []RulePlan `json:"rules"`
	// Errors are the queries that failed outright: the plan is incomplete.
	Errors []string `json:"errors,omitempty"`
}

// RulePlan is one rule's part of a plan.
type RulePlan struct {
	Name       string          `json:"name"`
	Expr       string          `json:"expr"`
	Action     string          `json:"action"`
	For        string          `json:"for"`
	Cooldown   string          `json:"cooldown"`
	Namespaces []string        `json:"namespaces"`
	Selector   string          `json:"selector,omitempty"`
	Error      string          `json:"error,omitempty"`
	Guards     []GuardStatus   `json:"guards,omitempty"`
	Budget     Budget          `json:"budget"`
	Planned    int             `json:"planned"`
	Ignored    string          `json:"ignored,omitempty"`
	GraphURL   string          `json:"graph_url,omitempty"`
	Candidates []CandidatePlan `json:"candidates"`
}

// Plan decisions.
const (
	DecisionAct  = "act"  // every check passed: it would act now
	DecisionSkip = "skip" // held long enough, but a check says no
	DecisionWait = "wait" // pending: not held for `for` yet
)

// CandidatePlan is one candidate's decision.
type CandidatePlan struct {
	Target   string  `json:"target"`
	Value    float64 `json:"value"`
	History  string  `json:"history,omitempty"`
	Decision string  `json:"decision"`
	// Reason is the skip reason (as in result="skipped_<reason>").
	Reason        string     `json:"reason,omitempty"`
	Detail        string     `json:"detail"`
	Pod           string     `json:"pod,omitempty"`
	CooldownUntil *time.Time `json:"cooldown_until,omitempty"`
	LogsURL       string     `json:"logs_url,omitempty"`
}

// Plan evaluates once and says what a remediator would do now. It needs
// an engine built with Options.Plan (a dry run); it changes nothing.
func (e *Engine) Plan(ctx context.Context) *Plan {
	e.Evaluate(ctx)
	e.evalMu.Lock()
	defer e.evalMu.Unlock()
	if e.kube != nil && !e.loaded {
		// Nothing fired, so the state was not read: read it anyway, so
		// budgets and cooldowns show what the cluster's remediator spent.
		_ = e.loadLedger(ctx)
		e.publish()
	}
	now := e.clock.Now()

	rules, _ := e.Status()
	p := &Plan{Time: now, Prometheus: redactedURL(e.cfg.Prometheus.URL), Kubernetes: e.kube != nil, StormGuard: e.StormGuard()}
	switch st := e.StateError(); {
	case e.kube == nil:
		p.State = "not read (no Kubernetes): cooldowns and budgets count nothing done before this plan"
	case st != "":
		p.State = "not trusted: " + st
	default:
		p.State = "read from the state store"
		if cm, ok := e.store.(*ConfigMapStore); ok {
			p.State = "read from ConfigMap " + cm.Namespace + "/" + cm.Name
		}
	}
	for _, rs := range rules {
		r := rs.Rule
		rp := RulePlan{Name: r.Name, Expr: r.Expr, Action: r.Action, For: r.For.String(), Cooldown: r.Cooldown.String(),
			Namespaces: r.Namespaces, Selector: r.Selector, Error: rs.LastError, Guards: rs.Guards,
			Budget: rs.Budget, Ignored: rs.Ignored, GraphURL: rs.GraphURL, Candidates: []CandidatePlan{}}
		if rs.ErrorHard {
			p.Errors = append(p.Errors, fmt.Sprintf("rule %s: %s", r.Name, rs.LastError))
		}
		for _, g := range rs.Guards {
			if g.Result == GuardError {
				p.Errors = append(p.Errors, fmt.Sprintf("rule %s: %s", r.Name, g.Detail))
			}
		}
		for _, c := range rs.Candidates {
			cp := CandidatePlan{Target: c.Key(), Value: c.Value, History: c.History, Pod: c.Resolved, LogsURL: c.LogsURL}
			switch {
			case c.LastResult == ResultDryRun:
				cp.Decision, cp.Detail = DecisionAct, strings.TrimPrefix(c.LastMessage, "dry run: ")
				rp.Planned++
			case strings.HasPrefix(c.LastResult, "skipped_"):
				cp.Decision, cp.Reason, cp.Detail = DecisionSkip, strings.TrimPrefix(c.LastResult, "skipped_"), c.LastMessage
			case c.LastResult != "":
				cp.Decision, cp.Detail = c.LastResult, c.LastMessage
			default:
				cp.Decision, cp.Detail = DecisionWait, fmt.Sprintf("pending: acts once it has held for %s", r.For)
			}
			// Cooldowns from real actions only: the ones this plan's own
			// actions would start are not news.
			if last, ok := e.ledger.lastOn(c.Key(), c.Object, false); ok {
				if until := last.Add(time.Duration(r.Cooldown)); until.After(now) {
					cp.CooldownUntil = &until
				}
			}
			rp.Candidates = append(rp.Candidates, cp)
		}
		p.Planned += rp.Planned
		p.Rules = append(p.Rules, rp)
	}
	return p
}

// WriteJSON writes the plan as indented JSON.
func (p *Plan) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(p)
}

// WriteText writes the plan for people: per rule, each candidate, what
// would be done and why.
func (p *Plan) WriteText(w io.Writer) error {
	b := &strings.Builder{}
	fmt.Fprintf(b, "greybox-remediator plan at %s (dry run: nothing is changed)\n", ts(p.Time))
	fmt.Fprintf(b, "Prometheus:  %s\n", p.Prometheus)
	if p.Kubernetes {
		fmt.Fprintf(b, "Kubernetes:  configured: candidates are resolved to live pods\n")
	} else {
		fmt.Fprintf(b, "Kubernetes:  not configured: candidates are not resolved to pods\n")
	}
	fmt.Fprintf(b, "State:       %s\n", p.State)
	fmt.Fprintf(b, "Storm guard: %d of %d actions across all rules in the last %s%s\n",
		p.StormGuard.Used-p.Planned, p.StormGuard.Max, p.StormGuard.Window, planned(p.Planned))
	act, skip, wait := 0, 0, 0
	for _, r := range p.Rules {
		fmt.Fprintf(b, "\nrule %s: %s after %s, cooldown %s, namespaces %s", r.Name, r.Action, r.For, r.Cooldown, strings.Join(r.Namespaces, ","))
		if r.Selector != "" {
			fmt.Fprintf(b, ", selector %s", r.Selector)
		}
		fmt.Fprintf(b, "\n  expr:   %s\n", r.Expr)
		for _, g := range r.Guards {
			fmt.Fprintf(b, "  guard:  %s → %s", g.Expr, g.Result)
			if g.Detail != "" {
				fmt.Fprintf(b, ": %s", g.Detail)
			}
			b.WriteString("\n")
		}
		fmt.Fprintf(b, "  budget: %d of %d actions left in %s%s\n", min(r.Budget.Left()+r.Planned, r.Budget.Max), r.Budget.Max, r.Budget.Window, planned(r.Planned))
		if r.GraphURL != "" {
			fmt.Fprintf(b, "  graph:  %s\n", r.GraphURL)
		}
		if r.Error != "" {
			fmt.Fprintf(b, "  ERROR:  %s\n  → no action for this rule\n", r.Error)
			continue
		}
		if r.Ignored != "" {
			fmt.Fprintf(b, "  ignored: %s\n", r.Ignored)
		}
		if len(r.Candidates) == 0 {
			b.WriteString("  no candidates: nothing to do\n")
			continue
		}
		for _, c := range r.Candidates {
			fmt.Fprintf(b, "  %s (value %g)", c.Target, c.Value)
			if c.History != "" {
				fmt.Fprintf(b, ": %s", c.History)
			}
			b.WriteString("\n")
			switch c.Decision {
			case DecisionAct:
				act++
				fmt.Fprintf(b, "    → WOULD ACT: %s\n", c.Detail)
			case DecisionSkip:
				skip++
				fmt.Fprintf(b, "    → skip, %s (%s): %s\n", c.Reason, reasonText(c.Reason), c.Detail)
			case DecisionWait:
				wait++
				fmt.Fprintf(b, "    → wait, %s\n", c.Detail)
			default:
				fmt.Fprintf(b, "    → %s: %s\n", c.Decision, c.Detail)
			}
			switch {
			case c.Pod != "":
				fmt.Fprintf(b, "    pod:  %s\n", c.Pod)
			case !p.Kubernetes:
				b.WriteString("    pod:  not resolved (no Kubernetes)\n")
			}
			if c.CooldownUntil != nil {
				fmt.Fprintf(b, "    cooldown until %s\n", ts(*c.CooldownUntil))
			}
			if c.LogsURL != "" {
				fmt.Fprintf(b, "    logs: %s\n", c.LogsURL)
			}
		}
	}
	fmt.Fprintf(b, "\n%d rule(s): %d would act, %d skipped, %d waiting", len(p.Rules), act, skip, wait)
	if len(p.Errors) > 0 {
		fmt.Fprintf(b, ", %d query error(s)", len(p.Errors))
	}
	b.WriteString("\n")
	_, err := io.WriteString(w, b.String())
	return err
}

func planned(n int) string {
	if n == 0 {
		return ""
	}
	return fmt.Sprintf("; this plan would use %d", n)
}

// seedHistory asks Prometheus how long each new candidate has held, so a
// single evaluation can tell "held for `for`" from "just appeared": a
// subquery of the rule's expression over `for`, one step per evaluation
// interval. A candidate present at every step is firing; one that is not,
// or whose history cannot be read, is pending from now (fail closed).
func (e *Engine) seedHistory(ctx context.Context, rs *ruleState, fresh []*Candidate, now time.Time) {
	r := rs.rule
	if len(fresh) == 0 {
		return
	}
	forD := time.Duration(r.For)
	if forD <= 0 {
		for _, c := range fresh {
			c.History = "for is 0: acts on first sight"
		}
		return
	}
	step := min(time.Duration(e.cfg.EvaluationInterval), forD)
	need := int(forD / step)
	q := fmt.Sprintf("count_over_time((%s)[%s:%s])", r.Expr, model.Duration(forD), model.Duration(step))
	vec, warnings, err := e.query(ctx, q)
	if err == nil && len(warnings) > 0 {
		err = fmt.Errorf("warnings: %s", strings.Join(warnings, "; "))
	}
	if err != nil {
		for _, c := range fresh {
			c.History = fmt.Sprintf("could not ask Prometheus how long it held (%v): counted from now", err)
		}
		return
	}
	nsLabel, podLabel := model.LabelName(r.TargetLabels.Namespace), model.LabelName(r.TargetLabels.Pod)
	steps := map[string]int{}
	for _, s := range vec {
		if s == nil {
			continue
		}
		key := string(s.Metric[nsLabel]) + "/" + string(s.Metric[podLabel])
		steps[key] = max(steps[key], int(s.Value))
	}
	for _, c := range fresh {
		n := min(steps[c.Key()], need)
		if n >= need {
			c.PendingSince = now.Add(-forD)
			c.History = fmt.Sprintf("held for %s (present at all %d steps of %s)", r.For, need, model.Duration(step))
			continue
		}
		c.History = fmt.Sprintf("present at %d of %d steps of %s over the last %s: not held for %s yet", n, need, model.Duration(step), r.For, r.For)
	}
}

// resolve looks up the live pod a candidate names (and, for
// rollout_restart, the workload it would restart), for dry runs. Reads
// only; the answer is shown, the decision is made by attempt.
func (e *Engine) resolve(ctx context.Context, r *Rule, c *Candidate) {
	getCtx, cancel := e.apiCtx(ctx)
	pod, err := e.kube.CoreV1().Pods(c.Namespace).Get(getCtx, c.Pod, metav1.GetOptions{})
	cancel()
	e.noteKube(err)
	c.Object = ""
	switch {
	case apierrors.IsNotFound(err):
		c.Resolved = "no such pod (deleted or already replaced)"
		return
	case err != nil:
		c.Resolved = "could not get the pod: " + err.Error()
		return
	}
	c.Resolved = describePod(r, pod)
	if r.Action != ActionRolloutRestart {
		c.Object = podRef(pod).String()
		return
	}
	ownerCtx, cancel := e.apiCtx(ctx)
	w, err := resolveOwner(ownerCtx, e.kube, pod)
	cancel()
	if err != nil {
		c.Resolved += "; cannot restart: " + err.Error()
		return
	}
	c.Object = w.String()
	c.Resolved += "; would restart " + w.String()
}

// describePod says what matters about a live pod for a decision.
func describePod(r *Rule, p *corev1.Pod) string {
	parts := []string{
		fmt.Sprintf("pod/%s/%s uid %s", p.Namespace, p.Name, p.UID),
		"created " + ts(p.CreationTimestamp.Time),
	}
	if p.Status.Phase != "" {
		parts = append(parts, "phase "+string(p.Status.Phase))
	}
	if p.Spec.NodeName != "" {
		parts = append(parts, "node "+p.Spec.NodeName)
	}
	if p.DeletionTimestamp != nil {
		parts = append(parts, "terminating")
	}
	if r.Selector != "" {
		if r.Matches(p.Labels) {
			parts = append(parts, "matches selector "+r.Selector)
		} else {
			parts = append(parts, "does NOT match selector "+r.Selector)
		}
	}
	return strings.Join(parts, ", ")
}
