package logscan

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"testing/iotest"
)

// referenceScan is the obvious line-by-line implementation the scanner must
// agree with on lines shorter than its buffer.
func referenceScan(t *testing.T, patterns []string, log []byte) (lines, matched int64) {
	t.Helper()
	var res []*regexp.Regexp
	for _, p := range patterns {
		res = append(res, regexp.MustCompile(p))
	}
	if len(log) == 0 {
		return 0, 0
	}
	text := strings.TrimSuffix(string(log), "\n")
	for _, line := range strings.Split(text, "\n") {
		lines++
		for _, re := range res {
			if re.MatchString(line) {
				matched++
				break
			}
		}
	}
	return lines, matched
}

var whiskerVocabulary = []string{
	`2026-11-21 23:44:41.123 [INFO][1] whisker-backend/pkg/handlers/v1/flows.go 85: Streaming flows to client`,
	`2026-11-21 23:44:41.124 [ERROR][1] whisker-backend/pkg/handlers/v1/flows.go 92: failed to stream flows error=rpc error: code = Unavailable desc = connection error: desc = "transport: Error while dialing: dial tcp: lookup goldmane.calico-system.svc on 10.96.0.10:53: read udp 10.0.0.7:41234->10.96.0.10:53: i/o timeout"`,
	`2026-11-21 23:44:41.125 [WARNING][1] whisker-backend/pkg/handlers/v1/flows.go 99: code = Unavailable desc = upstream reset`,
	`failed to stream flows`,
	`failed to stream flow`,
	`ailed to stream flows`,
	``,
	`x`,
	`ERROR failed`,
	`goldmane code = Unavailable`,
	`code = Unavailable then goldmane`,
	"\xff\xfe binary junk failed to stream flows\x00",
}

func randomLog(r *rand.Rand, lines int) []byte {
	var b bytes.Buffer
	for range lines {
		b.WriteString(whiskerVocabulary[r.IntN(len(whiskerVocabulary))])
		b.WriteByte('\n')
	}
	if r.IntN(2) == 0 { // sometimes no final newline
		b.WriteString(whiskerVocabulary[r.IntN(len(whiskerVocabulary))])
	}
	return b.Bytes()
}

func TestLogScannerAgreesWithReference(t *testing.T) {
	patternSets := map[string][]string{
		"literal":                {"failed to stream flows"},
		"one byte literal":       {"x"},
		"two literals":           {"failed to stream flows", "ERROR"},
		"regexp with literal":    {`code = Unavailable.*goldmane`},
		"anchored regexp":        {`^failed to stream flows$`},
		"regexp without literal": {`(?i)error`},
		"alternation":            {`goldmane|timeout`},
		"mixed":                  {"failed to stream flows", `code = Unavailable.*goldmane`, `\[WARNING\]`},
		"mixed slow":             {"failed to stream flows", `(?i)warning`},
		"unicode literal":        {"\u00e9t\u00e9"},
	}
	readers := map[string]func(io.Reader) io.Reader{
		"whole":    func(r io.Reader) io.Reader { return r },
		"one byte": iotest.OneByteReader,
		"half":     iotest.HalfReader,
		"data+err": iotest.DataErrReader,
	}
	rng := rand.New(rand.NewPCG(1, 2))
	// The long logs cross Scan's 1 MiB read boundaries, one with CRLF lines.
	long := randomLog(rng, 40000)
	logs := [][]byte{nil, []byte("\n"), []byte("failed to stream flows"), randomLog(rng, 50), randomLog(rng, 5000),
		long, bytes.ReplaceAll(long, []byte("\n"), []byte("\r\n"))}
	if len(long) < 2*readSize {
		t.Fatalf("the long log is %d bytes, under two reads", len(long))
	}
	for name, patterns := range patternSets {
		s, err := New(patterns)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		for rname, wrap := range readers {
			for i, log := range logs {
				if rname == "one byte" && len(log) > 10000 {
					continue
				}
				wantLines, wantMatched := referenceScan(t, patterns, log)
				got, err := s.Scan(wrap(bytes.NewReader(log)), 0)
				if err != nil {
					t.Fatalf("%s/%s/%d: %v", name, rname, i, err)
				}
				if got.Lines != wantLines || got.Matched != wantMatched || got.Bytes != int64(len(log)) {
					t.Errorf("%s/%s/log %d: got lines=%d matched=%d bytes=%d, want %d %d %d",
						name, rname, i, got.Lines, got.Matched, got.Bytes, wantLines, wantMatched, len(log))
				}
			}
		}
	}
}

func TestLogScannerPureLiteralDetection(t *testing.T) {
	for _, tc := range []struct {
		pattern   string
		literal   bool
		required  string
		everyLine bool
	}{
		{"failed to stream flows", true, "failed to stream flows", false},
		{`failed to stream flows\.`, true, "failed to stream flows.", false},
		{`code = Unavailable.*goldmane`, false, "code = Unavailable", false},
		{`(goldmane)+ x`, false, "goldmane", false},
		{`(?i)goldmane`, false, "", true},
		{`a|b`, false, "", true},
		{`x*`, false, "", true},
	} {
		s, err := New([]string{tc.pattern})
		if err != nil {
			t.Fatal(err)
		}
		m := s.matchers[0]
		if (m.re == nil) != tc.literal || string(m.lit) != tc.required || s.everyLine != tc.everyLine {
			t.Errorf("%q: literal=%v lit=%q everyLine=%v", tc.pattern, m.re == nil, m.lit, s.everyLine)
		}
	}
}

func TestLogScannerBadPatterns(t *testing.T) {
	for _, tc := range []struct{ pattern, want string }{
		{"", "empty pattern"},
		{"a\nb", "newline"},
		{"(", "missing closing )"},
		{strings.Repeat("a", maxLiteral+1), "literal longer"},
	} {
		_, err := New([]string{tc.pattern})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: got %v, want error containing %q", tc.pattern, err, tc.want)
		}
	}
	if _, err := New(nil); err == nil {
		t.Error("no patterns: want error")
	}
}

func TestLogScannerSamples(t *testing.T) {
	s, _ := New([]string{"boom"})
	long := "boom " + strings.Repeat("y", 2000)
	log := "a boom\nquiet\n" + long + "\nboom again\n"
	got, err := s.Scan(strings.NewReader(log), 2)
	if err != nil {
		t.Fatal(err)
	}
	if got.Matched != 3 || len(got.Samples) != 2 {
		t.Fatalf("matched=%d samples=%q", got.Matched, got.Samples)
	}
	if got.Samples[0] != "a boom" || len(got.Samples[1]) != sampleMax {
		t.Errorf("samples: %q", got.Samples)
	}
	none, _ := s.Scan(strings.NewReader(log), 0)
	if len(none.Samples) != 0 {
		t.Errorf("samples without opt-in: %q", none.Samples)
	}
}

func TestLogScannerReadErrorKeepsCounts(t *testing.T) {
	s, _ := New([]string{"boom"})
	boom := errors.New("stream reset")
	r := io.MultiReader(strings.NewReader("boom\nok\nboo"), iotest.ErrReader(boom))
	got, err := s.Scan(r, 0)
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v", err)
	}
	if got.Lines != 2 || got.Matched != 1 || got.Bytes != 11 {
		t.Errorf("got %+v", got)
	}
}

// genReader produces size bytes of filler with inserts at given offsets,
// without holding the content, so a memory measurement sees only the scanner.
type genReader struct {
	size, off int
	inserts   map[int]string
}

func (g *genReader) Read(p []byte) (int, error) {
	if g.off >= g.size {
		return 0, io.EOF
	}
	n := min(len(p), g.size-g.off)
	for i := range n {
		p[i] = 'x'
	}
	for at, s := range g.inserts {
		for i := range len(s) {
			if j := at + i - g.off; j >= 0 && j < n {
				p[j] = s[i]
			}
		}
	}
	g.off += n
	return n, nil
}

func TestLogScannerTenMegabyteLine(t *testing.T) {
	const size = 10 << 20
	lit := "failed to stream flows"
	for _, tc := range []struct {
		name     string
		patterns []string
		inserts  map[int]string
		want     int64
	}{
		{"no match", []string{lit}, nil, 0},
		// Straddles the first chunk boundary: kept by the carried tail.
		{"literal across chunk boundary", []string{lit}, map[int]string{BufferSize - 5: lit}, 1},
		{"literal across later boundary", []string{"zz", lit}, map[int]string{7*BufferSize - 11: lit}, 1},
		{"literal across the read boundary", []string{lit}, map[int]string{readSize - 5: lit}, 1},
		{"literal across a later read boundary", []string{"zz", lit}, map[int]string{7*readSize - 11: lit}, 1},
		{"literal near the end", []string{lit}, map[int]string{size - 2 - len(lit): lit}, 1},
		{"two hits count once", []string{lit}, map[int]string{100: lit, 5 << 20: lit}, 1},
		{"regexp in the first buffer", []string{`stream.*flows`}, map[int]string{1000: lit}, 1},
		// Documented bound: regexps see only the first BufferSize bytes.
		{"regexp beyond the bound", []string{`stream.*flows`}, map[int]string{3 << 20: lit}, 0},
		{"next line still counted", []string{lit}, map[int]string{size - 1 - len(lit) - 1: "\n" + lit}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := New(tc.patterns)
			if err != nil {
				t.Fatal(err)
			}
			inserts := map[int]string{size - 1: "\n"}
			for k, v := range tc.inserts {
				inserts[k] = v
			}
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			got, err := s.Scan(&genReader{size: size, inserts: inserts}, 1)
			runtime.ReadMemStats(&after)
			if err != nil {
				t.Fatal(err)
			}
			wantLines := int64(1)
			if strings.HasPrefix(tc.inserts[size-1-len(lit)-1], "\n") {
				wantLines = 2
			}
			if got.Matched != tc.want || got.Lines != wantLines || got.Bytes != size {
				t.Errorf("got matched=%d lines=%d bytes=%d, want %d %d %d", got.Matched, got.Lines, got.Bytes, tc.want, wantLines, size)
			}
			// The buffer is 1 MiB; a scanner that held the line would allocate ≥ 10 MiB.
			if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 2<<20 {
				t.Errorf("allocated %d bytes scanning a 10 MiB line; want < 2 MiB", alloc)
			}
		})
	}
}

func FuzzScan(f *testing.F) {
	f.Add([]byte("failed to stream flows\nok\n"), "failed to stream flows")
	f.Add([]byte("a\nb code = Unavailable goldmane\n"), "code = Unavailable.*goldmane")
	f.Add([]byte("\xff\n\n"), "(?i)x")
	f.Fuzz(func(t *testing.T, log []byte, pattern string) {
		if _, err := regexp.Compile(pattern); err != nil {
			return
		}
		s, err := New([]string{pattern})
		if err != nil {
			return // refused patterns (empty, newline) are tested elsewhere
		}
		got, err := s.Scan(bytes.NewReader(log), 1)
		if err != nil {
			t.Fatal(err)
		}
		lines, matched := referenceScan(t, []string{pattern}, log)
		if got.Lines != lines || got.Matched != matched {
			t.Errorf("pattern %q log %q: got %d/%d lines/matched, want %d/%d", pattern, log, got.Lines, got.Matched, lines, matched)
		}
	})
}

// Lines decides each line as Scan counts it, including a literal split
// across two pieces of a long line and a regexp that only sees the first.
func TestLinesAgreesWithScan(t *testing.T) {
	s, err := New([]string{"failed to stream flows", `code = Unavailable.*goldmane`})
	if err != nil {
		t.Fatal(err)
	}
	l := s.Lines()
	for _, tc := range []struct {
		line string
		want bool
	}{
		{"x failed to stream flows y", true},
		{"code = Unavailable desc = goldmane", true},
		{"code = Unavailable desc = nope", false},
		{"failed to stream", false},
	} {
		if got := l.Match([]byte(tc.line)); got != tc.want {
			t.Errorf("Match(%q) = %v", tc.line, got)
		}
		res, _ := s.Scan(strings.NewReader(tc.line+"\n"), 0)
		if (res.Matched == 1) != tc.want {
			t.Errorf("Scan(%q) matched %d", tc.line, res.Matched)
		}
	}
	long := strings.Repeat("x", 1000) + "failed to st"
	l.Chunk([]byte(long), true)
	l.Chunk([]byte("ream flows and more"), false)
	if !l.End() {
		t.Error("literal across two pieces not found")
	}
	l.Chunk([]byte(strings.Repeat("y", 1000)), true)
	l.Chunk([]byte("code = Unavailable goldmane"), false)
	if l.End() {
		t.Error("a regexp matched past the line's first piece")
	}
	l.Chunk([]byte("a"), true)
	l.Chunk([]byte("b"), false)
	if l.End() {
		t.Error("matched an unrelated line after a reset")
	}
}
