package prober

import (
	"bytes"
	"context"
	"encoding"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"unsafe"
)

// probeLog is one probe's own log, what debug=true and the history show.
// It keeps the records as they come and renders them in slog's text
// format only when someone reads them: most probes' logs are never read,
// and rendering every line cost more than the rest of a fast probe's
// bookkeeping (issue 13's profile). It also keeps the probe's first error
// line as its one-line reason. Everything it keeps is redacted first.
//
// Every string a record carries is copied when it is logged, so a record
// never holds on to the larger buffer a prober cut it from (a substring
// of a body or of a log chunk), nor shows a value changed after logging.
type probeLog struct {
	mu        sync.Mutex
	records   []capturedRecord
	size      int // rendered size, as estimated
	max       int
	truncated bool
	reason    string
	text      *string // the rendering, once done; later records are dropped
	own       ownedStrings
}

type capturedRecord struct {
	scope *logScope
	r     slog.Record
}

// logScope is what WithAttrs and WithGroup added, a chain to the root, so
// rendering can replay them on a real TextHandler.
type logScope struct {
	parent *logScope
	attrs  []slog.Attr // WithAttrs, or
	group  string      // WithGroup
	// reasonGroup and reasonAttrs are the whole chain flattened, as
	// reasonLine takes them.
	reasonGroup string
	reasonAttrs []slog.Attr
}

// newProbeLog keeps up to max bytes of log; with max 0 it keeps only the
// reason.
func newProbeLog(max int) *probeLog {
	l := &probeLog{max: max}
	if max > 0 {
		l.records = make([]capturedRecord, 0, 4)
		l.own.b.Grow(1024)
	}
	return l
}

// handler is the slog.Handler probers log to.
func (l *probeLog) handler() slog.Handler { return captureHandler{log: l} }

// Reason is the probe's first error line, "" if none.
func (l *probeLog) Reason() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.reason
}

// Size is the memory the log holds, as history weighs it: the records
// and their strings until rendered, then the text.
func (l *probeLog) Size() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.text != nil {
		return len(*l.text)
	}
	return l.size + cap(l.records)*int(unsafe.Sizeof(capturedRecord{})) + l.own.b.Cap()
}

// recordOverhead estimates what TextHandler adds to a line: time, level,
// msg= and the separators.
const recordOverhead = 56

// add records r, redacted (Redact, as redactHandler does for the process
// log) and with its strings copied.
func (l *probeLog) add(scope *logScope, r slog.Record) {
	l.mu.Lock()
	defer l.mu.Unlock()
	wantReason := r.Level >= slog.LevelError && l.reason == ""
	if !wantReason && (l.text != nil || l.truncated) {
		return
	}
	out := slog.NewRecord(r.Time, r.Level, l.own.string(Redact(r.Message)), 0)
	est := recordOverhead + len(out.Message)
	r.Attrs(func(a slog.Attr) bool {
		a = l.own.attr(redactAttr(a))
		est += attrSize(a)
		out.AddAttrs(a)
		return true
	})
	if wantReason {
		group, with := "", []slog.Attr(nil)
		if scope != nil {
			group, with = scope.reasonGroup, scope.reasonAttrs
		}
		l.reason = reasonLine(out, group, with)
	}
	if l.text != nil || l.truncated {
		return
	}
	if l.size+est > l.max {
		l.truncated = true
		return
	}
	l.size += est
	l.records = append(l.records, capturedRecord{scope, out})
}

// String renders the log, once; past max bytes it is cut and marked.
func (l *probeLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.text != nil {
		return *l.text
	}
	var b bytes.Buffer
	b.Grow(l.size)
	root := slog.NewTextHandler(&b, &slog.HandlerOptions{Level: slog.LevelDebug})
	handlers := map[*logScope]slog.Handler{}
	var handlerFor func(*logScope) slog.Handler
	handlerFor = func(s *logScope) slog.Handler {
		if s == nil {
			return root
		}
		if h, ok := handlers[s]; ok {
			return h
		}
		h := handlerFor(s.parent)
		if s.group != "" {
			h = h.WithGroup(s.group)
		} else {
			h = h.WithAttrs(s.attrs)
		}
		handlers[s] = h
		return h
	}
	for _, c := range l.records {
		_ = handlerFor(c.scope).Handle(context.Background(), c.r)
	}
	text := b.String()
	if len(text) > l.max {
		text, l.truncated = strings.ToValidUTF8(text[:l.max], ""), true
	}
	if l.truncated {
		text += "\n… log truncated\n"
	}
	l.text, l.records = &text, nil
	return text
}

// captureHandler records into a probeLog; it takes every level, as the
// debug output shows debug lines too.
type captureHandler struct {
	log   *probeLog
	scope *logScope
}

func (captureHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h captureHandler) Handle(_ context.Context, r slog.Record) error {
	h.log.add(h.scope, r)
	return nil
}

func (h captureHandler) WithAttrs(as []slog.Attr) slog.Handler {
	if len(as) == 0 {
		return h
	}
	kept := h.log.ownAttrs(as)
	s := &logScope{parent: h.scope, attrs: kept}
	if h.scope != nil {
		s.reasonGroup = h.scope.reasonGroup
		s.reasonAttrs = h.scope.reasonAttrs
	}
	s.reasonAttrs = append(s.reasonAttrs[:len(s.reasonAttrs):len(s.reasonAttrs)], kept...)
	return captureHandler{log: h.log, scope: s}
}

func (h captureHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	s := &logScope{parent: h.scope, group: name, reasonGroup: name}
	if h.scope != nil {
		s.reasonAttrs = h.scope.reasonAttrs
		if h.scope.reasonGroup != "" {
			s.reasonGroup = h.scope.reasonGroup + "." + name
		}
	}
	return captureHandler{log: h.log, scope: s}
}

func (l *probeLog) ownAttrs(as []slog.Attr) []slog.Attr {
	l.mu.Lock()
	defer l.mu.Unlock()
	kept := make([]slog.Attr, len(as))
	for i, a := range as {
		kept[i] = l.own.attr(redactAttr(a))
	}
	return kept
}

func attrSize(a slog.Attr) int {
	n := len(a.Key) + 2
	switch a.Value.Kind() {
	case slog.KindString:
		n += len(a.Value.String())
	case slog.KindGroup:
		for _, g := range a.Value.Group() {
			n += attrSize(g) + len(a.Key)
		}
	default:
		n += 16
	}
	return n
}

// ownedStrings copies the strings of a probe's records into a buffer of
// its own, grown as needed: a few allocations per probe, not one per
// string. What was written is never changed, so a string cut from it
// stays valid when the buffer grows. Values that are neither strings nor
// plain numbers are rendered now, as TextHandler would render them, so
// that what the log shows is what was true when it was logged.
type ownedStrings struct{ b strings.Builder }

// string returns a copy of s in the buffer.
func (o *ownedStrings) string(s string) string {
	if s == "" {
		return ""
	}
	start := o.b.Len()
	o.b.WriteString(s)
	return o.b.String()[start:]
}

func (o *ownedStrings) attr(a slog.Attr) slog.Attr {
	a.Key = o.string(a.Key)
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindString:
		a.Value = slog.StringValue(o.string(v.String()))
	case slog.KindGroup:
		g := v.Group()
		kept := make([]slog.Attr, len(g))
		for i, ga := range g {
			kept[i] = o.attr(ga)
		}
		a.Value = slog.GroupValue(kept...)
	case slog.KindAny:
		switch x := v.Any().(type) {
		case encoding.TextMarshaler:
			if t, err := x.MarshalText(); err == nil {
				a.Value = slog.StringValue(string(t))
			} else {
				a.Value = slog.StringValue("!ERROR:" + err.Error())
			}
		case []byte:
			a.Value = slog.AnyValue(bytes.Clone(x))
		default:
			a.Value = slog.StringValue(fmt.Sprintf("%+v", x))
		}
	default:
		a.Value = v
	}
	return a
}
