package remediate

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

// A record read back from JSON is the record written, although its time
// lost the monotonic reading and the location: merging must not double it,
// and the contradiction check must not miss it.
func TestRecordKeySurvivesJSON(t *testing.T) {
	r := Record{Rule: "r", Action: ActionDeletePod, Target: "ns/p", Object: "pod/ns/p", Time: time.Now()}
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var back Record
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if back.Time == r.Time {
		t.Fatal("expected the round trip to change the time's representation")
	}
	l := ledger{r}
	if m := l.merge([]Record{back, back}); len(m) != 1 {
		t.Errorf("merge = %d records, want 1 (deduplicated)", len(m))
	}
	if missing := l.missingFrom([]Record{back}); len(missing) != 0 {
		t.Errorf("missing %v", missing)
	}
}

func TestLedgerMergeNeverForgets(t *testing.T) {
	a := Record{Rule: "r", Target: "ns/a", Time: t0}
	b := Record{Rule: "r", Target: "ns/b", Time: t0.Add(time.Minute)}
	dry := Record{Rule: "r", Target: "ns/c", Time: t0, DryRun: true}
	l := ledger{a, dry}
	m := l.merge([]Record{b})
	if len(m) != 3 {
		t.Fatalf("merge = %v, want a, the dry record and b", m)
	}
	if missing := l.missingFrom(nil); len(missing) != 1 || missing[0].Target != "ns/a" {
		t.Errorf("missingFrom(nothing) = %v, want a (dry records are never stored)", missing)
	}
	if w := m.without(a); len(w) != 2 || len(m) != 3 {
		t.Errorf("without = %v (and m %v)", w, m)
	}
}

func TestLedgerFutureRecordsAreRecent(t *testing.T) {
	future := Record{Rule: "r", Target: "ns/a", Time: t0.Add(48 * time.Hour)}
	old := Record{Rule: "r", Target: "ns/b", Time: t0.Add(-2 * time.Hour)}
	l := ledger{future, old}.prune(t0, time.Hour)
	if len(l) != 1 || l[0].Target != "ns/a" {
		t.Fatalf("prune = %v, want only the future record", l)
	}
	if n := l.since("r", t0, time.Hour, false); n != 1 {
		t.Errorf("since = %d, want 1", n)
	}
	if last, ok := l.lastOn("ns/a", "", false); !ok || !last.Equal(future.Time) {
		t.Errorf("lastOn = %v %v", last, ok)
	}
}

func TestConfigMapStoreBounds(t *testing.T) {
	ctx := context.Background()
	cs := fake.NewClientset()
	s := &ConfigMapStore{Client: cs, Namespace: "greybox", Name: "state"}
	if recs, err := s.Load(ctx); err != nil || recs != nil {
		t.Fatalf("absent state: %v %v", recs, err)
	}
	// A document this code would not write is refused, both ways.
	many := make([]Record, 0, 20000)
	for range cap(many) {
		many = append(many, Record{Rule: "rule", Action: ActionDeletePod, Target: "namespace/pod", Object: "pod/namespace/pod", Time: t0})
	}
	if err := s.Save(ctx, many); err == nil || !strings.Contains(err.Error(), "bytes") {
		t.Errorf("saving %d records: %v", len(many), err)
	}
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "state", Namespace: "greybox"},
		Data: map[string]string{stateKey: `{"version":1,"records":[],"x":"` + strings.Repeat("x", maxStateBytes) + `"}`}}
	if _, err := cs.CoreV1().ConfigMaps("greybox").Create(ctx, cm, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Load(ctx); err == nil || !strings.Contains(err.Error(), "bytes") {
		t.Errorf("loading a huge document: %v", err)
	}
	for doc, want := range map[string]string{
		`null`:                "version 0",
		`{"records":[]}`:      "version 0",
		`{"version":2}`:       "version 2",
		`{"version":1} trail`: "invalid character",
		`{"version":1,"records":[{"time":"yesterday"}]}`: "cannot parse",
	} {
		cm.Data[stateKey] = doc
		if _, err := cs.CoreV1().ConfigMaps("greybox").Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Load(ctx); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Load(%s) = %v, want an error with %q", doc, err, want)
		}
	}
}
