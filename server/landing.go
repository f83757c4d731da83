package server

import (
	"fmt"
	"html/template"
	"maps"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/common/version"

	"github.com/greybox-probe/greybox/config"
	"github.com/greybox-probe/greybox/prober"
)

// stateRow is the landing page's answer to "what is failing, and why":
// one module × target seen in history, its last result and, if it failed
// at some point in history, the last failure's reason.
type stateRow struct {
	Last        *prober.Entry
	LastFailure *prober.Entry
}

// currentState groups history by module and target, failing rows first.
func currentState(entries []*prober.Entry) []stateRow {
	type key struct{ module, target, hostname string }
	idx := map[key]int{}
	var rows []stateRow
	for _, e := range entries { // newest first
		k := key{e.Module, e.Target, e.Hostname}
		i, ok := idx[k]
		if !ok {
			i = len(rows)
			idx[k] = i
			rows = append(rows, stateRow{Last: e})
		}
		if !e.Success && rows[i].LastFailure == nil {
			rows[i].LastFailure = e
		}
	}
	slices.SortStableFunc(rows, func(a, b stateRow) int {
		if a.Last.Success != b.Last.Success {
			if !a.Last.Success {
				return -1
			}
			return 1
		}
		if c := strings.Compare(a.Last.Module, b.Last.Module); c != 0 {
			return c
		}
		return strings.Compare(a.Last.Target, b.Last.Target)
	})
	return rows
}

// human shows a duration in the unit a person reads: 840 µs, 12 ms, 1.25 s.
func human(d time.Duration) string {
	switch {
	case d <= 0:
		return "0"
	case d < time.Millisecond:
		return fmt.Sprintf("%d µs", d.Microseconds())
	case d < 10*time.Millisecond:
		return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
	case d < time.Second:
		return fmt.Sprintf("%d ms", d.Milliseconds())
	case d < time.Minute:
		return fmt.Sprintf("%.2f s", d.Seconds())
	case d < time.Hour:
		return fmt.Sprintf("%d min %d s", int(d.Minutes()), int(d.Seconds())%60)
	default:
		return fmt.Sprintf("%d h %d min", int(d.Hours()), int(d.Minutes())%60)
	}
}

// ago is how long before now t was, in human units.
func ago(now, t time.Time) string {
	d := now.Sub(t)
	if d < time.Second {
		return "just now"
	}
	return human(d.Truncate(time.Second)) + " ago"
}

// result names an entry's outcome: success, failure, or the refusal.
func result(e *prober.Entry) string {
	switch {
	case e.Status != 0:
		return fmt.Sprintf("refused %d", e.Status)
	case e.Success:
		return "success"
	default:
		return "failure"
	}
}

// shortTarget keeps a long target from filling the page (and its memory):
// the whole target is in the probe's logs.
func shortTarget(t string) string {
	const max = 160
	if len(t) <= max {
		return t
	}
	return strings.ToValidUTF8(t[:max], "") + "…"
}

// probeLinkMax: longer targets get no probe links (the URL would be
// unwieldy); the logs link by id works for any.
const probeLinkMax = 1024

func wantsHTML(r *http.Request) bool { return strings.Contains(r.Header.Get("Accept"), "text/html") }

var funcs = template.FuncMap{
	"short":  shortTarget,
	"human":  human,
	"result": result,
	"utc":    func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05") },
	"linkable": func(target string) bool {
		// History keeps targets redacted: probing "xxxxx" would not be the
		// same probe.
		return len(target) <= probeLinkMax && !strings.Contains(target, "xxxxx")
	},
}

// One stylesheet for both pages: readable on a laptop and a phone (the
// tables scroll sideways rather than squeezing the reason column).
const style = `<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{font-family:sans-serif;margin:1em;line-height:1.4}table{border-collapse:collapse}.scroll{overflow-x:auto}
td,th{padding:.25em .7em;border-bottom:1px solid #ddd;text-align:left;vertical-align:top}
.fail{color:#b00;font-weight:bold}.ok{color:#070}.refused{color:#a50;font-weight:bold}.reason{max-width:40em}
pre{white-space:pre-wrap;word-break:break-all}code{word-break:break-all}</style>`

var landing = template.Must(template.New("landing").Funcs(funcs).Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>greybox</title>` + style + `</head><body>
<h1>greybox</h1>
<p>Probes what black-box checks miss. Version {{.Version}}.
<a href="{{.Base}}/metrics">Metrics</a> · <a href="{{.Base}}/config">Configuration</a> · <a href="{{.Base}}/-/healthy">Health</a></p>

<h2 id="state">Current state</h2>
<div class="scroll"><table id="state-table"><tr><th>Module</th><th>Target</th><th>Last result</th><th>When</th><th>Took</th><th>Last failure</th><th>Links</th></tr>
{{range .State}}{{$l := .Last}}<tr class="state-row">
<td>{{$l.Module}}</td><td><code>{{short $l.Target}}</code>{{with $l.Hostname}} <small>Host: <code>{{.}}</code></small>{{end}}</td>
<td>{{if $l.Status}}<span class="refused">{{result $l}}</span>{{else if $l.Success}}<span class="ok">success</span>{{else}}<span class="fail">failure</span>{{end}}</td>
<td title="{{utc $l.Start}} UTC">{{index $.Ago $l.ID}}</td><td>{{if $l.Status}}–{{else}}{{human $l.Duration}}{{end}}</td>
<td class="reason">{{with .LastFailure}}{{.Reason}}{{if ne .ID $l.ID}} <small>({{index $.Ago .ID}})</small>{{end}}{{else}}–{{end}}</td>
<td>{{if linkable $l.Target}}<a href="{{$.Base}}/logs?module={{$l.Module}}&amp;target={{$l.Target}}{{with $l.Hostname}}&amp;hostname={{.}}{{end}}">logs</a> · <a href="{{$.Base}}/probe?module={{$l.Module}}&amp;target={{$l.Target}}{{with $l.Hostname}}&amp;hostname={{.}}{{end}}">probe</a> · <a href="{{$.Base}}/probe?module={{$l.Module}}&amp;target={{$l.Target}}{{with $l.Hostname}}&amp;hostname={{.}}{{end}}&amp;debug=true">debug</a>{{else}}<a href="{{$.Base}}/logs?id={{$l.ID}}">logs</a>{{end}}</td></tr>
{{else}}<tr><td colspan="7">No probes yet.</td></tr>
{{end}}</table></div>

<h2>Try a probe</h2>
<form action="{{.Base}}/probe" method="get">
<label>Module <select name="module">{{range .Modules}}<option>{{.Name}}</option>{{end}}</select></label>
<label>Target <input name="target" size="40" placeholder="http://127.0.0.1:8080/" required></label>
<label>Hostname <input name="hostname" size="24" placeholder="optional Host / SNI"></label>
<label><input type="checkbox" name="debug" value="true" checked> debug</label>
<button type="submit">Probe</button></form>

<h2>Modules</h2>
<div class="scroll"><table><tr><th>Module</th><th>Prober</th><th>Timeout</th><th>Allowed targets</th></tr>
{{range .Modules}}<tr><td>{{.Name}}</td><td>{{.Prober}}</td><td>{{.Timeout}}</td><td>{{if .AllowedTargets.Entries}}{{range .AllowedTargets.Entries}}{{.}} {{end}}{{else}}any{{end}}</td></tr>
{{end}}</table></div>

<h2>Recent probes</h2>
<div class="scroll"><table id="history"><tr><th>Time (UTC)</th><th>Module</th><th>Target</th><th>Result</th><th>Took</th><th>Reason</th><th>Debug</th></tr>
{{range .History}}<tr><td>{{utc .Start}}</td><td>{{.Module}}</td><td><code>{{short .Target}}</code>{{with .Hostname}} <small>Host: <code>{{.}}</code></small>{{end}}</td>
<td>{{if .Status}}<span class="refused">{{result .}}</span>{{else if .Success}}<span class="ok">success</span>{{else}}<span class="fail">failure</span>{{end}}</td><td>{{if .Status}}–{{else}}{{human .Duration}}{{end}}</td>
<td class="reason">{{.Reason}}</td><td><a href="{{$.Base}}/logs?id={{.ID}}">logs</a></td></tr>
{{else}}<tr><td colspan="7">No probes yet.</td></tr>
{{end}}</table></div>
</body></html>
`))

var logsPage = template.Must(template.New("logs").Funcs(funcs).Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>greybox: probe {{.Entry.ID}}</title>` + style + `</head><body>
<p><a href="{{.Base}}/">← greybox</a></p>
{{with .Entry}}<h1>{{.Module}} · <code>{{short .Target}}</code></h1>
<p>Probe {{.ID}} at {{utc .Start}} UTC: <b>{{result .}}</b>{{if not .Status}} in {{human .Duration}}{{end}}.</p>
{{if .Reason}}<p id="reason">Reason: {{.Reason}}</p>{{end}}
<pre>{{.Debug}}</pre>{{end}}
</body></html>
`))

func (s *Server) page(data map[string]any) map[string]any {
	data["Base"] = s.base
	data["Version"] = version.Version
	return data
}

func (s *Server) render(w http.ResponseWriter, t *template.Template, data map[string]any) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	if err := t.Execute(w, data); err != nil {
		s.Logger.Error("rendering page", "page", t.Name(), "err", err)
	}
}

func (s *Server) handleLanding(w http.ResponseWriter, _ *http.Request) {
	cfg := s.cfg.Get()
	mods := make([]*config.Module, 0, len(cfg.Modules))
	for _, name := range slices.Sorted(maps.Keys(cfg.Modules)) {
		mods = append(mods, cfg.Modules[name])
	}
	hist := s.history.List()
	now := time.Now()
	agos := make(map[int64]string, len(hist))
	for _, e := range hist {
		agos[e.ID] = ago(now, e.Start)
	}
	s.render(w, landing, s.page(map[string]any{
		"Modules": mods,
		"State":   currentState(hist),
		"History": hist,
		"Ago":     agos,
	}))
}
