package remediate

import (
	"html/template"
	"maps"
	"net/http"
	"slices"
	"time"
)

// RuleStatus is a rule as shown on the status page.
type RuleStatus struct {
	Rule      *Rule
	DryRun    bool
	LastEval  time.Time
	LastError string
	// Ignored lists the series the last evaluation did not take as
	// candidates, with the reason (NaN, stale).
	Ignored    string
	Candidates []CandidateStatus
}

// CandidateStatus is a copy of a candidate for the status page.
type CandidateStatus struct {
	Candidate
	Firing bool
}

// publish copies the evaluation state for readers.
func (e *Engine) publish() {
	snap := make([]RuleStatus, 0, len(e.rules))
	for _, rs := range e.rules {
		st := RuleStatus{Rule: rs.rule, DryRun: e.cfg.DryRun || rs.rule.DryRun, LastEval: rs.lastEval, LastError: rs.lastError, Ignored: rs.lastIgnored}
		for _, key := range slices.Sorted(maps.Keys(rs.candidates)) {
			c := *rs.candidates[key]
			st.Candidates = append(st.Candidates, CandidateStatus{Candidate: c,
				Firing: rs.lastEval.Sub(c.PendingSince) >= time.Duration(rs.rule.For)})
		}
		snap = append(snap, st)
	}
	state := ""
	if e.stateErr != nil {
		state = e.stateErr.Error()
	}
	e.mu.Lock()
	e.snap = snap
	e.state = state
	e.mu.Unlock()
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

var statusTemplate = template.Must(template.New("status").Funcs(template.FuncMap{
	"ts": func(t time.Time) string {
		if t.IsZero() {
			return "never"
		}
		return t.UTC().Format(time.RFC3339)
	},
}).Parse(`<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>greybox remediator</title>
<style>body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse;margin-bottom:1em}td,th{border:1px solid #ccc;padding:.25em .5em;text-align:left;vertical-align:top}code{white-space:pre-wrap}.firing{background:#fee}</style>
</head>
<body>
<h1>greybox remediator</h1>
<p>Version {{.Version}} · leader: <b>{{if .Leader}}yes{{else}}no{{end}}</b> · global dry-run: <b>{{if .DryRun}}yes{{else}}no{{end}}</b> · now {{ts .Now}} ·
<a href="metrics">metrics</a></p>
<p>State store: {{if .StateError}}<b>not trusted, no action is taken:</b> {{.StateError}}{{else}}ok{{end}}</p>
<h2>Rules</h2>
{{range .Rules}}
<h3 id="rule-{{.Rule.Name}}">{{.Rule.Name}}</h3>
<table>
<tr><th>expr</th><td><code>{{.Rule.Expr}}</code></td></tr>
{{range .Rule.Guards}}<tr><th>guard</th><td><code>{{.}}</code></td></tr>{{end}}
<tr><th>for</th><td>{{.Rule.For}}</td></tr>
<tr><th>action</th><td>{{.Rule.Action}}{{if .DryRun}} (dry-run){{end}}</td></tr>
<tr><th>cooldown / budget</th><td>{{.Rule.Cooldown}} per target; {{.Rule.MaxActions}} per {{.Rule.Window}}</td></tr>
<tr><th>namespaces</th><td>{{range $i, $n := .Rule.Namespaces}}{{if $i}}, {{end}}{{$n}}{{end}}</td></tr>
<tr><th>selector</th><td>{{if .Rule.Selector}}<code>{{.Rule.Selector}}</code>{{else}}(any){{end}}</td></tr>
<tr><th>last evaluation</th><td>{{ts .LastEval}}{{if .LastError}} — <b>error:</b> {{.LastError}}{{end}}</td></tr>
{{if .Ignored}}<tr><th>ignored series</th><td>{{.Ignored}}</td></tr>{{end}}
</table>
{{if .Candidates}}
<table>
<tr><th>target</th><th>value</th><th>pending since</th><th>state</th><th>last result</th><th>detail</th></tr>
{{range .Candidates}}
<tr{{if .Firing}} class="firing"{{end}}><td>{{.Namespace}}/{{.Pod}}</td><td>{{.Value}}</td><td>{{ts .PendingSince}}</td><td>{{if .Firing}}firing{{else}}pending{{end}}</td><td>{{.LastResult}}</td><td>{{.LastMessage}}</td></tr>
{{end}}
</table>
{{else}}<p>No candidates.</p>{{end}}
{{end}}
<h2>Recent actions</h2>
{{if .Recent}}
<table>
<tr><th>time</th><th>rule</th><th>action</th><th>target</th><th>object</th><th>result</th><th>detail</th></tr>
{{range .Recent}}<tr><td>{{ts .Time}}</td><td>{{.Rule}}</td><td>{{.Action}}</td><td>{{.Target}}</td><td>{{.Object}}</td><td>{{.Result}}</td><td>{{.Message}}</td></tr>
{{end}}
</table>
{{else}}<p>None since start.</p>{{end}}
</body>
</html>
`))

// StatusHandler serves the status page; version is shown in the header.
func (e *Engine) StatusHandler(version string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		rules, recent := e.Status()
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		err := statusTemplate.Execute(w, map[string]any{
			"Version": version, "Leader": e.IsLeader(), "DryRun": e.cfg.DryRun, "Now": e.clock.Now(),
			"Rules": rules, "Recent": recent, "StateError": e.StateError(),
		})
		if err != nil {
			e.logger.Warn("status page", "err", err)
		}
	})
}
