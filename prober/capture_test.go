package prober

import (
	"bytes"
	"errors"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// logBoth logs the same lines to a real TextHandler and to a probeLog.
func logBoth(log func(*slog.Logger)) (want, got string, l *probeLog) {
	var b bytes.Buffer
	log(slog.New(slog.NewTextHandler(&b, &slog.HandlerOptions{Level: slog.LevelDebug})))
	l = newProbeLog(1 << 20)
	log(slog.New(l.handler()))
	return b.String(), l.String(), l
}

// stripTimes removes time=… so two renderings a moment apart compare.
func stripTimes(s string) string {
	var out []string
	for _, line := range strings.Split(s, "\n") {
		if strings.HasPrefix(line, "time=") {
			if i := strings.IndexByte(line, ' '); i > 0 {
				line = line[i+1:]
			}
		}
		out = append(out, line)
	}
	return strings.Join(out, "\n")
}

type stringerVal struct{ s string }

func (s *stringerVal) String() string { return s.s }

// The rendering, done when read, is what slog's TextHandler writes for
// the same calls: With, groups, every kind of value, quoting.
func TestProbeLogRendersLikeTextHandler(t *testing.T) {
	stamp := time.Date(2026, 12, 3, 8, 0, 0, 0, time.UTC)
	want, got, _ := logBoth(func(l *slog.Logger) {
		l = l.With("module", "m", "target", "http://127.0.0.1/ x")
		l.Debug("beginning probe", "timeout_seconds", 4.5)
		l.Info("quoted", "s", `a "b" c`, "nl", "x\ny", "empty", "", "n", 3, "b", true, "d", 1500*time.Millisecond, "t", stamp)
		l.Warn("any", "slice", []string{"a", "b"}, "addr", netip.MustParseAddr("127.0.0.1"), "err", errors.New("boom"), "bytes", []byte("hi"))
		g := l.WithGroup("replica").With("pod", "p-1")
		g.Error("failed", slog.Group("tls", "version", "1.3"), "code", 503)
		l.WithGroup("").Info("no group")
	})
	if stripTimes(got) != stripTimes(want) {
		t.Errorf("rendering differs\n got:\n%s\nwant:\n%s", got, want)
	}
}

// What was logged is what shows, even if the value changes after, and a
// record does not keep the larger string it was cut from.
func TestProbeLogCopiesValues(t *testing.T) {
	l := newProbeLog(1 << 20)
	logger := slog.New(l.handler())
	v := &stringerVal{"before"}
	buf := []byte("abcdef")
	logger.Info("values", "stringer", v, "bytes", buf, "slice", buf[:2])
	v.s = "after"
	copy(buf, "XXXXXX")
	got := l.String()
	for _, want := range []string{"stringer=before", `bytes="abcdef"`, `slice="ab"`} {
		if !strings.Contains(got, want) {
			t.Errorf("missing %q in %q", want, got)
		}
	}
}

// The first error line is the reason, with the attributes from With but
// not module and target; the log is bounded and says it was cut.
func TestProbeLogReasonAndBound(t *testing.T) {
	l := newProbeLog(300)
	logger := slog.New(l.handler()).With("module", "m", "target", "t").WithGroup("g").With("pod", "p")
	logger.Info("fine")
	logger.Error("first failure", "err", errors.New("boom"))
	logger.Error("second failure")
	if got, want := l.Reason(), "first failure: g.pod=p g.err=boom"; got != want {
		t.Errorf("reason %q, want %q", got, want)
	}
	for range 50 {
		logger.Info("chatty line", "n", strings.Repeat("x", 40))
	}
	text := l.String()
	if !strings.HasSuffix(text, "\n… log truncated\n") || len(text) > 300+len("\n… log truncated\n") {
		t.Errorf("bounded log: %d bytes, ends %q", len(text), text[max(0, len(text)-40):])
	}
	if l.Size() > 300 {
		t.Errorf("estimated size %d past the bound", l.Size())
	}
	// Rendered once; a prober still logging after the answer is dropped.
	logger.Info("late line")
	if l.String() != text {
		t.Error("the rendering changed after it was read")
	}
}

func BenchmarkProbeLog(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		l := newProbeLog(maxProbeLog)
		logger := slog.New(l.handler()).With("module", "http_2xx", "target", "http://127.0.0.1:8080/")
		logger.Debug("beginning probe", "prober", "http", "timeout_seconds", 4.5)
		logger.Info("making HTTP request", "method", "GET", "url", "http://127.0.0.1:8080/")
		logger.Info("received HTTP response", "status_code", 200, "proto", "HTTP/1.1", "body_bytes", 30)
		logger.Debug("probe succeeded", "duration_seconds", 0.0012)
	}
}

func BenchmarkTextHandlerLog(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		var buf bytes.Buffer
		logger := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})).With("module", "http_2xx", "target", "http://127.0.0.1:8080/")
		logger.Debug("beginning probe", "prober", "http", "timeout_seconds", 4.5)
		logger.Info("making HTTP request", "method", "GET", "url", "http://127.0.0.1:8080/")
		logger.Info("received HTTP response", "status_code", 200, "proto", "HTTP/1.1", "body_bytes", 30)
		logger.Debug("probe succeeded", "duration_seconds", 0.0012)
	}
}

// A probe's log is redacted as it is recorded: message, attributes, With
// and the reason alike.
func TestProbeLogRedacts(t *testing.T) {
	l := newProbeLog(1 << 20)
	logger := slog.New(l.handler()).With("target", "http://user:hunter2@127.0.0.1/?token=s3cr3t")
	logger.Error("GET http://a:hunter2@127.0.0.1/ failed", "url", "http://127.0.0.1/?password=s3cr3t",
		"err", errors.New("dial http://x:hunter2@127.0.0.1/"), slog.Group("g", "u", "?session=s3cr3t"))
	for what, text := range map[string]string{"log": l.String(), "reason": l.Reason()} {
		if strings.Contains(text, "hunter2") || strings.Contains(text, "s3cr3t") {
			t.Errorf("%s not redacted: %s", what, text)
		}
		if !strings.Contains(text, "xxxxx") {
			t.Errorf("%s shows no redaction mark: %s", what, text)
		}
	}
}
