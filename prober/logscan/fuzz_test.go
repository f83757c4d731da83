package logscan

import (
	"bytes"
	"regexp"
	"regexp/syntax"
	"testing"
	"testing/iotest"
)

// fuzzRef is the obvious implementation of the scanner's contract: split
// into lines; a pure literal pattern matches anywhere in a line of any
// length, a regular expression sees the line's first BufferSize bytes.
type fuzzRef struct {
	lits [][]byte
	res  []*regexp.Regexp
}

func newFuzzRef(patterns []string) (*fuzzRef, bool) {
	r := &fuzzRef{}
	for _, p := range patterns {
		parsed, err := syntax.Parse(p, syntax.Perl)
		if err != nil {
			return nil, false
		}
		parsed = parsed.Simplify()
		if parsed.Op == syntax.OpLiteral && parsed.Flags&syntax.FoldCase == 0 {
			r.lits = append(r.lits, []byte(string(parsed.Rune)))
			continue
		}
		re, err := regexp.Compile(p)
		if err != nil {
			return nil, false
		}
		r.res = append(r.res, re)
	}
	return r, true
}

func (r *fuzzRef) count(log []byte) (lines, matched int64) {
	if len(log) == 0 {
		return 0, 0
	}
	for _, line := range bytes.Split(bytes.TrimSuffix(log, []byte{'\n'}), []byte{'\n'}) {
		lines++
		if r.match(line) {
			matched++
		}
	}
	return lines, matched
}

func (r *fuzzRef) match(line []byte) bool {
	for _, lit := range r.lits {
		if bytes.Contains(line, lit) {
			return true
		}
	}
	head := line[:min(len(line), BufferSize)]
	for _, re := range r.res {
		if re.Match(head) {
			return true
		}
	}
	return false
}

// FuzzScanLongLines checks the scanner against fuzzRef on arbitrary patterns and
// logs, including one line longer than the scanner's buffer with a needle
// placed anywhere in it (straddling the chunk boundaries is where a
// streaming scanner goes wrong).
func FuzzScanLongLines(f *testing.F) {
	f.Add("failed to stream flows", "", []byte("a\nfailed to stream flows\nb failed to stream flows c\n"), uint32(0), uint32(0), byte('x'), "")
	f.Add("failed to stream flows", `code = Unavailable.*goldmane`, []byte("code = Unavailable then goldmane\nx"), uint32(10), uint32(BufferSize-5), byte('y'), "failed to stream flows")
	f.Add(`(?i)error`, "x", []byte("ERROR\nerr\n\n\n"), uint32(BufferSize), uint32(BufferSize+3), byte('e'), "ERROR")
	f.Add(`^failed$`, "", []byte("failed\n failed\nfailed \n"), uint32(1), uint32(0), byte('f'), "failed")
	f.Add(`a$`, "zz", []byte("a\nba\nab\n"), uint32(0), uint32(BufferSize-1), byte('b'), "a")
	f.Add(`goldmane|timeout`, "", []byte("i/o timeout\n"), uint32(2*BufferSize), uint32(2*BufferSize-3), byte(' '), "timeout")
	f.Add("\u00e9t\u00e9", "", []byte("\xff\xfe\u00e9t\u00e9\x00\n"), uint32(7), uint32(BufferSize-2), byte(0xc3), "\u00e9t\u00e9")
	f.Add(`x*`, "", []byte(""), uint32(0), uint32(0), byte('x'), "")
	f.Add(`[^\n]+`, "", []byte("\n\n"), uint32(0), uint32(0), byte('q'), "")
	f.Add("failed to stream flows", "", []byte("a\nb"), uint32(readSize-BufferSize+64), uint32(readSize-7), byte('f'), "failed to stream flows")
	f.Add("flows", `stream.*goldmane`, []byte("x\n"), uint32(2*readSize-BufferSize+70), uint32(2*readSize-2), byte('s'), "streamflows goldmane")

	f.Fuzz(func(t *testing.T, p1, p2 string, log []byte, long, pos uint32, fill byte, needle string) {
		patterns := []string{p1}
		if p2 != "" {
			patterns = append(patterns, p2)
		}
		s, err := New(patterns)
		if err != nil {
			return
		}
		ref, ok := newFuzzRef(patterns)
		if !ok {
			t.Fatalf("New accepted %q, which does not compile", patterns)
		}
		if long > 0 {
			// A line of BufferSize-64 .. BufferSize+3*readSize bytes in
			// the middle of the log (across the regexp bound and Scan's
			// read boundaries), with the needle at pos.
			n := BufferSize - 64 + int(long%(3*readSize+64))
			if fill == '\n' {
				fill = 'x'
			}
			line := bytes.Repeat([]byte{fill}, n)
			nd := bytes.ReplaceAll([]byte(needle), []byte{'\n'}, nil)
			if len(nd) <= n {
				copy(line[int(pos)%(n-len(nd)+1):], nd)
			}
			mid := len(log) / 2
			var b bytes.Buffer
			b.Write(log[:mid])
			b.WriteByte('\n')
			b.Write(line)
			b.WriteByte('\n')
			b.Write(log[mid:])
			log = b.Bytes()
		}
		res, err := s.Scan(iotest.HalfReader(bytes.NewReader(log)), 3)
		if err != nil {
			t.Fatalf("Scan: %v", err)
		}
		lines, matched := ref.count(log)
		if res.Bytes != int64(len(log)) || res.Lines != lines || res.Matched != matched {
			t.Fatalf("patterns %q on %d bytes: scanner bytes=%d lines=%d matched=%d, reference lines=%d matched=%d",
				patterns, len(log), res.Bytes, res.Lines, res.Matched, lines, matched)
		}
		if want := min(matched, 3); int64(len(res.Samples)) != want {
			t.Fatalf("%d samples for %d matches (max 3)", len(res.Samples), matched)
		}
	})
}
