package kube

import (
	"strings"
	"testing"
)

func TestParseTarget(t *testing.T) {
	for _, tc := range []struct{ in, ns, sel, err string }{
		{"calico-system/k8s-app=whisker", "calico-system", "k8s-app=whisker", ""},
		{"ns/app in (a,b),!canary", "ns", "app in (a,b),!canary", ""},
		{"ns/app=a/b", "", "", "invalid label selector"},
		{"ns", "", "", "want <namespace>/<label-selector>"},
		{"/app=a", "", "", "empty namespace"},
		{"NS/app=a", "", "", "invalid namespace"},
		{"ns/", "", "", "empty label selector"},
		{"ns/   ", "", "", "empty label selector"},
		{"ns/app==", "ns", "app==", ""},
		{"ns/app in (", "", "", "invalid label selector"},
		{"ns/=x", "", "", "invalid label selector"},
	} {
		got, err := ParseTarget(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: got %v, want error containing %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tc.in, err)
			continue
		}
		if got.Namespace != tc.ns || (tc.sel != "" && got.Selector.String() != tc.sel) {
			t.Errorf("%q: got %s", tc.in, got)
		}
	}
}

func FuzzParseTarget(f *testing.F) {
	for _, s := range []string{"calico-system/k8s-app=whisker", "ns/a in (b)", "x/", "/", "ns/a!=b,c"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tgt, err := ParseTarget(s)
		if err == nil && (tgt.Namespace == "" || tgt.Selector == nil || tgt.Selector.Empty()) {
			t.Errorf("%q parsed to %+v", s, tgt)
		}
	})
}
