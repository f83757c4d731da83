// Package examples_test checks that the shipped examples (Prometheus config, alert rules,
// Grafana dashboard, Kubernetes and prometheus-operator manifests) are valid and agree
// with each other and with the metrics greybox emits. The examples are what users copy;
// a renamed metric must fail the build, not the pager.
package examples_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

const (
	promConfig    = "prometheus/prometheus.yml"
	alertsFile    = "prometheus/alerts.yml"
	alertsTest    = "prometheus/alerts_test.yml"
	promRule      = "prometheus-operator/prometheusrule.yaml"
	dashboardFile = "grafana/greybox.json"
)

// promtool returns the promtool binary. Locally a missing promtool skips the test; in CI
// (CI set) it is an error, so the checks cannot silently stop running.
func promtool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("promtool not found in CI: %v", err)
		}
		t.Skipf("promtool not found: %v", err)
	}
	return p
}

func runPromtool(t *testing.T, args ...string) {
	t.Helper()
	cmd := exec.Command(promtool(t), args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func TestPrometheusConfig(t *testing.T) {
	// check config also loads and checks the rule_files (alerts.yml).
	runPromtool(t, "check", "config", promConfig)
}

func TestAlertRuleUnitTests(t *testing.T) {
	runPromtool(t, "test", "rules", alertsTest)
}

// TestAlertsHaveTests makes sure every alert in alerts.yml has a promtool unit test that
// expects it to fire and one that expects it not to.
func TestAlertsHaveTests(t *testing.T) {
	var rules struct {
		Groups []struct {
			Rules []struct {
				Alert       string            `yaml:"alert"`
				Labels      map[string]string `yaml:"labels"`
				Annotations map[string]string `yaml:"annotations"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	readYAML(t, alertsFile, &rules)
	var tests struct {
		Tests []struct {
			AlertRuleTest []struct {
				Alertname string `yaml:"alertname"`
				ExpAlerts []any  `yaml:"exp_alerts"`
			} `yaml:"alert_rule_test"`
		} `yaml:"tests"`
	}
	readYAML(t, alertsTest, &tests)
	firing, silent := map[string]bool{}, map[string]bool{}
	for _, tc := range tests.Tests {
		for _, a := range tc.AlertRuleTest {
			if len(a.ExpAlerts) > 0 {
				firing[a.Alertname] = true
			} else {
				silent[a.Alertname] = true
			}
		}
	}
	n := 0
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			n++
			if !firing[r.Alert] {
				t.Errorf("alert %s: no unit test expects it to fire", r.Alert)
			}
			if !silent[r.Alert] {
				t.Errorf("alert %s: no unit test expects it not to fire", r.Alert)
			}
			if r.Labels["severity"] == "" {
				t.Errorf("alert %s: no severity label", r.Alert)
			}
			for _, a := range []string{"summary", "description"} {
				if r.Annotations[a] == "" {
					t.Errorf("alert %s: no %s annotation", r.Alert, a)
				}
			}
		}
	}
	if n == 0 {
		t.Fatalf("%s: no alerts found", alertsFile)
	}
}

// TestPrometheusRuleMatchesAlerts keeps the prometheus-operator copy of the rules
// identical to alerts.yml (which is the one promtool tests).
func TestPrometheusRuleMatchesAlerts(t *testing.T) {
	var plain struct {
		Groups any `yaml:"groups"`
	}
	readYAML(t, alertsFile, &plain)
	var crd struct {
		APIVersion string `yaml:"apiVersion"`
		Kind       string `yaml:"kind"`
		Spec       struct {
			Groups any `yaml:"groups"`
		} `yaml:"spec"`
	}
	readYAML(t, promRule, &crd)
	if crd.APIVersion != "monitoring.coreos.com/v1" || crd.Kind != "PrometheusRule" {
		t.Fatalf("%s: got %s %s, want monitoring.coreos.com/v1 PrometheusRule", promRule, crd.APIVersion, crd.Kind)
	}
	if plain.Groups == nil {
		t.Fatalf("%s: no groups", alertsFile)
	}
	if !reflect.DeepEqual(plain.Groups, crd.Spec.Groups) {
		a, b := indentJSON(plain.Groups), indentJSON(crd.Spec.Groups)
		t.Fatalf("%s spec.groups differ from %s groups; keep them identical.\n%s", promRule, alertsFile, firstDiff(a, b))
	}
}

// configuredModules returns the module names of examples/greybox.yml.
func configuredModules(t *testing.T) map[string]bool {
	t.Helper()
	var cfg struct {
		Modules map[string]any `yaml:"modules"`
	}
	readYAML(t, "greybox.yml", &cfg)
	mods := map[string]bool{}
	for m := range cfg.Modules {
		mods[m] = true
	}
	return mods
}

// TestModulesExist checks that every module the scrape configs, prometheus-operator
// objects and alerts name is defined in examples/greybox.yml, and that each /probe job
// passes the module it labels its series with.
func TestModulesExist(t *testing.T) {
	mods := configuredModules(t)
	check := func(where, module string) {
		t.Helper()
		if !mods[module] {
			t.Errorf("%s: module %q is not defined in examples/greybox.yml", where, module)
		}
	}

	var prom struct {
		ScrapeConfigs []struct {
			JobName       string              `yaml:"job_name"`
			MetricsPath   string              `yaml:"metrics_path"`
			Params        map[string][]string `yaml:"params"`
			StaticConfigs []struct {
				Labels map[string]string `yaml:"labels"`
			} `yaml:"static_configs"`
			RelabelConfigs []struct {
				SourceLabels []string `yaml:"source_labels"`
				TargetLabel  string   `yaml:"target_label"`
			} `yaml:"relabel_configs"`
		} `yaml:"scrape_configs"`
	}
	readYAML(t, promConfig, &prom)
	probeJobs := 0
	for _, j := range prom.ScrapeConfigs {
		if j.MetricsPath != "/probe" {
			continue
		}
		probeJobs++
		where := promConfig + " job " + j.JobName
		if len(j.Params["module"]) != 1 {
			t.Errorf("%s: params.module must name exactly one module, got %v", where, j.Params["module"])
			continue
		}
		module := j.Params["module"][0]
		check(where, module)
		if j.JobName != "greybox_"+module {
			t.Errorf("%s: job name should be greybox_%s (GreyboxProbeStale matches greybox_.+)", where, module)
		}
		for _, sc := range j.StaticConfigs {
			if sc.Labels["module"] != module {
				t.Errorf("%s: static_configs label module=%q, want %q", where, sc.Labels["module"], module)
			}
		}
		relabels := map[string]bool{}
		for _, r := range j.RelabelConfigs {
			relabels[strings.Join(r.SourceLabels, ",")+"->"+r.TargetLabel] = true
		}
		for _, want := range []string{"__address__->__param_target", "__param_target->instance", "->__address__"} {
			if !relabels[want] {
				t.Errorf("%s: missing relabelling %s", where, want)
			}
		}
	}
	if probeJobs == 0 {
		t.Errorf("%s: no /probe jobs", promConfig)
	}

	for _, file := range []string{"prometheus-operator/probe-terminal.yaml", "prometheus-operator/scrapeconfig-traefik.yaml"} {
		for i, doc := range readYAMLDocs(t, file) {
			where := fmt.Sprintf("%s (document %d)", file, i+1)
			var module string
			switch doc["kind"] {
			case "Probe":
				module, _ = dig(doc, "spec", "module").(string)
				if l, _ := dig(doc, "spec", "targets", "staticConfig", "labels", "module").(string); l != module {
					t.Errorf("%s: label module=%q, want %q", where, l, module)
				}
			case "ScrapeConfig":
				ms, _ := dig(doc, "spec", "params", "module").([]any)
				if len(ms) != 1 {
					t.Errorf("%s: params.module must name exactly one module", where)
					continue
				}
				module = fmt.Sprint(ms[0])
				scs, _ := dig(doc, "spec", "staticConfigs").([]any)
				for _, sc := range scs {
					if l := dig(sc, "labels", "module"); l != module {
						t.Errorf("%s: label module=%v, want %q", where, l, module)
					}
				}
			default:
				continue
			}
			check(where, module)
		}
	}

	// module="x" and module=~"a|b" selectors in the alert expressions.
	var doc any
	readYAML(t, alertsFile, &doc)
	walk(doc, "", func(path, key, s string) {
		if key != "expr" {
			return
		}
		for _, m := range moduleSelectorRE.FindAllStringSubmatch(s, -1) {
			for _, mod := range strings.Split(m[1], "|") {
				check(alertsFile+":"+path, mod)
			}
		}
	})
}

var moduleSelectorRE = regexp.MustCompile(`\bmodule=~?"([a-z0-9_|]+)"`)

var (
	metricNameRE = regexp.MustCompile(`\b(?:probe|greybox)_[a-z0-9_]*[a-z0-9]\b`)
	// String literals (label values, regexps) are not metric names: job="greybox_x".
	promQLStringRE = regexp.MustCompile("\"(?:[^\"\\\\]|\\\\.)*\"|'(?:[^'\\\\]|\\\\.)*'|`[^`]*`")
	upRE           = regexp.MustCompile(`\bup\b`)
)

// metricNamesIn returns the metric names a PromQL expression (or a piece of annotation
// text) refers to. Without the PromQL parser (not a dependency of greybox) this relies on
// every greybox metric starting with probe_ or greybox_; string literals are dropped
// first so label values such as job="greybox_terminal_ws" are not mistaken for names.
func metricNamesIn(expr string, promQL bool) []string {
	if promQL {
		expr = promQLStringRE.ReplaceAllString(expr, `""`)
	}
	names := metricNameRE.FindAllString(expr, -1)
	if promQL && upRE.MatchString(expr) {
		names = append(names, "up")
	}
	return names
}

func TestMetricNamesAreEmitted(t *testing.T) {
	known := emittedMetricNames(t)
	type use struct{ where, text string }
	var uses []use

	// Alert rules: expressions and annotations (descriptions name metrics for the reader).
	for _, file := range []string{alertsFile, promRule} {
		var doc any
		readYAML(t, file, &doc)
		walk(doc, "", func(path, key, s string) {
			if key == "expr" {
				uses = append(uses, use{file + ":" + path, s})
			} else if strings.Contains(path, "annotations") {
				for _, n := range metricNamesIn(s, false) {
					uses = append(uses, use{file + ":" + path, n})
				}
			}
		})
	}
	// Dashboard: panel queries and template variable queries.
	dashExprs := dashboardExprs(t)
	for _, e := range dashExprs {
		uses = append(uses, use{dashboardFile + ":" + e.where, e.expr})
	}

	used := map[string]bool{}
	for _, u := range uses {
		for _, n := range metricNamesIn(u.text, true) {
			used[n] = true
			if !known[n] {
				t.Errorf("%s: metric %s is not emitted by greybox (no prober, server or remediator metric has that name)\n\t%s", u.where, n, u.text)
			}
		}
	}
	for _, must := range []string{"probe_success", "probe_traefik_replica_missing_routers", "probe_k8s_log_matched_lines", "greybox_probe_requests_total"} {
		if !used[must] {
			t.Errorf("no alert or panel uses %s; is the extraction broken?", must)
		}
	}
}

func TestMetricNamesIn(t *testing.T) {
	for _, tc := range []struct {
		expr string
		want []string
	}{
		{`up{job=~"greybox|greybox_.+"} == 0 or absent(up{job="greybox_x"})`, []string{"up"}},
		{`probe_a_b + probe_c > 0 unless on (job) probe_d == 1`, []string{"probe_a_b", "probe_c", "probe_d"}},
		{`histogram_quantile(0.9, rate(greybox_x_bucket{module=~"probe_y"}[5m]))`, []string{"greybox_x_bucket"}},
		{`sum by (instance) (probe_k8s_log_matched_lines{pod='probe_z'})`, []string{"probe_k8s_log_matched_lines"}},
		{`avg_over_time(probe_success[$__range])`, []string{"probe_success"}},
	} {
		got := metricNamesIn(tc.expr, true)
		sort.Strings(got)
		sort.Strings(tc.want)
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("metricNamesIn(%q) = %v, want %v", tc.expr, got, tc.want)
		}
	}
}

type dashExpr struct{ where, expr string }

func dashboardExprs(t *testing.T) []dashExpr {
	t.Helper()
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d any
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	var out []dashExpr
	walk(d, "", func(path, key, s string) {
		switch {
		case key == "expr":
			out = append(out, dashExpr{path, s})
		case strings.HasPrefix(path, ".templating") && (key == "query" || key == "definition") && strings.Contains(s, "("):
			out = append(out, dashExpr{path, s})
		}
	})
	if len(out) == 0 {
		t.Fatalf("%s: no expressions found", dashboardFile)
	}
	return out
}

// TestDashboard checks the dashboard's structure and that every panel query is valid
// PromQL (via promtool, with Grafana's variables substituted).
func TestDashboard(t *testing.T) {
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		UID           string `json:"uid"`
		SchemaVersion int    `json:"schemaVersion"`
		Templating    struct {
			List []struct {
				Name  string `json:"name"`
				Type  string `json:"type"`
				Query any    `json:"query"`
			} `json:"list"`
		} `json:"templating"`
		Panels []struct {
			ID         int            `json:"id"`
			Type       string         `json:"type"`
			Title      string         `json:"title"`
			Datasource map[string]any `json:"datasource"`
			Targets    []struct {
				Expr       string         `json:"expr"`
				Datasource map[string]any `json:"datasource"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatal(err)
	}
	if d.UID == "" || d.SchemaVersion < 36 {
		t.Errorf("uid %q, schemaVersion %d: want a uid and schemaVersion >= 36", d.UID, d.SchemaVersion)
	}
	vars := map[string]string{}
	for _, v := range d.Templating.List {
		vars[v.Name] = v.Type
	}
	for name, typ := range map[string]string{"datasource": "datasource", "module": "query", "target": "query"} {
		if vars[name] != typ {
			t.Errorf("template variable %s: type %q, want %q", name, vars[name], typ)
		}
	}
	ids := map[int]bool{}
	for _, p := range d.Panels {
		if ids[p.ID] {
			t.Errorf("panel %q: duplicate id %d", p.Title, p.ID)
		}
		ids[p.ID] = true
		if p.Type == "row" {
			continue
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no queries", p.Title)
		}
		if p.Datasource["uid"] != "${datasource}" {
			t.Errorf("panel %q: datasource %v, want uid ${datasource}", p.Title, p.Datasource)
		}
		for _, tg := range p.Targets {
			if tg.Datasource["uid"] != "${datasource}" {
				t.Errorf("panel %q: query datasource %v, want uid ${datasource}", p.Title, tg.Datasource)
			}
		}
	}

	// Every panel query must parse. promtool checks rule files, so wrap each expression
	// in a recording rule.
	bin := promtool(t)
	grafanaVars := strings.NewReplacer("$__rate_interval", "5m", "$__interval", "1m", "$__range", "1h", "$module", ".+", "$target", ".+")
	var rules []map[string]string
	for i, e := range dashboardExprs(t) {
		if strings.HasPrefix(e.where, ".templating") {
			continue // label_values() is Grafana syntax, not PromQL
		}
		rules = append(rules, map[string]string{"record": fmt.Sprintf("dashboard:expr_%d", i), "expr": grafanaVars.Replace(e.expr)})
	}
	out, err := yaml.Marshal(map[string]any{"groups": []any{map[string]any{"name": "dashboard", "rules": rules}}})
	if err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(t.TempDir(), "dashboard_rules.yml")
	if err := os.WriteFile(f, out, 0o600); err != nil {
		t.Fatal(err)
	}
	if msg, err := exec.Command(bin, "check", "rules", f).CombinedOutput(); err != nil {
		t.Fatalf("dashboard queries are not valid PromQL: %v\n%s", err, msg)
	}
}

// TestManifests parses every YAML document of the Kubernetes and prometheus-operator
// examples and checks what `kubectl apply` would reject or what our security baseline
// requires.
func TestManifests(t *testing.T) {
	var files []string
	for _, dir := range []string{"kubernetes", "prometheus-operator"} {
		m, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, m...)
	}
	if len(files) == 0 {
		t.Fatal("no manifests found")
	}
	objects := map[string]bool{} // kind/namespace/name
	for _, file := range files {
		docs := readYAMLDocs(t, file)
		for i, doc := range docs {
			where := fmt.Sprintf("%s (document %d)", file, i+1)
			apiVersion, _ := doc["apiVersion"].(string)
			kind, _ := doc["kind"].(string)
			if apiVersion == "" || kind == "" {
				t.Errorf("%s: missing apiVersion or kind", where)
				continue
			}
			if kind == "Kustomization" {
				checkKustomization(t, file, doc)
				continue
			}
			meta, _ := doc["metadata"].(map[string]any)
			name, _ := meta["name"].(string)
			if name == "" {
				t.Errorf("%s: %s without metadata.name", where, kind)
				continue
			}
			ns, _ := meta["namespace"].(string)
			key := kind + "/" + ns + "/" + name
			if objects[key] {
				t.Errorf("%s: duplicate %s", where, key)
			}
			objects[key] = true
			// No kustomize namespace override (see kustomization.yaml), so every namespaced
			// object must say where it goes.
			if ns == "" && !clusterScoped[kind] {
				t.Errorf("%s: %s %s has no metadata.namespace", where, kind, name)
			}
			if kind == "Deployment" {
				checkPodSecurity(t, where+" "+name, doc)
			}
		}
	}
	for _, want := range []string{
		"Namespace//greybox",
		"ServiceAccount/greybox/greybox", "Service/greybox/greybox", "Deployment/greybox/greybox",
		"ServiceAccount/greybox/greybox-remediator", "Service/greybox/greybox-remediator", "Deployment/greybox/greybox-remediator",
		"Probe/greybox/greybox-terminal-ws", "ScrapeConfig/greybox/greybox-traefik-parity",
		"ServiceMonitor/greybox/greybox", "PrometheusRule/greybox/greybox",
	} {
		if !objects[want] {
			t.Errorf("missing object %s", want)
		}
	}
}

var clusterScoped = map[string]bool{
	"Namespace": true, "ClusterRole": true, "ClusterRoleBinding": true,
	"CustomResourceDefinition": true, "PriorityClass": true,
}

func checkKustomization(t *testing.T, file string, doc map[string]any) {
	t.Helper()
	dir := filepath.Dir(file)
	res, _ := doc["resources"].([]any)
	for _, r := range res {
		p := filepath.Join(dir, fmt.Sprint(r))
		if _, err := os.Stat(p); err != nil {
			t.Errorf("%s: resource %s: %v", file, r, err)
		}
	}
	if _, ok := doc["namespace"]; ok {
		t.Errorf("%s: a namespace override would move the RBAC Roles out of the namespaces they guard", file)
	}
}

// checkPodSecurity enforces the baseline every example Deployment follows (Pod Security
// "restricted" plus a read-only root filesystem and health probes).
func checkPodSecurity(t *testing.T, where string, doc map[string]any) {
	t.Helper()
	podSpec := dig(doc, "spec", "template", "spec")
	if dig(podSpec, "securityContext", "runAsNonRoot") != true {
		t.Errorf("%s: pod securityContext.runAsNonRoot must be true", where)
	}
	if dig(podSpec, "securityContext", "seccompProfile", "type") != "RuntimeDefault" {
		t.Errorf("%s: pod seccompProfile must be RuntimeDefault", where)
	}
	if sa, _ := dig(podSpec, "serviceAccountName").(string); sa == "" || sa == "default" {
		t.Errorf("%s: needs its own serviceAccountName", where)
	}
	containers, _ := dig(podSpec, "containers").([]any)
	if len(containers) == 0 {
		t.Errorf("%s: no containers", where)
	}
	for _, c := range containers {
		name := fmt.Sprint(dig(c, "name"))
		sc := dig(c, "securityContext")
		if dig(sc, "readOnlyRootFilesystem") != true {
			t.Errorf("%s/%s: readOnlyRootFilesystem must be true", where, name)
		}
		if dig(sc, "allowPrivilegeEscalation") != false {
			t.Errorf("%s/%s: allowPrivilegeEscalation must be false", where, name)
		}
		if drop, _ := dig(sc, "capabilities", "drop").([]any); len(drop) != 1 || drop[0] != "ALL" {
			t.Errorf("%s/%s: capabilities.drop must be [ALL], got %v", where, name, drop)
		}
		if dig(c, "resources", "requests") == nil || dig(c, "resources", "limits") == nil {
			t.Errorf("%s/%s: resources.requests and limits must be set", where, name)
		}
		if dig(c, "livenessProbe", "httpGet", "path") != "/-/healthy" {
			t.Errorf("%s/%s: livenessProbe must GET /-/healthy", where, name)
		}
		if dig(c, "readinessProbe", "httpGet", "path") != "/-/ready" {
			t.Errorf("%s/%s: readinessProbe must GET /-/ready", where, name)
		}
	}
}

// TestKustomizeBuild renders examples/ the way `kubectl apply -k examples/` would, when
// kubectl is available (kustomize runs locally; no cluster is contacted).
func TestKustomizeBuild(t *testing.T) {
	kubectl, err := exec.LookPath("kubectl")
	if err != nil {
		t.Skipf("kubectl not found: %v", err)
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(kubectl, "kustomize", ".")
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.Env = append(os.Environ(), "KUBECONFIG="+filepath.Join(t.TempDir(), "none"))
	if err := cmd.Run(); err != nil {
		t.Fatalf("kubectl kustomize examples/: %v\n%s", err, stderr.String())
	}
	configMaps := map[string]bool{}
	var deployments []map[string]any
	dec := yaml.NewDecoder(&stdout)
	for {
		var doc map[string]any
		if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		switch doc["kind"] {
		case "ConfigMap":
			configMaps[fmt.Sprint(dig(doc, "metadata", "name"))] = true
		case "Deployment":
			deployments = append(deployments, doc)
		}
	}
	if len(deployments) != 2 {
		t.Fatalf("got %d Deployments, want 2", len(deployments))
	}
	for _, d := range deployments {
		vols, _ := dig(d, "spec", "template", "spec", "volumes").([]any)
		for _, v := range vols {
			cm, ok := dig(v, "configMap", "name").(string)
			if ok && !configMaps[cm] {
				t.Errorf("Deployment %v mounts ConfigMap %s, which the build does not contain (have %v)", dig(d, "metadata", "name"), cm, configMaps)
			}
		}
	}
}

// --- helpers

func readYAML(t *testing.T, file string, v any) {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
}

func readYAMLDocs(t *testing.T, file string) []map[string]any {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var docs []map[string]any
	dec := yaml.NewDecoder(bytes.NewReader(b))
	for {
		var doc map[string]any
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		if doc != nil {
			docs = append(docs, doc)
		}
	}
	if len(docs) == 0 {
		t.Errorf("%s: no YAML documents", file)
	}
	return docs
}

// walk calls fn for every string in a decoded YAML/JSON tree with its path and map key.
func walk(v any, path string, fn func(path, key, s string)) {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			if s, ok := e.(string); ok {
				fn(path+"."+k, k, s)
			} else {
				walk(e, path+"."+k, fn)
			}
		}
	case []any:
		for i, e := range x {
			if s, ok := e.(string); ok {
				fn(fmt.Sprintf("%s[%d]", path, i), "", s)
			} else {
				walk(e, fmt.Sprintf("%s[%d]", path, i), fn)
			}
		}
	}
}

func dig(v any, keys ...string) any {
	for _, k := range keys {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

func indentJSON(v any) string {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", " ")
	_ = enc.Encode(v)
	return buf.String()
}

func firstDiff(a, b string) string {
	al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
	for i := 0; i < len(al) && i < len(bl); i++ {
		if al[i] != bl[i] {
			return fmt.Sprintf("line %d:\n  alerts.yml:         %s\n  prometheusrule.yaml: %s", i+1, al[i], bl[i])
		}
	}
	return fmt.Sprintf("lengths differ: %d vs %d lines", len(al), len(bl))
}
