package remediate

import (
	"errors"
	"html/template"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/common/model"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

// RuleStatus is a rule as shown on the status page.
type RuleStatus struct {
	Rule      *Rule
	DryRun    bool
	LastEval  time.Time
	LastError string
	// Warnings are the last rule query's warnings (they also set
	// LastError); ErrorHard says the query failed outright.
	Warnings  []string
	ErrorHard bool
	// Ignored lists the series the last evaluation did not take as
	// candidates, with the reason (NaN, stale).
	Ignored    string
	Guards     []GuardStatus
	Budget     Budget
	GraphURL   string // Prometheus graph of the expression; "" without a link base
	Candidates []CandidateStatus
}

// CandidateStatus is a copy of a candidate for the status page.
type CandidateStatus struct {
	Candidate
	Firing bool
	// CooldownUntil is when the target's cooldown ends; zero when it has
	// none.
	CooldownUntil time.Time
	// LogsURL is greybox's /logs for the probe behind the candidate; ""
	// without --greybox.url or without the probe's labels.
	LogsURL string
}

// Budget is how much of an action budget a window has used.
type Budget struct {
	Used   int    `json:"used"`
	Max    int    `json:"max"`
	Window string `json:"window"`
}

// Left is what remains of the budget.
func (b Budget) Left() int { return max(b.Max-b.Used, 0) }

// SkipLog is one entry of the status page's recent skips. A skip that
// repeats updates its entry: Count times between First and Last.
type SkipLog struct {
	First, Last time.Time
	Count       int
	Rule        string
	Target      string // "" for a rule-level skip (the query failed)
	Reason      string
	Message     string
}

// Health is the status page's banner: is each upstream answering, and
// did the last evaluation go through.
type Health struct {
	// PrometheusAt is the last query, PrometheusOK the last that worked.
	PrometheusAt, PrometheusOK time.Time
	PrometheusErr              string
	// KubeAt is the last Kubernetes API call, KubeOK the last answered.
	// An API error the server sent (404, 403) counts as answered.
	KubeAt, KubeOK   time.Time
	KubeErr          string
	LastEvaluation   time.Time
	EvaluationErrors []string
}

func (e *Engine) notePrometheus(err error) {
	now := e.clock.Now()
	e.mu.Lock()
	defer e.mu.Unlock()
	e.health.PrometheusAt = now
	if err == nil {
		e.health.PrometheusOK, e.health.PrometheusErr = now, ""
		return
	}
	e.health.PrometheusErr = err.Error()
}

func (e *Engine) noteKube(err error) {
	now := e.clock.Now()
	e.mu.Lock()
	defer e.mu.Unlock()
	e.health.KubeAt = now
	var st apierrors.APIStatus
	if err == nil || (errors.As(err, &st) && st.Status().Code > 0 && st.Status().Code < 500) {
		e.health.KubeOK, e.health.KubeErr = now, ""
		return
	}
	e.health.KubeErr = err.Error()
}

// noteSkip adds a skip to the recent skips, or refreshes the entry of the
// same rule, target and reason.
func (e *Engine) noteSkip(r *Rule, target, reason, msg string, now time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for i := len(e.skips) - 1; i >= 0; i-- {
		s := e.skips[i]
		if s.Rule == r.Name && s.Target == target && s.Reason == reason {
			s.Last, s.Message = now, msg
			s.Count++
			e.skips = append(slices.Delete(e.skips, i, i+1), s)
			return
		}
	}
	e.skips = append(e.skips, SkipLog{First: now, Last: now, Count: 1, Rule: r.Name, Target: target, Reason: reason, Message: msg})
	if len(e.skips) > recentSkips {
		e.skips = e.skips[len(e.skips)-recentSkips:]
	}
}

// publish copies the evaluation state for readers.
func (e *Engine) publish() {
	now := e.clock.Now()
	snap := make([]RuleStatus, 0, len(e.rules))
	for _, rs := range e.rules {
		r := rs.rule
		dry := e.cfg.DryRun || r.DryRun
		st := RuleStatus{Rule: r, DryRun: dry, LastEval: rs.lastEval, LastError: rs.lastError,
			Warnings: slices.Clone(rs.lastWarnings), ErrorHard: rs.lastErrorHard, Ignored: rs.lastIgnored,
			Guards:   slices.Clone(rs.guards),
			Budget:   Budget{Used: e.ledger.since(r.Name, now, time.Duration(r.Window), dry), Max: r.MaxActions, Window: r.Window.String()},
			GraphURL: graphURL(e.links.Prometheus, r.Expr),
		}
		if st.Guards == nil {
			st.Guards = notChecked(r.Guards)
		}
		for _, key := range slices.Sorted(maps.Keys(rs.candidates)) {
			c := *rs.candidates[key]
			cs := CandidateStatus{Candidate: c,
				Firing:  rs.lastEval.Sub(c.PendingSince) >= time.Duration(r.For),
				LogsURL: logsURL(e.links.Greybox, r, c.Labels)}
			if last, ok := e.ledger.lastOn(key, c.Object, dry); ok {
				if until := last.Add(time.Duration(r.Cooldown)); until.After(now) {
					cs.CooldownUntil = until
				}
			}
			st.Candidates = append(st.Candidates, cs)
		}
		snap = append(snap, st)
	}
	sg := e.cfg.StormGuard
	storm := Budget{Used: e.ledger.since("", now, time.Duration(sg.Window), e.cfg.DryRun), Max: sg.MaxActions, Window: sg.Window.String()}
	state := ""
	if e.stateErr != nil {
		state = e.stateErr.Error()
	}
	e.mu.Lock()
	e.snap = snap
	e.state = state
	e.storm = storm
	e.stateReadShown = e.stateRead
	e.mu.Unlock()
}

// graphURL links Prometheus's graph page, table tab, for expr.
func graphURL(base, expr string) string {
	u := linkBase(base, "/graph")
	if u == nil {
		return ""
	}
	u.RawQuery = url.Values{"g0.expr": {expr}, "g0.tab": {"1"}}.Encode()
	return u.String()
}

// logsURL links greybox's newest debug report for the probe behind a
// candidate: its module and target labels (the rule's probe_labels).
func logsURL(base string, r *Rule, l model.Metric) string {
	module, target := string(l[model.LabelName(r.ProbeLabels.Module)]), string(l[model.LabelName(r.ProbeLabels.Target)])
	if module == "" || target == "" || r.ProbeLabels.Module == "" || r.ProbeLabels.Target == "" {
		return ""
	}
	u := linkBase(base, "/logs")
	if u == nil {
		return ""
	}
	u.RawQuery = url.Values{"module": {module}, "target": {target}}.Encode()
	return u.String()
}

// linkBase is base with path appended, without credentials, query or
// fragment; nil when base is empty or not a URL.
func linkBase(base, path string) *url.URL {
	if base == "" {
		return nil
	}
	u, err := url.Parse(base)
	if err != nil || u.Host == "" {
		return nil
	}
	u.User, u.RawQuery, u.Fragment, u.RawFragment = nil, "", "", ""
	u.Path = strings.TrimSuffix(u.Path, "/") + path
	u.RawPath = ""
	return u
}

// StateError is the state store's current problem, "" when the last read
// agreed with what this process knows. While it is set no action is taken.
func (e *Engine) StateError() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.state
}

// Status returns the latest published rule states and recent actions, newest first.
func (e *Engine) Status() ([]RuleStatus, []ActionLog) {
	e.mu.Lock()
	defer e.mu.Unlock()
	recent := slices.Clone(e.recent)
	slices.Reverse(recent)
	return slices.Clone(e.snap), recent
}

// Skips returns the recent skips, most recently seen first.
func (e *Engine) Skips() []SkipLog {
	e.mu.Lock()
	defer e.mu.Unlock()
	skips := slices.Clone(e.skips)
	slices.Reverse(skips)
	return skips
}

// Health returns the banner's state.
func (e *Engine) Health() Health {
	e.mu.Lock()
	defer e.mu.Unlock()
	h := e.health
	h.EvaluationErrors = slices.Clone(h.EvaluationErrors)
	return h
}

// StormGuard is the storm guard's use of its window, as last published.
func (e *Engine) StormGuard() Budget {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.storm
}

// redactedURL is s without its password, for display.
func redactedURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(invalid URL)"
	}
	return u.Redacted()
}

func ts(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return t.UTC().Format(time.RFC3339)
}

var statusTemplate = template.Must(template.New("status").Funcs(template.FuncMap{
	"ts":     ts,
	"reason": reasonText,
}).Parse(`<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>greybox remediator</title>
<style>
body{font-family:sans-serif;margin:1em;line-height:1.35}
table{border-collapse:collapse;margin-bottom:1em}
td,th{border:1px solid #ccc;padding:.25em .5em;text-align:left;vertical-align:top}
code{white-space:pre-wrap;word-break:break-word}
.scroll{overflow-x:auto}
.firing{background:#fee}
.banner{border:2px solid #6a6;background:#efe;padding:.25em 1em;margin-bottom:1em}
.banner.bad{border-color:#c33;background:#fee}
.banner li{margin:.2em 0}
.bad-item{color:#a00;font-weight:bold}
.cols{display:flex;flex-wrap:wrap;gap:1em}
.cols>section{flex:1 1 22em;min-width:0}
</style>
</head>
<body>
<h1>greybox remediator</h1>
<div class="banner{{if .Bad}} bad{{end}}" id="health">
<ul>
<li>Prometheus <code>{{.PrometheusURL}}</code>:
{{- with .Health}}
{{- if .PrometheusAt.IsZero}} not queried yet
{{- else if .PrometheusErr}} <span class="bad-item">last query failed</span> at {{ts .PrometheusAt}}: {{.PrometheusErr}} (last success: {{ts .PrometheusOK}})
{{- else}} ok, last query {{ts .PrometheusAt}}{{end}}
{{- end}}</li>
<li>Kubernetes:
{{- if not .KubeConfigured}} not configured — plan mode: candidates are not resolved to pods and nothing is changed
{{- else if .Health.KubeAt.IsZero}} configured, not called yet (the API is called when a candidate needs it)
{{- else if .Health.KubeErr}} <span class="bad-item">last call failed</span> at {{ts .Health.KubeAt}}: {{.Health.KubeErr}} (last answer: {{ts .Health.KubeOK}})
{{- else}} reachable, last call {{ts .Health.KubeAt}}{{end}}</li>
<li>Leader:
{{- if .Electing}} {{if .Leader}}<b>yes</b>, holds the Lease{{else}}<b>no</b>, another instance holds the Lease (or none yet){{end}}
{{- else if not .KubeConfigured}} not electing — not needed in plan mode without Kubernetes
{{- else}} not electing (--leader-elect not set): this instance acts alone{{end}}</li>
<li>Mode: {{if .DryRun}}<b>dry run</b>: logs and counts, never changes the cluster{{else}}acting{{end}}</li>
<li>Last evaluation:
{{- with .Health}} {{ts .LastEvaluation}}
{{- if .EvaluationErrors}} — <span class="bad-item">{{len .EvaluationErrors}} error(s)</span>:{{range .EvaluationErrors}} <code>{{.}}</code>{{end}}
{{- else if not .LastEvaluation.IsZero}} — no errors{{end}}
{{- end}}</li>
<li>State store: {{if .StateError}}<span class="bad-item">not trusted, no action is taken:</span> {{.StateError}}{{else}}ok{{if .KubeConfigured}}, last read {{ts .StateRead}}{{else}} (in memory: plan mode){{end}}{{end}}</li>
<li>Storm guard: {{.Storm.Used}} of {{.Storm.Max}} actions across all rules in the last {{.Storm.Window}}{{if ge .Storm.Used .Storm.Max}} — <span class="bad-item">exhausted</span>{{end}}</li>
</ul>
</div>
<p>Version {{.Version}} · now {{ts .Now}} · <a href="metrics">metrics</a></p>
<h2>Rules</h2>
{{range .Rules}}
<h3 id="rule-{{.Rule.Name}}">{{.Rule.Name}}</h3>
<div class="scroll"><table>
<tr><th>expr</th><td><code>{{.Rule.Expr}}</code>{{if .GraphURL}} · <a href="{{.GraphURL}}">graph in Prometheus</a>{{end}}</td></tr>
{{range .Guards}}<tr><th>guard</th><td><code>{{.Expr}}</code> — {{if eq .Result "ok" "not checked"}}{{.Result}}{{else}}<span class="bad-item">{{.Result}}</span>{{end}}{{if .Detail}}: {{.Detail}}{{end}}</td></tr>{{end}}
<tr><th>for</th><td>{{.Rule.For}}</td></tr>
<tr><th>action</th><td>{{.Rule.Action}}{{if .DryRun}} (dry-run){{end}}</td></tr>
<tr><th>budget</th><td>{{.Budget.Left}} of {{.Budget.Max}} actions left in {{.Budget.Window}} ({{.Budget.Used}} used){{if eq .Budget.Left 0}} — <span class="bad-item">exhausted</span>{{end}}</td></tr>
<tr><th>cooldown</th><td>{{.Rule.Cooldown}} per target</td></tr>
<tr><th>namespaces</th><td>{{range $i, $n := .Rule.Namespaces}}{{if $i}}, {{end}}{{$n}}{{end}}</td></tr>
<tr><th>selector</th><td>{{if .Rule.Selector}}<code>{{.Rule.Selector}}</code>{{else}}(any){{end}}</td></tr>
<tr><th>last evaluation</th><td>{{ts .LastEval}}{{if .LastError}} — <span class="bad-item">error:</span> {{.LastError}}{{end}}</td></tr>
{{if .Ignored}}<tr><th>ignored series</th><td>{{.Ignored}}</td></tr>{{end}}
</table></div>
{{if .Candidates}}
<div class="scroll"><table>
<tr><th>target</th><th>value</th><th>pending since</th><th>state</th><th>cooldown until</th><th>pod</th><th>last result</th><th>detail</th></tr>
{{range .Candidates}}
<tr{{if .Firing}} class="firing"{{end}}><td>{{.Namespace}}/{{.Pod}}{{if .LogsURL}} · <a href="{{.LogsURL}}">probe logs</a>{{end}}</td><td>{{.Value}}</td><td>{{ts .PendingSince}}</td><td>{{if .Firing}}firing{{else}}pending{{end}}</td><td>{{if .CooldownUntil.IsZero}}—{{else}}{{ts .CooldownUntil}}{{end}}</td><td>{{if .Resolved}}{{.Resolved}}{{else}}—{{end}}</td><td>{{.LastResult}}</td><td>{{.LastMessage}}</td></tr>
{{end}}
</table></div>
{{else}}<p>No candidates.</p>{{end}}
{{end}}
<div class="cols">
<section id="recent-actions">
<h2>Recent actions</h2>
{{if .Recent}}
<div class="scroll"><table>
<tr><th>time</th><th>rule</th><th>action</th><th>target</th><th>object</th><th>result</th><th>detail</th></tr>
{{range .Recent}}<tr><td>{{ts .Time}}</td><td>{{.Rule}}</td><td>{{.Action}}</td><td>{{.Target}}</td><td>{{.Object}}</td><td>{{.Result}}</td><td>{{.Message}}</td></tr>
{{end}}
</table></div>
{{else}}<p>None since start.</p>{{end}}
</section>
<section id="recent-skips">
<h2>Recent skips</h2>
{{if .Skips}}
<div class="scroll"><table>
<tr><th>last seen</th><th>rule</th><th>target</th><th>reason</th><th>times</th><th>detail</th></tr>
{{range .Skips}}<tr><td>{{ts .Last}}</td><td>{{.Rule}}</td><td>{{if .Target}}{{.Target}}{{else}}(rule){{end}}</td><td>{{.Reason}}: {{reason .Reason}}</td><td>{{.Count}}{{if gt .Count 1}} since {{ts .First}}{{end}}</td><td>{{.Message}}</td></tr>
{{end}}
</table></div>
{{else}}<p>None since start.</p>{{end}}
</section>
</div>
</body>
</html>
`))

// statusPage is what the status template renders.
type statusPage struct {
	Version        string
	Now            time.Time
	PrometheusURL  string
	Health         Health
	KubeConfigured bool
	Electing       bool
	Leader         bool
	DryRun         bool
	StateError     string
	StateRead      time.Time
	Storm          Budget
	Rules          []RuleStatus
	Recent         []ActionLog
	Skips          []SkipLog
}

// Bad says the banner should draw attention.
func (p statusPage) Bad() bool {
	h := p.Health
	return h.PrometheusErr != "" || h.KubeErr != "" || len(h.EvaluationErrors) > 0 || p.StateError != "" ||
		(p.Electing && !p.Leader) || p.Storm.Used >= p.Storm.Max
}

// StatusHandler serves the status page; version is shown in the header.
func (e *Engine) StatusHandler(version string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		rules, recent := e.Status()
		e.mu.Lock()
		stateRead := e.stateReadShown
		e.mu.Unlock()
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		err := statusTemplate.Execute(w, statusPage{
			Version: version, Now: e.clock.Now(), PrometheusURL: redactedURL(e.cfg.Prometheus.URL),
			Health: e.Health(), KubeConfigured: e.kube != nil, Electing: e.electing, Leader: e.IsLeader(),
			DryRun: e.cfg.DryRun, StateError: e.StateError(), StateRead: stateRead, Storm: e.StormGuard(),
			Rules: rules, Recent: recent, Skips: e.Skips(),
		})
		if err != nil {
			e.logger.Warn("status page", "err", err)
		}
	})
}

// reasonText says what a skip reason means, for people.
func reasonText(reason string) string {
	if t, ok := reasonTexts[reason]; ok {
		return t
	}
	return reason
}

var reasonTexts = map[string]string{
	SkipQueryError:       "the rule's query failed or warned (a partial answer)",
	SkipMissingLabels:    "a series lacks the target labels",
	SkipInvalidValue:     "the value is not a number",
	SkipStaleSample:      "the sample is stale",
	SkipGuardError:       "a guard's query failed",
	SkipGuardFailed:      "a guard (dependency ready?) returned no usable sample",
	SkipNamespace:        "the rule may not act in this namespace",
	SkipNotLeader:        "this instance is not the leader",
	SkipStateError:       "the state store is not trusted",
	SkipCooldown:         "the target is in its cooldown",
	SkipRuleBudget:       "the rule's budget is exhausted",
	SkipStormGuard:       "the storm guard's budget across all rules is exhausted",
	SkipPodGone:          "the pod no longer exists",
	SkipPodTerminating:   "the pod is already terminating",
	SkipSelectorMismatch: "the live pod does not match the rule's selector",
	SkipAlreadyReplaced:  "the pod was created after the condition began",
	SkipKubeError:        "a Kubernetes API call failed",
	SkipNoOwner:          "no workload owns the pod",
}
