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
	var doc stateDoc
	if err := json.Unmarshal([]byte(raw), &doc); err != nil {
		// A corrupt state must not turn into "no cooldowns": fail closed.
		return nil, fmt.Errorf("state configmap %s/%s: %s: %w", s.Namespace, s.Name, stateKey, err)
	}
	return doc.Records, nil
}

func (s *ConfigMapStore) Save(ctx context.Context, records []Record) error {
	if records == nil {
		records = []Record{}
	}
	raw, err := json.Marshal(stateDoc{Version: 1, Records: records})
	if err != nil {
		return err
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

// prune drops records older than horizon before now.
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

func (l ledger) persisted() []Record {
	out := []Record{}
	for _, r := range l {
		if !r.DryRun {
			out = append(out, r)
		}
	}
	return out
}
