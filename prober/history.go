package prober

import (
	"sort"
	"strings"
	"sync"
	"time"
)

// Entry is one finished probe as kept in history.
type Entry struct {
	ID     int64
	Module string
	Target string
	// Hostname is the probe's hostname parameter, if it had one: the same
	// target under another Host is another thing probed.
	Hostname string
	Start    time.Time
	Duration time.Duration
	Success  bool
	// Status is the HTTP status of a refused request (400, 403, 503), which
	// never ran; 0 for a probe that ran.
	Status int
	// Reason is why a probe failed or was refused, in one line: the
	// probe's first error, not its whole log.
	Reason string
	// The parts of the debug report, kept raw: most entries are never
	// looked at, so rendering waits until someone does. Logs is the
	// probe's log when it is known as the entry is made (a refusal); a
	// probe's own log is rendered from log when read.
	Logs string
	log  *probeLog
	// Metrics is the answer in the text exposition format; never
	// modified once the entry is made.
	Metrics    []byte
	ModuleYAML string

	weight int64 // what weigh estimated, counted once
	refs   int   // rings holding the entry, under History.mu
}

// LogText is the probe's log in slog's text format.
func (e *Entry) LogText() string {
	if e.log != nil {
		return e.log.String()
	}
	return e.Logs
}

// Debug renders the report debug=true returns: log, metrics, module.
func (e *Entry) Debug() string {
	var b strings.Builder
	b.WriteString("Logs for the probe:\n")
	b.WriteString(e.LogText())
	b.WriteString("\n\nMetrics that would have been returned:\n")
	b.Write(e.Metrics)
	b.WriteString("\n\nModule configuration:\n")
	b.WriteString(e.ModuleYAML)
	return b.String()
}

// History keeps the last probes, and the last failures for longer: a ring
// of recent probes plus a ring of recent failures of the same size, so a
// burst of successes cannot push out the failure someone is looking for.
// Its memory is bounded by bytes as well as by count: past maxBytes the
// oldest entries go, successes first.
type History struct {
	mu       sync.Mutex
	size     int
	maxBytes int64
	bytes    int64
	nextID   int64
	recent   []*Entry
	failed   []*Entry
}

// DefaultHistoryBytes is --history.max-bytes' default.
const DefaultHistoryBytes = 16 << 20

// NewHistory keeps up to size recent probes and size recent failures,
// within maxBytes in all (0 means DefaultHistoryBytes).
func NewHistory(size int, maxBytes int64) *History {
	if size < 1 {
		size = 1
	}
	if maxBytes <= 0 {
		maxBytes = DefaultHistoryBytes
	}
	return &History{size: size, maxBytes: maxBytes}
}

// entryOverhead approximates an entry's fixed cost: the struct, its
// timestamps and slice headers.
const entryOverhead = 256

// weigh estimates what e holds in memory: its strings, its log and its
// rendered metrics (the module's YAML is the module's, shared).
func (e *Entry) weigh() int64 {
	n := int64(entryOverhead + len(e.Module) + len(e.Target) + len(e.Logs) + e.logSize() + len(e.Reason) + len(e.Metrics))
	return n
}

// Add records e and assigns its ID.
func (h *History) Add(e *Entry) {
	e.weight = e.weigh()
	h.mu.Lock()
	defer h.mu.Unlock()
	e.ID = h.nextID
	h.nextID++
	h.bytes += e.weight
	e.refs = 1
	h.recent = h.push(h.recent, e, h.size)
	if !e.Success {
		e.refs++
		h.failed = h.push(h.failed, e, h.size)
	}
	// Over budget: drop the oldest success, then the oldest failure, but
	// keep the entry just added.
	for h.bytes > h.maxBytes {
		switch {
		case len(h.recent) > 1:
			h.recent = h.drop(h.recent)
		case len(h.failed) > 1 || len(h.failed) == 1 && h.failed[0] != e:
			h.failed = h.drop(h.failed)
		default:
			return
		}
	}
}

// Bytes is the estimated memory the kept entries hold.
func (h *History) Bytes() int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.bytes
}

func (h *History) release(e *Entry) {
	e.refs--
	if e.refs == 0 {
		h.bytes -= e.weight
	}
}

func (h *History) push(s []*Entry, e *Entry, n int) []*Entry {
	s = append(s, e)
	for len(s) > n {
		s = h.drop(s)
	}
	return s
}

// drop removes the oldest entry of s.
func (h *History) drop(s []*Entry) []*Entry {
	h.release(s[0])
	copy(s, s[1:])
	s[len(s)-1] = nil
	return s[:len(s)-1]
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

// Newest returns the newest entry for module and target, whatever its
// hostname parameter.
func (h *History) Newest(module, target string) (*Entry, bool) {
	return h.NewestFor(module, target, "")
}

// NewestFor is Newest narrowed to one hostname parameter when hostname is
// not empty: the same target under two Hosts is two things probed.
func (h *History) NewestFor(module, target, hostname string) (*Entry, bool) {
	var best *Entry
	for _, e := range h.List() {
		if e.Module == module && e.Target == target && (hostname == "" || e.Hostname == hostname) {
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

func (e *Entry) logSize() int {
	if e.log == nil {
		return 0
	}
	return e.log.Size()
}
