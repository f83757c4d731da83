package prober

import (
	"bytes"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"google.golang.org/protobuf/proto"
)

// Metrics is one probe's metrics: what its prober registers and what the
// answer carries. It stands where a prometheus.Registry per probe stood:
// a registry's descriptor checks, Describe and Collect goroutines and
// protobuf families cost more than the whole probe of a fast target
// (issue 13's profile). Gauges made with gauge and gaugeVec are kept as
// values and written straight in the exposition format; any other
// collector goes to a registry made for it, gathered the general way, so
// a prober can register whatever client_golang offers.
//
// Metrics is also a prometheus.Gatherer, so tests read it as they would a
// registry, and writeText's output is checked against expfmt's.
type Metrics struct {
	mu       sync.Mutex
	families []*gaugeFamily
	batch    []gaugeFamily // made ahead for familyFor
	other    *prometheus.Registry
}

// NewMetrics returns an empty set of probe metrics.
func NewMetrics() *Metrics { return &Metrics{families: make([]*gaugeFamily, 0, 24)} }

var _ interface {
	prometheus.Registerer
	prometheus.Gatherer
} = (*Metrics)(nil)

// Register adds c. Gauges made by gauge and gaugeVec are kept as values;
// anything else goes through a prometheus.Registry's checks.
func (m *Metrics) Register(c prometheus.Collector) error {
	f := familyOf(c)
	if f == nil {
		m.mu.Lock()
		if m.other == nil {
			m.other = prometheus.NewRegistry()
		}
		other := m.other
		m.mu.Unlock()
		return other.Register(c)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	// Kept sorted by name, the order the answer lists them in.
	i, dup := slices.BinarySearchFunc(m.families, f.name, func(have *gaugeFamily, name string) int { return strings.Compare(have.name, name) })
	if dup {
		return fmt.Errorf("metric %s registered twice in one probe", f.name)
	}
	m.families = slices.Insert(m.families, i, f)
	return nil
}

// familyOf is the gauge family c is or belongs to, nil for a collector
// that is not ours.
func familyOf(c prometheus.Collector) *gaugeFamily {
	switch c := c.(type) {
	case *gaugeFamily:
		return c
	case *probeGauge:
		return c.family
	}
	return nil
}

// MustRegister registers each collector and panics on a conflict, as a
// registry's does: two registrations of one name are a prober's bug.
func (m *Metrics) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := m.Register(c); err != nil {
			panic(err)
		}
	}
}

// Unregister removes c.
func (m *Metrics) Unregister(c prometheus.Collector) bool {
	f := familyOf(c)
	if f == nil {
		m.mu.Lock()
		other := m.other
		m.mu.Unlock()
		return other != nil && other.Unregister(c)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	i := slices.Index(m.families, f)
	if i < 0 {
		return false
	}
	m.families = slices.Delete(m.families, i, i+1)
	return true
}

// sorted returns the gauge families, by name, and the other registry.
func (m *Metrics) sorted() ([]*gaugeFamily, *prometheus.Registry) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.families, m.other
}

// Gather returns every family with at least one series, sorted by name,
// as a registry's Gather does.
func (m *Metrics) Gather() ([]*dto.MetricFamily, error) {
	fs, other := m.sorted()
	out := make([]*dto.MetricFamily, 0, len(fs))
	for _, f := range fs {
		if mf := f.family(); mf != nil {
			out = append(out, mf)
		}
	}
	if other == nil {
		return out, nil
	}
	more, err := other.Gather()
	for _, mf := range more {
		if _, dup := slices.BinarySearchFunc(out, mf.GetName(), func(a *dto.MetricFamily, name string) int {
			return strings.Compare(a.GetName(), name)
		}); dup {
			return out, fmt.Errorf("metric %s registered twice in one probe", mf.GetName())
		}
	}
	out = append(out, more...)
	slices.SortFunc(out, func(a, b *dto.MetricFamily) int { return strings.Compare(a.GetName(), b.GetName()) })
	return out, err
}

// writeText appends the metrics in the text exposition format (0.0.4),
// or OpenMetrics 1.0.0 without its # EOF line when openMetrics is set.
// Byte for byte what expfmt writes for the same families (tested).
func (m *Metrics) writeText(b []byte, openMetrics bool) ([]byte, error) {
	fs, other := m.sorted()
	if other != nil {
		return m.writeGathered(b, openMetrics)
	}
	for _, f := range fs {
		b = f.appendText(b, openMetrics)
	}
	return b, nil
}

// writeGathered is writeText for metrics with other collectors: the
// families are gathered and expfmt writes them.
func (m *Metrics) writeGathered(b []byte, openMetrics bool) ([]byte, error) {
	mfs, err := m.Gather()
	buf := bytes.NewBuffer(b)
	for _, mf := range mfs {
		var werr error
		if openMetrics {
			_, werr = expfmt.MetricFamilyToOpenMetrics(buf, mf)
		} else {
			_, werr = expfmt.MetricFamilyToText(buf, mf)
		}
		if werr != nil && err == nil {
			err = werr
		}
	}
	return buf.Bytes(), err
}

// gauge registers a plain gauge on reg.
func gauge(reg prometheus.Registerer, name, help string) prometheus.Gauge {
	f := familyFor(reg, name, help, nil)
	mustRegister(reg, f)
	return f.child(nil)
}

// gaugeVec registers a gauge with labels on reg.
func gaugeVec(reg prometheus.Registerer, name, help string, labels ...string) *gaugeFamily {
	f := familyFor(reg, name, help, labels)
	mustRegister(reg, f)
	return f
}

// mustRegister is reg.MustRegister(f) without the variadic slice that a
// call through the interface allocates.
func mustRegister(reg prometheus.Registerer, f *gaugeFamily) {
	if m, ok := reg.(*Metrics); ok {
		if err := m.Register(f); err != nil {
			panic(err)
		}
		return
	}
	reg.MustRegister(f)
}

// familyFor makes a family to register on reg: from the probe's own
// batch when reg is a Metrics, a probe's twenty-odd gauges being a few
// allocations rather than twenty.
func familyFor(reg prometheus.Registerer, name, help string, labels []string) *gaugeFamily {
	m, ok := reg.(*Metrics)
	if !ok {
		return newGaugeFamily(name, help, labels)
	}
	m.mu.Lock()
	if len(m.batch) == 0 {
		m.batch = make([]gaugeFamily, 16)
	}
	f := &m.batch[0]
	m.batch = m.batch[1:]
	m.mu.Unlock()
	f.init(name, help, labels)
	return f
}

// newGauge is a plain gauge to register later: prometheus.NewGauge for
// a probe's Metrics.
func newGauge(name, help string) *probeGauge { return newGaugeFamily(name, help, nil).child(nil) }

// newGaugeVec is a gauge with labels to register later.
func newGaugeVec(name, help string, labels ...string) *gaugeFamily {
	return newGaugeFamily(name, help, labels)
}

// gaugeFamily is a probe's gauge or gauge vector: its series in the order
// they were made. Probes make a handful, so a slice is the index.
type gaugeFamily struct {
	name, help string
	labels     []string
	// byName lists label indexes in label-name order, the order the
	// exposition writes them in; nil when there are fewer than two.
	byName []int

	mu       sync.Mutex
	children []*probeGauge
	// one is a plain gauge's series, or a vector's first: most families
	// have one series, which then costs no allocation of its own; more
	// come from spare, a few at a time (http's phases are five).
	one      probeGauge
	oneUsed  bool
	oneChild [1]*probeGauge
	spare    []probeGauge
}

func newGaugeFamily(name, help string, labels []string) *gaugeFamily {
	f := &gaugeFamily{}
	f.init(name, help, labels)
	return f
}

func (f *gaugeFamily) init(name, help string, labels []string) {
	f.name, f.help, f.labels = name, help, labels
	f.children = f.oneChild[:0]
	if len(labels) > 1 {
		f.byName = make([]int, len(labels))
		for i := range f.byName {
			f.byName[i] = i
		}
		slices.SortFunc(f.byName, func(a, b int) int { return strings.Compare(labels[a], labels[b]) })
	}
}

// child returns the series with these label values, made on first use;
// values is kept, so a caller passes a slice it will not change.
func (f *gaugeFamily) child(values []string) *probeGauge {
	f.mu.Lock()
	defer f.mu.Unlock()
	if c := f.find(values); c != nil {
		return c
	}
	return f.add(values)
}

func (f *gaugeFamily) find(values []string) *probeGauge {
	for _, c := range f.children {
		if slices.Equal(c.values, values) {
			return c
		}
	}
	return nil
}

// add appends a series; f.mu is held.
func (f *gaugeFamily) add(values []string) *probeGauge {
	c := &f.one
	if f.oneUsed {
		if len(f.spare) == 0 {
			f.spare = make([]probeGauge, 4)
		}
		c, f.spare = &f.spare[0], f.spare[1:]
		if cap(f.children) < 8 {
			f.children = append(make([]*probeGauge, 0, 8), f.children...)
		}
	}
	f.oneUsed = true
	c.family, c.values = f, values
	f.children = append(f.children, c)
	return c
}

// WithLabelValues returns the series for the values, in the order the
// labels were declared. A value that is not UTF-8 is written with
// replacement characters rather than failing the answer.
func (f *gaugeFamily) WithLabelValues(values ...string) prometheus.Gauge {
	if len(values) != len(f.labels) {
		panic(fmt.Sprintf("metric %s: %d label values for %d labels", f.name, len(values), len(f.labels)))
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if c := f.find(values); c != nil {
		return c
	}
	// values may be the caller's to reuse: the series keeps a copy.
	vs := make([]string, len(values))
	for i, v := range values {
		vs[i] = strings.ToValidUTF8(v, "\uFFFD")
	}
	if c := f.find(vs); c != nil {
		return c
	}
	return f.add(vs)
}

// With is WithLabelValues by label name.
func (f *gaugeFamily) With(labels prometheus.Labels) prometheus.Gauge {
	if len(labels) != len(f.labels) {
		panic(fmt.Sprintf("metric %s: %d labels for %d", f.name, len(labels), len(f.labels)))
	}
	vs := make([]string, len(f.labels))
	for i, l := range f.labels {
		v, ok := labels[l]
		if !ok {
			panic(fmt.Sprintf("metric %s: label %s missing", f.name, l))
		}
		vs[i] = v
	}
	return f.WithLabelValues(vs...)
}

// Reset drops every series.
func (f *gaugeFamily) Reset() {
	f.mu.Lock()
	f.children = nil
	f.mu.Unlock()
}

func (f *gaugeFamily) desc() *prometheus.Desc {
	return prometheus.NewDesc(f.name, f.help, f.labels, nil)
}

// Describe and Collect let a family be registered on a real registry too.
func (f *gaugeFamily) Describe(ch chan<- *prometheus.Desc) { ch <- f.desc() }

func (f *gaugeFamily) Collect(ch chan<- prometheus.Metric) {
	for _, c := range f.series() {
		ch <- c
	}
}

// series returns the children sorted as the exposition lists them: by
// label values, compared in label-name order. It sorts in place: the
// order series were made in means nothing.
func (f *gaugeFamily) series() []*probeGauge {
	f.mu.Lock()
	defer f.mu.Unlock()
	cs := f.children
	if len(cs) > 1 {
		slices.SortFunc(cs, func(a, b *probeGauge) int {
			for _, i := range f.order() {
				if c := strings.Compare(a.values[i], b.values[i]); c != 0 {
					return c
				}
			}
			return 0
		})
	}
	return cs
}

var oneLabel = []int{0}

func (f *gaugeFamily) order() []int {
	if f.byName != nil {
		return f.byName
	}
	if len(f.labels) == 1 {
		return oneLabel
	}
	return nil
}

// family converts to the protobuf form, nil when it has no series.
func (f *gaugeFamily) family() *dto.MetricFamily {
	cs := f.series()
	if len(cs) == 0 {
		return nil
	}
	mf := &dto.MetricFamily{Name: proto.String(f.name), Help: proto.String(f.help), Type: dto.MetricType_GAUGE.Enum()}
	for _, c := range cs {
		var m dto.Metric
		_ = c.Write(&m)
		mf.Metric = append(mf.Metric, &m)
	}
	return mf
}

func (f *gaugeFamily) appendText(b []byte, openMetrics bool) []byte {
	cs := f.series()
	if len(cs) == 0 {
		return b
	}
	b = append(b, "# HELP "...)
	b = append(b, f.name...)
	b = append(b, ' ')
	b = appendEscaped(b, f.help, openMetrics)
	b = append(b, "\n# TYPE "...)
	b = append(b, f.name...)
	b = append(b, " gauge\n"...)
	for _, c := range cs {
		b = append(b, f.name...)
		if len(f.labels) > 0 {
			b = append(b, '{')
			for n, i := range f.order() {
				if n > 0 {
					b = append(b, ',')
				}
				b = append(b, f.labels[i]...)
				b = append(b, `="`...)
				b = appendEscaped(b, c.values[i], true)
				b = append(b, '"')
			}
			b = append(b, '}')
		}
		b = append(b, ' ')
		b = appendFloat(b, c.value(), openMetrics)
		b = append(b, '\n')
	}
	return b
}

// appendEscaped escapes as the exposition formats do: backslash and
// newline always, the double quote in label values and OpenMetrics help.
func appendEscaped(b []byte, s string, quote bool) []byte {
	// Three byte searches (vectorised) beat ContainsAny's set scan on the
	// help strings every answer writes.
	if strings.IndexByte(s, '\\') < 0 && strings.IndexByte(s, '\n') < 0 && (!quote || strings.IndexByte(s, '"') < 0) {
		return append(b, s...)
	}
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\\':
			b = append(b, `\\`...)
		case c == '\n':
			b = append(b, `\n`...)
		case c == '"' && quote:
			b = append(b, `\"`...)
		default:
			b = append(b, c)
		}
	}
	return b
}

func appendFloat(b []byte, f float64, openMetrics bool) []byte {
	switch {
	case math.IsNaN(f):
		return append(b, "NaN"...)
	case math.IsInf(f, +1):
		return append(b, "+Inf"...)
	case math.IsInf(f, -1):
		return append(b, "-Inf"...)
	}
	n := len(b)
	// Whole numbers below a million, most probe values, are what 'g'
	// writes for them, without its shortest-digits search.
	if f == math.Trunc(f) && f > -1e6 && f < 1e6 { // -0 too: expfmt writes it as 0
		b = strconv.AppendInt(b, int64(f), 10)
	} else {
		b = strconv.AppendFloat(b, f, 'g', -1, 64)
	}
	if openMetrics && !bytes.ContainsAny(b[n:], "e.") {
		b = append(b, '.', '0')
	}
	return b
}

// probeGauge is one series of a gaugeFamily; it is a prometheus.Gauge.
type probeGauge struct {
	family *gaugeFamily
	values []string
	bits   atomic.Uint64
}

func (g *probeGauge) value() float64 { return math.Float64frombits(g.bits.Load()) }

func (g *probeGauge) Set(v float64) { g.bits.Store(math.Float64bits(v)) }
func (g *probeGauge) Inc()          { g.Add(1) }
func (g *probeGauge) Dec()          { g.Add(-1) }
func (g *probeGauge) Sub(v float64) { g.Add(-v) }
func (g *probeGauge) SetToCurrentTime() {
	g.Set(float64(time.Now().UnixNano()) / 1e9)
}

func (g *probeGauge) Add(v float64) {
	for {
		old := g.bits.Load()
		if g.bits.CompareAndSwap(old, math.Float64bits(math.Float64frombits(old)+v)) {
			return
		}
	}
}

func (g *probeGauge) Desc() *prometheus.Desc { return g.family.desc() }

func (g *probeGauge) Write(m *dto.Metric) error {
	for _, i := range g.family.order() {
		m.Label = append(m.Label, &dto.LabelPair{Name: proto.String(g.family.labels[i]), Value: proto.String(g.values[i])})
	}
	m.Gauge = &dto.Gauge{Value: proto.Float64(g.value())}
	return nil
}

func (g *probeGauge) Describe(ch chan<- *prometheus.Desc) { ch <- g.Desc() }
func (g *probeGauge) Collect(ch chan<- prometheus.Metric) { ch <- g }

// boolValue is the 1/0 a yes-or-no gauge reports.
func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
