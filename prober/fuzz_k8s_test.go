package prober

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/greybox-probe/greybox/config"
	"github.com/greybox-probe/greybox/kube"
)

const fuzzK8sConfig = `
modules:
  fuzz_logs:
    prober: k8s_log_errors
    timeout: 200ms
    k8s_log_errors:
      patterns: ["failed to stream flows"]
      namespaces: [calico-system, default]
  fuzz_logs_any:
    prober: k8s_log_errors
    timeout: 200ms
    k8s_log_errors:
      patterns: ["(?i)error"]
`

// fuzzCheckTarget calls the prober's registered CheckTarget the way the
// handler does and checks the shape of a refusal.
func fuzzCheckTarget(t *testing.T, prober, target string, m config.Module) (refused, forbidden bool) {
	t.Helper()
	spec, ok := Lookup(prober)
	if !ok || spec.CheckTarget == nil {
		t.Fatalf("prober %q has no CheckTarget", prober)
	}
	err := spec.CheckTarget(context.Background(), target, m, NewGuard(context.Background(), m.AllowedTargets))
	if err == nil {
		return false, false
	}
	var te *TargetError
	if !errors.As(err, &te) {
		t.Fatalf("CheckTarget(%q) = %T %v, want *TargetError", target, err, err)
	}
	if te.Reason == "" {
		t.Fatalf("CheckTarget(%q): empty reason", target)
	}
	return true, te.Forbidden
}

// FuzzK8sLogErrorsTarget: arbitrary <namespace>/<selector> targets. The
// check must agree with kube.ParseTarget and the module's namespaces
// (403 exactly for a well-formed target in another namespace), and /probe
// must answer without panicking; there is no cluster, so an accepted
// target is a failed probe, not a hang.
func FuzzK8sLogErrorsTarget(f *testing.F) {
	for _, s := range []string{
		"calico-system/k8s-app=whisker", "default/app in (a,b),tier!=db", "kube-system/k8s-app=kube-dns",
		"calico-system/", "/k8s-app=whisker", "calico-system", "Calico/x=y", "calico-system/x=y/z",
		"calico-system/!x", "calico-system/x", "calico-system/x==y", "calico-system/ ", "calico-system/x=y,",
		"a/" + strings.Repeat("x=y,", 100) + "z", "calico-system/x=\n", "default/x notin ()",
	} {
		f.Add("fuzz_logs", s)
	}
	dns := fuzzBlockDNS(f)
	h, cfg := fuzzHandler(f, fuzzK8sConfig)
	allowed := cfg.Modules["fuzz_logs"]

	f.Fuzz(func(t *testing.T, module, target string) {
		refused, forbidden := fuzzCheckTarget(t, "k8s_log_errors", target, *allowed)
		kt, perr := kube.ParseTarget(target)
		inAllowed := perr == nil && slices.Contains([]string{"calico-system", "default"}, kt.Namespace)
		switch {
		case perr != nil && (!refused || forbidden):
			t.Fatalf("CheckTarget(%q): refused=%v forbidden=%v, want 400 (kube.ParseTarget: %v)", target, refused, forbidden, perr)
		case perr == nil && !inAllowed && !forbidden:
			t.Fatalf("CheckTarget(%q): refused=%v forbidden=%v, want 403 for namespace %q", target, refused, forbidden, kt.Namespace)
		case inAllowed && refused:
			t.Fatalf("CheckTarget(%q) refused a target in an allowed namespace", target)
		}
		if _, anyForbidden := fuzzCheckTarget(t, "k8s_log_errors", target, *cfg.Modules["fuzz_logs_any"]); anyForbidden {
			t.Fatalf("a module without namespaces forbade %q", target)
		}
		fuzzProbe(t, h, dns, module, target, "true", "", 200*time.Millisecond)
	})
}
