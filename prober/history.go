package prober

import (
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
)

// Entry is one finished probe as kept in history.
type Entry struct {
	ID       int64
	Module   string
	Target   string
	Start    time.Time
	Duration time.Duration
	Success  bool
	// The parts of the debug report, kept raw: most entries are never
	// looked at, so rendering waits until someone does.
	Logs       string
	Metrics    []*dto.MetricFamily
	ModuleYAML string
}

// Debug renders the report debug=true returns: log, metrics, module.
func (e *Entry) Debug() string {
	var b strings.Builder
	b.WriteString("Logs for the probe:\n")
	b.WriteString(e.Logs)
	b.WriteString("\n\nMetrics that would have been returned:\n")
	enc := expfmt.NewEncoder(&b, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, mf := range e.Metrics {
		if err := enc.Encode(mf); err != nil {
			fmt.Fprintf(&b, "error encoding %s: %v\n", mf.GetName(), err)
		}
	}
	b.WriteString("\n\nModule configuration:\n")
	b.WriteString(e.ModuleYAML)
	return b.String()
}

// History keeps the last probes, and the last failures for longer: a ring
// of recent probes plus a ring of recent failures of the same size, so a
// burst of successes cannot push out the failure someone is looking for.
type History struct {
	mu     sync.Mutex
	size   int
	nextID int64
	recent []*Entry
	failed []*Entry
}

// NewHistory keeps up to size recent probes and size recent failures.
func NewHistory(size int) *History {
	if size < 1 {
		size = 1
	}
	return &History{size: size}
}

// Add records e and assigns its ID.
func (h *History) Add(e *Entry) {
	h.mu.Lock()
	defer h.mu.Unlock()
	e.ID = h.nextID
	h.nextID++
	h.recent = pushBounded(h.recent, e, h.size)
	if !e.Success {
		h.failed = pushBounded(h.failed, e, h.size)
	}
}

func pushBounded(s []*Entry, e *Entry, n int) []*Entry {
	s = append(s, e)
	if len(s) > n {
		copy(s, s[len(s)-n:])
		clear(s[n:])
		s = s[:n]
	}
	return s
}

// Get returns the entry with id.
func (h *History) Get(id int64) (*Entry, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, list := range [][]*Entry{h.recent, h.failed} {
		for _, e := range list {
			if e.ID == id {
				return e, true
			}
		}
	}
	return nil, false
}

// Newest returns the newest entry for module and target.
func (h *History) Newest(module, target string) (*Entry, bool) {
	var best *Entry
	for _, e := range h.List() {
		if e.Module == module && e.Target == target {
			if best == nil || e.ID > best.ID {
				best = e
			}
		}
	}
	return best, best != nil
}

// List returns all kept entries, newest first.
func (h *History) List() []*Entry {
	h.mu.Lock()
	seen := make(map[int64]bool, len(h.recent)+len(h.failed))
	out := make([]*Entry, 0, len(h.recent)+len(h.failed))
	for _, list := range [][]*Entry{h.recent, h.failed} {
		for _, e := range list {
			if !seen[e.ID] {
				seen[e.ID] = true
				out = append(out, e)
			}
		}
	}
	h.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].ID > out[j].ID })
	return out
}
