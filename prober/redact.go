package prober

import (
	"context"
	"log/slog"
	"regexp"
	"strings"
)

// Targets are user input and may carry credentials: userinfo
// ("http://user:pass@host/") or a query parameter named like one
// ("?token=…"). Redact shows them as "xxxxx" wherever greybox prints a
// target or a line that may quote one: the probe log, the process log,
// history, /logs, the landing page and error answers.
var (
	redactUserinfo = regexp.MustCompile(`//[^/?#,\s"@]*@`)
	redactQuery    = regexp.MustCompile(`(?i)([?&;](?:[a-z0-9_.-]*(?:pass|secret|token|key|auth|sig|session|cred|cookie)[a-z0-9_.-]*))=[^&#,;\s"]*`)
)

// Redact hides credentials a target or a log line may carry.
func Redact(s string) string {
	if strings.Contains(s, "@") {
		s = redactUserinfo.ReplaceAllString(s, "//xxxxx@")
	}
	if strings.Contains(s, "=") {
		s = redactQuery.ReplaceAllString(s, "$1=xxxxx")
	}
	return s
}

// redactHandler runs every message and attribute through Redact before
// the next handler sees it: one place, whatever a prober or a library's
// error message quotes.
type redactHandler struct{ next slog.Handler }

func (h redactHandler) Enabled(ctx context.Context, l slog.Level) bool { return h.next.Enabled(ctx, l) }

func (h redactHandler) Handle(ctx context.Context, r slog.Record) error {
	out := slog.NewRecord(r.Time, r.Level, Redact(r.Message), r.PC)
	r.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(redactAttr(a))
		return true
	})
	return h.next.Handle(ctx, out)
}

func (h redactHandler) WithAttrs(as []slog.Attr) slog.Handler {
	red := make([]slog.Attr, len(as))
	for i, a := range as {
		red[i] = redactAttr(a)
	}
	return redactHandler{h.next.WithAttrs(red)}
}

func (h redactHandler) WithGroup(name string) slog.Handler {
	return redactHandler{h.next.WithGroup(name)}
}

func redactAttr(a slog.Attr) slog.Attr {
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindString:
		return slog.String(a.Key, Redact(v.String()))
	case slog.KindGroup:
		g := v.Group()
		red := make([]any, len(g))
		for i, ga := range g {
			red[i] = redactAttr(ga)
		}
		return slog.Group(a.Key, red...)
	case slog.KindAny:
		switch x := v.Any().(type) {
		case error:
			return slog.String(a.Key, Redact(x.Error()))
		case interface{ String() string }:
			return slog.String(a.Key, Redact(x.String()))
		}
	}
	return slog.Attr{Key: a.Key, Value: v}
}
