package examples_test

// Checks on the documentation a new user follows: README.md and RUNBOOK.md name
// only files that are in the repository, link only to headings that exist, document
// every Event reason the remediator records, and every alert links to its runbook.

import (
	"go/ast"
	"go/parser"
	"go/token"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
)

const (
	repoRoot = ".."
	// runbookBase is where the alerts' runbook_url annotations point: RUNBOOK.md on
	// the main branch of the module's repository (github.com/greybox-probe/greybox).
	runbookBase = "https://github.com/greybox-probe/greybox/blob/main/RUNBOOK.md"
)

var docFiles = []string{"README.md", "RUNBOOK.md"}

// generatedPaths are named by the docs but made by a build step, not checked in:
// path -> the Makefile target that writes it (the Makefile must mention the path).
var generatedPaths = map[string]string{
	"bin/greybox":                    "build",
	"bin/greybox-remediator":         "build",
	"examples/secrets/ttyd-password": "run",
}

var (
	fenceRE      = regexp.MustCompile("(?ms)^[ \t]*```.*?^[ \t]*```[ \t]*$")
	codeSpanRE   = regexp.MustCompile("`([^`\n]+)`")
	mdLinkRE     = regexp.MustCompile(`\]\(([^()\s]+)\)`)
	headingRE    = regexp.MustCompile(`(?m)^#{1,6}[ \t]+(.+?)[ \t]*#*[ \t]*$`)
	pathSplitRE  = regexp.MustCompile("[\\s=,;:'\"`()\\[\\]{}|<>]+")
	pathExtRE    = regexp.MustCompile(`\.(go|ya?ml|json|md|sh|txt|mod|sum)$`)
	slugStripRE  = regexp.MustCompile(`[^\p{L}\p{N} _-]`)
	notAPathRune = "*?$~@&%…{}<>"
)

// topLevel returns the names at the repository root (files and directories).
func topLevel(t *testing.T) map[string]bool {
	t.Helper()
	entries, err := os.ReadDir(repoRoot)
	if err != nil {
		t.Fatal(err)
	}
	top := map[string]bool{}
	for _, e := range entries {
		if e.Name() != ".git" {
			top[e.Name()] = true
		}
	}
	return top
}

// repoPath reports whether a token from the docs names a file of the repository
// (relative to its root) and returns it cleaned. It must start with a top-level
// name (prober/guard.go, examples/, Dockerfile), or be a relative path with a
// directory and a file extension (so a path into a directory that does not exist
// is caught too). URL paths (/probe), flags, label selectors
// (calico-system/k8s-app=whisker), Kubernetes resources (pods/log) and Go
// identifiers (prober.Register) are not paths.
func repoPath(tok string, top map[string]bool) (string, bool) {
	tok = strings.TrimPrefix(strings.TrimRight(tok, ".,:;!"), "./")
	if tok == "" || strings.HasPrefix(tok, "/") || strings.HasPrefix(tok, "-") ||
		strings.Contains(tok, "://") || strings.ContainsAny(tok, notAPathRune) {
		return "", false
	}
	first, _, _ := strings.Cut(tok, "/")
	switch {
	case top[first]: // .ci/run, Dockerfile, prober/guard.go
	case strings.HasPrefix(tok, "."):
		return "", false
	case strings.Contains(tok, "/") && pathExtRE.MatchString(tok) && !strings.Contains(first, "."):
	default:
		return "", false
	}
	return filepath.ToSlash(filepath.Clean(tok)), true
}

// docPaths returns every repository path a markdown document names: in code spans,
// in fenced code blocks (commands such as --config.file=examples/remediator.yml)
// and as link targets (without their #fragment).
func docPaths(text string, top map[string]bool) []string {
	seen := map[string]bool{}
	add := func(tok string) {
		if p, ok := repoPath(tok, top); ok {
			seen[p] = true
		}
	}
	prose := fenceRE.ReplaceAllStringFunc(text, func(block string) string {
		for _, tok := range pathSplitRE.Split(block, -1) {
			add(tok)
		}
		return ""
	})
	for _, m := range codeSpanRE.FindAllStringSubmatch(prose, -1) {
		// A code span is one path or a command naming some.
		for _, tok := range pathSplitRE.Split(m[1], -1) {
			add(tok)
		}
	}
	for _, m := range mdLinkRE.FindAllStringSubmatch(prose, -1) {
		if target, _, _ := strings.Cut(m[1], "#"); target != "" && !strings.Contains(target, ":") {
			add(target)
		}
	}
	out := make([]string, 0, len(seen))
	for p := range seen {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}

// anchors returns the GitHub anchors of a markdown document's headings: lower
// case, punctuation dropped, spaces as hyphens, -1, -2… for repeated headings.
func anchors(text string) map[string]bool {
	text = fenceRE.ReplaceAllString(text, "")
	out, count := map[string]bool{}, map[string]int{}
	for _, m := range headingRE.FindAllStringSubmatch(text, -1) {
		h := strings.NewReplacer("`", "", "*", "").Replace(m[1])
		slug := strings.ReplaceAll(slugStripRE.ReplaceAllString(strings.ToLower(h), ""), " ", "-")
		if n := count[slug]; n > 0 {
			out[slug+"-"+strconv.Itoa(n)] = true
		} else {
			out[slug] = true
		}
		count[slug]++
	}
	return out
}

func readDoc(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestDocsNameExistingFiles(t *testing.T) {
	top := topLevel(t)
	makefile := readDoc(t, "Makefile")
	for _, doc := range docFiles {
		paths := docPaths(readDoc(t, doc), top)
		if len(paths) < 5 {
			t.Errorf("%s: only %d repository paths found (%v); is the extraction broken?", doc, len(paths), paths)
		}
		for _, p := range paths {
			if target, ok := generatedPaths[p]; ok {
				if !strings.Contains(makefile, p) {
					t.Errorf("%s names %s as written by `make %s`, but the Makefile does not mention it", doc, p, target)
				}
				continue
			}
			if _, err := os.Stat(filepath.Join(repoRoot, p)); err != nil {
				t.Errorf("%s names %s, which is not in the repository", doc, p)
			}
		}
	}
}

func TestDocsLinksResolve(t *testing.T) {
	texts := map[string]string{}
	for _, doc := range docFiles {
		texts[doc] = readDoc(t, doc)
	}
	for _, doc := range docFiles {
		prose := fenceRE.ReplaceAllString(texts[doc], "")
		for _, m := range mdLinkRE.FindAllStringSubmatch(prose, -1) {
			link := m[1]
			if strings.Contains(link, "://") || strings.HasPrefix(link, "mailto:") {
				continue
			}
			file, frag, _ := strings.Cut(link, "#")
			if file == "" {
				file = doc
			}
			if _, err := os.Stat(filepath.Join(repoRoot, file)); err != nil {
				t.Errorf("%s: link %s: %v", doc, link, err)
				continue
			}
			if frag == "" {
				continue
			}
			text, ok := texts[file]
			if !ok {
				text = readDoc(t, file)
			}
			if !anchors(text)[frag] {
				t.Errorf("%s: link %s: %s has no heading with anchor #%s", doc, link, file, frag)
			}
		}
	}
}

func TestRepoPath(t *testing.T) {
	top := map[string]bool{"examples": true, "prober": true, "Dockerfile": true, "README.md": true, "bin": true, ".ci": true}
	for tok, want := range map[string]string{
		"examples/greybox.yml":        "examples/greybox.yml",
		"./bin/greybox":               "bin/greybox",
		"examples/kubernetes/":        "examples/kubernetes",
		"prober/guard.go,":            "prober/guard.go",
		"Dockerfile":                  "Dockerfile",
		".ci/run":                     ".ci/run",
		"shared/protocols/ttyd.md":    "shared/protocols/ttyd.md",
		"/probe":                      "",
		"/etc/greybox/greybox.yml":    "",
		"--config.file":               "",
		"calico-system/k8s-app":       "",
		"pods/log":                    "",
		"prober.Register":             "",
		"http://127.0.0.1:9116/":      "",
		"examples/*.yaml":             "",
		"k8s.io/api/core/v1":          "",
		"monitoring.coreos.com/v1":    "",
		"greybox.yml":                 "",
		"$PWD/examples/greybox.yml":   "",
		"tcp/<name>":                  "",
		"app.kubernetes.io/name.yaml": "", // a dotted first segment is a domain
	} {
		got, ok := repoPath(tok, top)
		if got != want || ok != (want != "") {
			t.Errorf("repoPath(%q) = %q, %v; want %q", tok, got, ok, want)
		}
	}
	// Fenced commands and code spans are split into words.
	doc := "Run `make run` or\n```sh\n./bin/greybox --config.file=examples/greybox.yml\n```\nSee [the guard](prober/guard.go#L10) and [x](#security-model)."
	got := strings.Join(docPaths(doc, top), " ")
	if want := "bin/greybox examples/greybox.yml prober/guard.go"; got != want {
		t.Errorf("docPaths = %q, want %q", got, want)
	}
}

func TestAnchors(t *testing.T) {
	a := anchors("# greybox\n## The /probe endpoint\n```\n# not a heading\n```\n### `allowed_targets` (per module)\n## Flags\n## Flags\n## TerminalTokenDegraded\n")
	for _, want := range []string{"greybox", "the-probe-endpoint", "allowed_targets-per-module", "flags", "flags-1", "terminaltokendegraded"} {
		if !a[want] {
			t.Errorf("no anchor %q in %v", want, a)
		}
	}
	if a["not-a-heading"] {
		t.Errorf("a comment in a code block became an anchor")
	}
}

// eventReasons returns the remediator's Event reasons: the string constants named
// Reason* in package remediate.
func eventReasons(t *testing.T) map[string]string {
	t.Helper()
	fset := token.NewFileSet()
	dir := filepath.Join(repoRoot, "remediate")
	files, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	reasons := map[string]string{}
	for _, file := range files {
		if strings.HasSuffix(file, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, file, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range f.Decls {
			gd, ok := d.(*ast.GenDecl)
			if !ok || gd.Tok != token.CONST {
				continue
			}
			for _, spec := range gd.Specs {
				vs := spec.(*ast.ValueSpec)
				for i, name := range vs.Names {
					if !strings.HasPrefix(name.Name, "Reason") || i >= len(vs.Values) {
						continue
					}
					lit, ok := vs.Values[i].(*ast.BasicLit)
					if !ok || lit.Kind != token.STRING {
						continue
					}
					v, err := strconv.Unquote(lit.Value)
					if err != nil {
						t.Fatal(err)
					}
					reasons[name.Name] = v
				}
			}
		}
	}
	return reasons
}

func TestEventReasonsDocumented(t *testing.T) {
	reasons := eventReasons(t)
	if len(reasons) < 4 {
		t.Fatalf("found only %d Event reasons in remediate/ (%v); is the extraction broken?", len(reasons), reasons)
	}
	for _, doc := range docFiles {
		text := readDoc(t, doc)
		for name, reason := range reasons {
			if !strings.Contains(text, "`"+reason+"`") {
				t.Errorf("%s does not document the Event reason `%s` (remediate.%s)", doc, reason, name)
			}
		}
	}
}

type alertRule struct {
	Alert       string            `yaml:"alert"`
	Annotations map[string]string `yaml:"annotations"`
}

type ruleGroups []struct {
	Rules []alertRule `yaml:"rules"`
}

// alertRules returns the alerting rules of alerts.yml and of the PrometheusRule copy.
func alertRules(t *testing.T) map[string][]alertRule {
	t.Helper()
	var plain struct {
		Groups ruleGroups `yaml:"groups"`
	}
	readYAML(t, alertsFile, &plain)
	var crd struct {
		Spec struct {
			Groups ruleGroups `yaml:"groups"`
		} `yaml:"spec"`
	}
	readYAML(t, promRule, &crd)
	out := map[string][]alertRule{}
	for file, groups := range map[string]ruleGroups{alertsFile: plain.Groups, promRule: crd.Spec.Groups} {
		for _, g := range groups {
			for _, r := range g.Rules {
				if r.Alert != "" {
					out[file] = append(out[file], r)
				}
			}
		}
		if len(out[file]) == 0 {
			t.Errorf("%s: no alerts found", file)
		}
	}
	return out
}

// TestAlertsLinkRunbook checks that every alert's runbook_url points at the heading of
// RUNBOOK.md named after the alert, that its greybox_url is a full URL, and that the
// runbook has no section for an alert that does not exist.
func TestAlertsLinkRunbook(t *testing.T) {
	text := readDoc(t, "RUNBOOK.md")
	runbook := anchors(text)
	alerts := map[string]bool{}
	for file, rules := range alertRules(t) {
		for _, r := range rules {
			want := strings.ToLower(r.Alert)
			alerts[want] = true
			rb := r.Annotations["runbook_url"]
			if base, frag, _ := strings.Cut(rb, "#"); base != runbookBase || frag != want {
				t.Errorf("%s: alert %s: runbook_url %q, want %s#%s (the heading named after the alert)", file, r.Alert, rb, runbookBase, want)
			}
			if !runbook[want] {
				t.Errorf("%s: alert %s: RUNBOOK.md has no heading \"## %s\"", file, r.Alert, r.Alert)
			}
			// Template actions ({{ $labels.instance }}) stand for text; the rest must be a URL.
			gu := r.Annotations["greybox_url"]
			u, err := url.Parse(templateActionRE.ReplaceAllString(gu, "x"))
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				t.Errorf("%s: alert %s: greybox_url %q is not a full http(s) URL", file, r.Alert, gu)
			}
		}
	}
	for _, m := range regexp.MustCompile(`(?m)^## ([A-Z][a-z0-9]+(?:[A-Z][A-Za-z0-9]*)+)[ \t]*$`).FindAllStringSubmatch(text, -1) {
		if !alerts[strings.ToLower(m[1])] {
			t.Errorf("RUNBOOK.md: section %q names no alert in %s", m[1], alertsFile)
		}
	}
}

var templateActionRE = regexp.MustCompile(`\{\{[^}]*\}\}`)
