package prober

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"
)

// LogNone as --log.prober: a failed probe writes nothing to the process log.
const LogNone = slog.Level(1 << 20)

// ParseProberLevel reads --log.prober: debug, info, warn, error or none.
func ParseProberLevel(s string) (slog.Level, error) {
	if strings.EqualFold(s, "none") {
		return LogNone, nil
	}
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("%q is not one of debug, info, warn, error, none", s)
	}
	return l, nil
}

// asDebug passes a probe's lines to the process log at debug level: a
// healthy probe is silent at --log.level=info, and --log.level=debug
// still shows every line of every probe. What a failure writes at
// --log.prober's level is one summary line, written by the handler.
type asDebug struct{ next slog.Handler }

func (h asDebug) Enabled(ctx context.Context, _ slog.Level) bool {
	return h.next.Enabled(ctx, slog.LevelDebug)
}

func (h asDebug) Handle(ctx context.Context, r slog.Record) error {
	r.Level = slog.LevelDebug
	return h.next.Handle(ctx, r)
}

func (h asDebug) WithAttrs(as []slog.Attr) slog.Handler { return asDebug{h.next.WithAttrs(as)} }
func (h asDebug) WithGroup(name string) slog.Handler    { return asDebug{h.next.WithGroup(name)} }

// logLine is logger.Log without the caller's program counter: a probe's
// log never shows a source, and runtime.Callers was most of what a line
// of the hot path cost. For the lines every probe writes.
func logLine(ctx context.Context, logger *slog.Logger, level slog.Level, msg string, args ...any) {
	h := logger.Handler()
	if !h.Enabled(ctx, level) {
		return
	}
	r := slog.NewRecord(time.Now(), level, msg, 0)
	r.Add(args...)
	_ = h.Handle(ctx, r)
}

// maxReason bounds the one-line failure reason kept per probe.
const maxReason = 300

// reasonLine is r as a failure reason: "message: key=value …", the
// attributes from With first, without the module and target every line
// has, each under group.
func reasonLine(r slog.Record, group string, with []slog.Attr) string {
	var b strings.Builder
	b.WriteString(r.Message)
	sep := ": "
	add := func(a slog.Attr) bool {
		if a.Key == "module" || a.Key == "target" {
			return true
		}
		b.WriteString(sep)
		sep = " "
		if group != "" {
			b.WriteString(group + ".")
		}
		fmt.Fprintf(&b, "%s=%v", a.Key, a.Value.Resolve())
		return true
	}
	for _, a := range with {
		add(a)
	}
	r.Attrs(add)
	return oneLine(truncate(b.String(), maxReason))
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "") + "…"
}
