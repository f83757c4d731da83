package remediate

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Record is one action taken (or reserved before taking it). Cooldowns,
// budgets and the storm guard are all counts over these.
type Record struct {
	Rule   string    `json:"rule"`
	Action string    `json:"action"`
	Target string    `json:"target"`           // candidate, "namespace/pod"
	Object string    `json:"object,omitempty"` // acted-on object, "kind/namespace/name"
	Time   time.Time `json:"time"`
	// DryRun records are kept in memory only: a dry run simulates its own
	// cooldowns but must not hold back a real run after it.
	DryRun bool `json:"-"`
}

// Store persists action records so a restarted or newly elected remediator
// honours cooldowns and budgets spent by its predecessor.
type Store interface {
	Load(ctx context.Context) ([]Record, error)
	Save(ctx context.Context, records []Record) error
}

// MemoryStore keeps records in the process; for tests and --dry-run without
// a cluster.
type MemoryStore struct {
	mu      sync.Mutex
	records []Record
}

func (m *MemoryStore) Load(context.Context) ([]Record, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]Record(nil), m.records...), nil
}

func (m *MemoryStore) Save(_ context.Context, r []Record) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.records = append([]Record(nil), r...)
	return nil
}

// stateKey is the ConfigMap data key holding the JSON records.
const stateKey = "state.json"

// stateVersion is the only state document version this code reads.
const stateVersion = 1

// maxStateBytes bounds the state document read or written: a ConfigMap
// holds at most 1 MiB, and a bigger answer is not one this code wrote.
// Actions are capped by the storm guard, so a real ledger is a few KiB.
const maxStateBytes = 1 << 20

// ConfigMapStore keeps records as JSON in one ConfigMap.
type ConfigMapStore struct {
	Client    kubernetes.Interface
	Namespace string
	Name      string
}

type stateDoc struct {
	Version int      `json:"version"`
	Records []Record `json:"records"`
}

func (s *ConfigMapStore) Load(ctx context.Context) ([]Record, error) {
	cm, err := s.Client.CoreV1().ConfigMaps(s.Namespace).Get(ctx, s.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("state configmap %s/%s: %w", s.Namespace, s.Name, err)
	}
	raw, ok := cm.Data[stateKey]
	if !ok || raw == "" {
		return nil, nil
	}
	if len(raw) > maxStateBytes {
		return nil, fmt.Errorf("state configmap %s/%s: %s is %d bytes, more than the %d this remediator writes",
			s.Namespace, s.Name, stateKey, len(raw), maxStateBytes)
	}
	var doc stateDoc
	if err := json.Unmarshal([]byte(raw), &doc); err != nil {
		// A corrupt state must not turn into "no cooldowns": fail closed.
		return nil, fmt.Errorf("state configmap %s/%s: %s: %w", s.Namespace, s.Name, stateKey, err)
	}
	if doc.Version != stateVersion {
		return nil, fmt.Errorf("state configmap %s/%s: %s has version %d, want %d", s.Namespace, s.Name, stateKey, doc.Version, stateVersion)
	}
	return doc.Records, nil
}

func (s *ConfigMapStore) Save(ctx context.Context, records []Record) error {
	if records == nil {
		records = []Record{}
	}
	raw, err := json.Marshal(stateDoc{Version: stateVersion, Records: records})
	if err != nil {
		return err
	}
	if len(raw) > maxStateBytes {
		return fmt.Errorf("state configmap %s/%s: %d records make %d bytes, more than %d", s.Namespace, s.Name, len(records), len(raw), maxStateBytes)
	}
	cms := s.Client.CoreV1().ConfigMaps(s.Namespace)
	cm, err := cms.Get(ctx, s.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		cm = &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{
				Name: s.Name, Namespace: s.Namespace,
				Labels: map[string]string{"app.kubernetes.io/name": "greybox-remediator"},
			},
			Data: map[string]string{stateKey: string(raw)},
		}
		_, err = cms.Create(ctx, cm, metav1.CreateOptions{})
		return wrapState(s, err)
	}
	if err != nil {
		return wrapState(s, err)
	}
	if cm.Data == nil {
		cm.Data = map[string]string{}
	}
	cm.Data[stateKey] = string(raw)
	// The Update carries the resourceVersion just read: a concurrent writer
	// (a second leader during a split) gets a conflict instead of a lost write.
	_, err = cms.Update(ctx, cm, metav1.UpdateOptions{})
	return wrapState(s, err)
}

func wrapState(s *ConfigMapStore, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("state configmap %s/%s: %w", s.Namespace, s.Name, err)
}

// ledger answers the cooldown/budget questions over a set of records.
type ledger []Record

// prune drops records older than horizon before now. A record from the
// future (a clock that was or is ahead) is kept: it still counts as recent.
func (l ledger) prune(now time.Time, horizon time.Duration) ledger {
	out := l[:0:0]
	for _, r := range l {
		if now.Sub(r.Time) < horizon {
			out = append(out, r)
		}
	}
	return out
}

// counts reports whether r should be considered: real records always, dry
// ones only when simulating.
func counts(r Record, dry bool) bool { return !r.DryRun || dry }

// lastOn returns the newest record on target or object (any rule).
func (l ledger) lastOn(target, object string, dry bool) (time.Time, bool) {
	var last time.Time
	found := false
	for _, r := range l {
		if !counts(r, dry) {
			continue
		}
		if r.Target == target || (object != "" && r.Object == object) {
			if !found || r.Time.After(last) {
				last, found = r.Time, true
			}
		}
	}
	return last, found
}

// since counts records newer than now-window, for one rule or all ("").
func (l ledger) since(rule string, now time.Time, window time.Duration, dry bool) int {
	n := 0
	for _, r := range l {
		if counts(r, dry) && (rule == "" || r.Rule == rule) && now.Sub(r.Time) < window {
			n++
		}
	}
	return n
}

// recordKey identifies a record across a JSON round trip, which keeps the
// instant but not the monotonic reading or the location of its time.
func recordKey(r Record) string {
	return fmt.Sprintf("%s\x00%s\x00%s\x00%s\x00%d\x00%t", r.Rule, r.Action, r.Target, r.Object, r.Time.UnixNano(), r.DryRun)
}

// merge is the union of l and other, without duplicates, l's order first.
// Records are never forgotten by a merge: what a store does not return is
// still known to the process.
func (l ledger) merge(other []Record) ledger {
	seen := make(map[string]bool, len(l)+len(other))
	out := make(ledger, 0, len(l)+len(other))
	for _, src := range [][]Record{l, other} {
		for _, r := range src {
			if k := recordKey(r); !seen[k] {
				seen[k] = true
				out = append(out, r)
			}
		}
	}
	return out
}

// missingFrom returns the persisted records of l that stored lacks.
func (l ledger) missingFrom(stored []Record) []Record {
	have := make(map[string]bool, len(stored))
	for _, r := range stored {
		have[recordKey(r)] = true
	}
	var out []Record
	for _, r := range l {
		if !r.DryRun && !have[recordKey(r)] {
			out = append(out, r)
		}
	}
	return out
}

// without returns l minus the record rec (by identity), as a new slice.
func (l ledger) without(rec Record) ledger {
	k := recordKey(rec)
	out := make(ledger, 0, len(l))
	removed := false
	for _, r := range l {
		if !removed && recordKey(r) == k {
			removed = true
			continue
		}
		out = append(out, r)
	}
	return out
}

func (l ledger) persisted() []Record {
	out := []Record{}
	for _, r := range l {
		if !r.DryRun {
			out = append(out, r)
		}
	}
	return out
}
