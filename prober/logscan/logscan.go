// Package logscan is the line scanner of the k8s_log_errors prober: it
// counts the lines of a log stream that match any of a set of patterns, in
// constant memory and at least at grep -c -F speed for literals (on amd64
// with AVX2, near ripgrep's: pair_amd64.s). It has no dependencies beyond
// the standard library, so bench/cmd/logscan measures the scanner, not the
// start-up of a Kubernetes client.
package logscan

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"regexp/syntax"
	"strings"
	"sync"
	"unicode/utf8"
)

// BufferSize is the regexp bound: a regular expression sees at most the
// first BufferSize bytes of a line. Literal patterns are found anywhere in a
// line of any length. (Callers size their line buffers by it.)
const BufferSize = 256 << 10

// readSize is Scan's buffer and so its memory bound per stream. Reads this
// large cost the kernel less per byte than BufferSize ones: reading 1 GB
// from the page cache took 0.103 s of system CPU with 256 KiB reads and
// 0.076 s with 1 MiB ones (dd to /dev/null), more than the search itself.
const readSize = 1 << 20

// maxLiteral keeps a long line's carried tail far below the buffer size.
const maxLiteral = 4096

// sampleMax caps each matched-line sample kept for debug output.
const sampleMax = 512

// Scanner counts the lines of a log that match any of a set of patterns,
// reading through a fixed buffer whatever the log or line length. It is
// safe for concurrent use; every Scan has its own buffer.
//
// Speed: a pattern that is a pure literal (per regexp/syntax) is searched
// for directly; a regular expression that every match must contain a
// literal for (e.g. "code = Unavailable.*goldmane") is only run on the lines
// that contain that literal. Like grep, the scanner searches the buffer, not
// line by line, and jumps to the next line after a hit. Only a regexp with
// no such literal (e.g. "(?i)error", "a|b") makes it test every line.
type Scanner struct {
	matchers []logMatcher
	// everyLine: some regexp has no required literal.
	everyLine bool
	// tail is how many bytes of a long line's chunk are kept for the next
	// chunk so that a literal straddling the boundary is still found.
	tail int
}

type logMatcher struct {
	expr string
	// lit is the whole pattern (re == nil) or a substring that every match
	// of re contains (nil if there is none).
	lit []byte
	re  *regexp.Regexp
}

// Result is what one Scan saw.
type Result struct {
	Bytes   int64
	Lines   int64 // a final line without a newline counts
	Matched int64
	// Samples holds up to the requested number of matched lines, each cut to
	// 512 bytes (from the chunk that matched, for lines longer than the buffer).
	Samples []string
}

// New compiles patterns (Go regexp syntax). Patterns match within
// one line, so a pattern with a literal newline is refused.
func New(patterns []string) (*Scanner, error) {
	if len(patterns) == 0 {
		return nil, errors.New("no patterns")
	}
	s := &Scanner{}
	for _, p := range patterns {
		if p == "" {
			return nil, errors.New("empty pattern (it would match every line)")
		}
		parsed, err := syntax.Parse(p, syntax.Perl)
		if err != nil {
			return nil, fmt.Errorf("pattern %q: %v", p, err)
		}
		parsed = parsed.Simplify()
		m := logMatcher{expr: p}
		if lit, ok := pureLiteral(parsed); ok {
			m.lit = []byte(lit)
			if len(m.lit)-1 > s.tail {
				s.tail = len(m.lit) - 1
			}
		} else {
			if m.re, err = regexp.Compile(p); err != nil {
				return nil, fmt.Errorf("pattern %q: %v", p, err)
			}
			if lit := requiredLiteral(parsed); lit != "" {
				m.lit = []byte(lit)
			} else {
				s.everyLine = true
			}
		}
		if len(m.lit) > maxLiteral {
			return nil, fmt.Errorf("pattern %q: literal longer than %d bytes", p, maxLiteral)
		}
		if bytes.IndexByte(m.lit, '\n') >= 0 {
			return nil, fmt.Errorf("pattern %q contains a newline; patterns match within one line", p)
		}
		s.matchers = append(s.matchers, m)
	}
	return s, nil
}

func pureLiteral(re *syntax.Regexp) (string, bool) {
	if re.Op == syntax.OpLiteral && re.Flags&syntax.FoldCase == 0 {
		return string(re.Rune), true
	}
	return "", false
}

// requiredLiteral returns the longest literal that every match of re
// contains, or "".
func requiredLiteral(re *syntax.Regexp) string {
	switch re.Op {
	case syntax.OpLiteral:
		if s, ok := pureLiteral(re); ok {
			return s
		}
	case syntax.OpCapture, syntax.OpPlus:
		return requiredLiteral(re.Sub[0])
	case syntax.OpRepeat:
		if re.Min >= 1 {
			return requiredLiteral(re.Sub[0])
		}
	case syntax.OpConcat:
		best := ""
		for _, sub := range re.Sub {
			if s := requiredLiteral(sub); len(s) > len(best) {
				best = s
			}
		}
		return best
	}
	return ""
}

// Scan reads r to the end (or its first error) and counts matching lines.
// The result is valid even with an error: it covers what was read.
func (s *Scanner) Scan(r io.Reader, maxSamples int) (Result, error) {
	st := scanState{s: s, maxSamples: maxSamples}
	pooled := scanBuffers.Get().(*[readSize]byte)
	defer scanBuffers.Put(pooled)
	buf := pooled[:]
	n := 0
	for {
		m, err := io.ReadFull(r, buf[n:])
		st.res.Bytes += int64(m)
		n += m
		switch {
		case err == io.EOF || err == io.ErrUnexpectedEOF:
			st.final(buf[:n])
			return st.res, nil
		case err != nil:
			// Count the complete lines we have; the partial one is lost.
			if k := bytes.LastIndexByte(buf[:n], '\n'); k >= 0 {
				st.region(buf[:k+1], false)
			}
			return st.res, err
		}
		k := bytes.LastIndexByte(buf[:n], '\n')
		if k < 0 {
			// One line fills the buffer: scan this chunk of it and keep a
			// tail for literals that straddle into the next chunk.
			st.longChunk(buf[:n])
			n = copy(buf, buf[n-s.tail:n])
			continue
		}
		st.region(buf[:k+1], false)
		n = copy(buf, buf[k+1:n])
	}
}

// scanBuffers keeps Scan's buffers: a prober scanning every pod's log each
// scrape need not allocate (and collect) a MiB per stream.
var scanBuffers = sync.Pool{New: func() any { return new([readSize]byte) }}

type scanState struct {
	s          *Scanner
	maxSamples int
	res        Result
	finders    []finder
	next       []int
	// inLong: the buffer starts in the middle of a line longer than the
	// buffer; longMatched: that line was already counted.
	inLong, longMatched bool
}

func (st *scanState) init(sample []byte) {
	if st.finders != nil {
		return
	}
	st.finders = make([]finder, len(st.s.matchers))
	st.next = make([]int, len(st.s.matchers))
	var hist [256]int
	if len(sample) > 64<<10 {
		sample = sample[:64<<10]
	}
	for _, c := range sample {
		hist[c]++
	}
	for i, m := range st.s.matchers {
		st.finders[i] = newFinder(m.lit, &hist, len(sample))
	}
}

// head is what a regexp sees of a line: its first BufferSize bytes.
func head(line []byte) []byte { return line[:min(len(line), BufferSize)] }

func (st *scanState) sample(line []byte) {
	if len(st.res.Samples) >= st.maxSamples {
		return
	}
	if len(line) > sampleMax {
		line = line[:sampleMax]
	}
	st.res.Samples = append(st.res.Samples, strings.ToValidUTF8(string(line), string(utf8.RuneError)))
}

func (st *scanState) hit() { st.res.Matched++ }

// longChunk handles a buffer that holds part of one line and no newline.
func (st *scanState) longChunk(chunk []byte) {
	st.init(chunk)
	first := !st.inLong
	st.inLong = true
	if st.longMatched {
		return
	}
	for i, m := range st.s.matchers {
		var ok bool
		switch {
		case m.re == nil:
			ok = st.finders[i].index(chunk) >= 0
		case first:
			// The documented bound: a regexp sees the line's first BufferSize bytes.
			ok = m.re.Match(head(chunk))
		}
		if ok {
			st.longMatched = true
			st.hit()
			st.sample(chunk)
			return
		}
	}
}

// final handles what is left at the end of the stream: complete lines and
// maybe one without a trailing newline.
func (st *scanState) final(rest []byte) {
	if len(rest) == 0 {
		if st.inLong {
			st.res.Lines++
		}
		return
	}
	st.region(rest, true)
}

// region handles complete lines; with last, the final line may lack its newline.
func (st *scanState) region(r []byte, last bool) {
	st.init(r)
	if last && r[len(r)-1] != '\n' {
		st.res.Lines++
	}
	if st.inLong {
		end := bytes.IndexByte(r, '\n')
		if end < 0 {
			end = len(r)
		} else {
			st.res.Lines++
		}
		if !st.longMatched {
			for i, m := range st.s.matchers {
				if m.re == nil && st.finders[i].index(r[:end]) >= 0 {
					st.hit()
					st.sample(r[:end])
					break
				}
			}
		}
		st.inLong, st.longMatched = false, false
		if end+1 >= len(r) {
			return
		}
		r = r[end+1:]
	}
	if st.s.everyLine {
		st.res.Lines += int64(bytes.Count(r, []byte{'\n'}))
		st.eachLine(r)
		return
	}
	st.merge(r)
}

// eachLine tests every line against every pattern: the slow path for
// regexps without a literal to search for.
func (st *scanState) eachLine(r []byte) {
	for len(r) > 0 {
		end := bytes.IndexByte(r, '\n')
		if end < 0 {
			end = len(r)
		}
		line := r[:end]
		for i, m := range st.s.matchers {
			var ok bool
			if m.re != nil {
				ok = m.re.Match(head(line))
			} else {
				ok = st.finders[i].index(line) >= 0
			}
			if ok {
				st.hit()
				st.sample(line)
				break
			}
		}
		if end+1 > len(r) {
			return
		}
		r = r[end+1:]
	}
}

// merge searches the region for each pattern's literal and visits hits in
// order, like a k-way merge: a hit's line is counted once (a regexp is
// confirmed on the line), then every pattern resumes after that line. It
// also counts the region's lines: the first pattern's search counts the
// newlines it passes (indexAt), the rest are counted at the end.
func (st *scanState) merge(r []byte) {
	next := st.next
	var lc lineCount
	for i := range st.s.matchers {
		next[i] = st.finders[i].indexAt(r, 0, lc.forFinder(i))
	}
	for {
		at := -1
		for _, p := range next {
			if p >= 0 && (at < 0 || p < at) {
				at = p
			}
		}
		if at < 0 {
			break
		}
		start := bytes.LastIndexByte(r[:at], '\n') + 1
		end := bytes.IndexByte(r[at:], '\n')
		if end < 0 {
			end = len(r)
		} else {
			end += at
		}
		line := r[start:end]
		matched := false
		for i, m := range st.s.matchers {
			if next[i] < 0 || next[i] >= end {
				continue
			}
			if !matched && (m.re == nil || m.re.Match(head(line))) {
				matched = true
			}
			// The whole line was decided for this pattern: resume after it.
			if end+1 >= len(r) {
				next[i] = -1
			} else {
				next[i] = st.finders[i].indexAt(r, end+1, lc.forFinder(i))
			}
		}
		if matched {
			st.hit()
			st.sample(line)
		}
	}
	st.res.Lines += lc.n + int64(bytes.Count(r[lc.done:], []byte{'\n'}))
}

// lineCount is the newlines of a region counted so far: n of them, in
// r[:done].
type lineCount struct {
	done int
	n    int64
}

// forFinder gives the first pattern's search the count: its searches move
// forward through the region, which the count needs.
func (lc *lineCount) forFinder(i int) *lineCount {
	if i == 0 {
		return lc
	}
	return nil
}

// finder searches for one literal. Rather than the literal's first byte it
// skips to its rarest byte in this log (measured on the first buffer), which
// is what makes a literal search beat grep on logs where the first byte is
// common (every whisker line contains "f" and "w", few contain "F").
type finder struct {
	pat      []byte
	o1, o2   int // offsets of the rarest and second-rarest bytes
	useIndex bool
}

func newFinder(pat []byte, hist *[256]int, sampleLen int) finder {
	f := finder{pat: pat}
	if len(pat) < 2 {
		return f
	}
	f.o1, f.o2 = -1, -1
	for i, c := range pat {
		if f.o1 < 0 || hist[c] < hist[pat[f.o1]] {
			f.o1 = i
		}
	}
	for i, c := range pat {
		if c != pat[f.o1] && (f.o2 < 0 || hist[c] < hist[pat[f.o2]]) {
			f.o2 = i
		}
	}
	if f.o2 < 0 {
		f.o2 = f.o1
	}
	// When even the rarest byte is common, stopping at each one costs more
	// than the runtime's vectorised substring search.
	if sampleLen > 0 && hist[pat[f.o1]]*16 > sampleLen {
		f.useIndex = true
	}
	return f
}

func (f *finder) index(s []byte) int {
	n := len(f.pat)
	switch {
	case n == 0:
		return -1
	case n == 1:
		return bytes.IndexByte(s, f.pat[0])
	case f.useIndex:
		return bytes.Index(s, f.pat)
	case hasPair:
		return f.pairIndex(s)
	}
	last := len(s) - n // last possible start
	b1, b2, o1, o2 := f.pat[f.o1], f.pat[f.o2], f.o1, f.o2
	for i := 0; i <= last; i++ {
		j := bytes.IndexByte(s[i+o1:last+o1+1], b1)
		if j < 0 {
			return -1
		}
		i += j
		if s[i+o2] == b2 && bytes.Equal(s[i:i+n], f.pat) {
			return i
		}
	}
	return -1
}

// Lines decides lines one at a time, for a caller that needs to know which
// line matched (k8s_log_errors' incremental mode buckets each matched line
// by its timestamp). It applies the same rules as Scan: literals anywhere in
// a line of any length, regexps on the line's first BufferSize bytes. Not
// safe for concurrent use; make one per stream.
type Lines struct {
	s       *Scanner
	finders []finder
	// A line longer than the caller's buffer arrives in chunks: carry holds
	// the previous chunk's last bytes, so that a literal straddling two
	// chunks is found, and matched what the chunks so far decided.
	carry   []byte
	joined  []byte
	long    bool
	matched bool
}

// Lines returns a line-at-a-time matcher for s's patterns.
func (s *Scanner) Lines() *Lines {
	l := &Lines{s: s, finders: make([]finder, len(s.matchers))}
	for i, m := range s.matchers {
		// Lines are short and unknown in advance: the runtime's vectorised
		// search beats a rarest-byte guess made without a sample.
		l.finders[i] = finder{pat: m.lit, useIndex: len(m.lit) > 1}
	}
	return l
}

// Match reports whether a complete line (without its newline) matches.
func (l *Lines) Match(line []byte) bool {
	for i, m := range l.s.matchers {
		if m.lit != nil && l.finders[i].index(line) < 0 {
			continue
		}
		if m.re == nil || m.re.Match(line) {
			return true
		}
	}
	return false
}

// Chunk feeds one piece of a line too long for the caller's buffer; first
// marks the line's first piece. End reports the line's verdict.
func (l *Lines) Chunk(chunk []byte, first bool) {
	if first {
		l.long, l.matched, l.carry = true, false, l.carry[:0]
	}
	if l.matched {
		return
	}
	if first && l.Match(chunk) {
		l.matched = true
		return
	}
	if len(l.carry) > 0 {
		head := chunk[:min(len(chunk), l.s.tail)]
		l.joined = append(append(l.joined[:0], l.carry...), head...)
		for i, m := range l.s.matchers {
			if m.re == nil && l.finders[i].index(l.joined) >= 0 {
				l.matched = true
				return
			}
		}
	}
	if !first {
		for i, m := range l.s.matchers {
			if m.re == nil && l.finders[i].index(chunk) >= 0 {
				l.matched = true
				return
			}
		}
	}
	l.carry = append(l.carry[:0], chunk[max(0, len(chunk)-l.s.tail):]...)
}

// End closes a line fed through Chunk and reports whether it matched.
func (l *Lines) End() bool {
	m := l.long && l.matched
	l.long, l.matched, l.carry = false, false, l.carry[:0]
	return m
}

// indexAt is index(r[from:]) as a position in r (or -1). With lc, the
// vector pair search also counts the newlines it passes into lc, which
// must not run ahead of from (lc.done <= from); other searches leave it.
func (f *finder) indexAt(r []byte, from int, lc *lineCount) int {
	if lc == nil || len(f.pat) < 2 || f.useIndex || !hasPair || lc.done > from {
		if j := f.index(r[from:]); j >= 0 {
			return from + j
		}
		return -1
	}
	n := len(f.pat)
	a, b := f.o1, f.o2
	if a > b {
		a, b = b, a
	}
	ba, bb, d := f.pat[a], f.pat[b], b-a
	last := len(r) - n // last possible start
	for i := from; i <= last; {
		lo := i + a // t[p] is the pattern's byte a for a start at i+p
		t := r[lo : last+b+1]
		// lc.done <= lo: the last search stopped counting at or before
		// its hit's byte a, and i is past that hit.
		lc.n += int64(bytes.Count(r[lc.done:lo], []byte{'\n'}))
		j, nl := indexPairCount(t, ba, bb, d)
		lc.n += int64(nl)
		if j < 0 {
			k := -j - 1
			lc.done = lo + k
			for p := k; p+d < len(t); p++ {
				if t[p] == ba && t[p+d] == bb && bytes.Equal(r[i+p:i+p+n], f.pat) {
					return i + p
				}
			}
			return -1
		}
		lc.done = lo + j&^31
		if bytes.Equal(r[i+j:i+j+n], f.pat) {
			return i + j
		}
		i += j + 1
	}
	return -1
}

// pairIndex is index with the CPU testing the two rarest bytes at their
// offsets 32 positions at a time: a line then costs one vector step per 32
// bytes instead of a call per occurrence of the rarest byte, which in a
// log whose every line holds it (every whisker line says "flows") is what
// kept the scanner at half ripgrep's speed.
func (f *finder) pairIndex(s []byte) int {
	n := len(f.pat)
	a, b := f.o1, f.o2
	if a > b {
		a, b = b, a
	}
	ba, bb, d := f.pat[a], f.pat[b], b-a
	last := len(s) - n // last possible start
	for i := 0; i <= last; {
		// t[p] is the pattern's byte a for a start at i+p.
		t := s[i+a : last+b+1]
		j := indexPair(t, ba, bb, d)
		if j < 0 {
			for p := -j - 1; p+d < len(t); p++ {
				if t[p] == ba && t[p+d] == bb && bytes.Equal(s[i+p:i+p+n], f.pat) {
					return i + p
				}
			}
			return -1
		}
		if bytes.Equal(s[i+j:i+j+n], f.pat) {
			return i + j
		}
		i += j + 1
	}
	return -1
}
