package logscan

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

// The vector pair search finds what bytes.Index finds, at every length
// around its 32-byte blocks and with the pattern anywhere, including where
// only the tail loop can see it.
func TestPairIndexAgreesWithIndex(t *testing.T) {
	if !hasPair {
		t.Skip("no AVX2")
	}
	rng := rand.New(rand.NewPCG(1, 2))
	alphabet := []byte("ab\nflows")
	for range 20000 {
		pat := make([]byte, 2+rng.IntN(9))
		for i := range pat {
			pat[i] = alphabet[rng.IntN(len(alphabet))]
		}
		s := make([]byte, rng.IntN(150))
		for i := range s {
			s[i] = alphabet[rng.IntN(len(alphabet))]
		}
		if len(s) > len(pat) && rng.IntN(2) == 0 {
			copy(s[rng.IntN(len(s)-len(pat)+1):], pat)
		}
		var hist [256]int
		for _, c := range s {
			hist[c]++
		}
		f := newFinder(pat, &hist, 0)
		if got, want := f.pairIndex(s), bytes.Index(s, pat); got != want {
			t.Fatalf("pairIndex(%q, %q) = %d, want %d (o1=%d o2=%d)", s, pat, got, want, f.o1, f.o2)
		}
	}
}

// The counting pair search finds what bytes.Index finds from any start and,
// with the caller's final count of what it left, counts every newline once,
// across its 64- and 32-byte blocks, false candidates and the tail.
func TestIndexAtCountsNewlines(t *testing.T) {
	if !hasPair {
		t.Skip("no AVX2")
	}
	rng := rand.New(rand.NewPCG(3, 4))
	alphabet := []byte("ab\n\nflows")
	for range 20000 {
		pat := make([]byte, 2+rng.IntN(9))
		for i := range pat {
			pat[i] = alphabet[rng.IntN(len(alphabet))]
		}
		pat = bytes.ReplaceAll(pat, []byte{'\n'}, []byte{'x'})
		s := make([]byte, rng.IntN(400))
		for i := range s {
			s[i] = alphabet[rng.IntN(len(alphabet))]
		}
		for range rng.IntN(4) {
			if len(s) > len(pat) {
				copy(s[rng.IntN(len(s)-len(pat)+1):], pat)
			}
		}
		var hist [256]int
		for _, c := range s {
			hist[c]++
		}
		f := newFinder(pat, &hist, 0)
		var lc lineCount
		from := 0
		for {
			want := bytes.Index(s[from:], pat)
			if want >= 0 {
				want += from
			}
			got := f.indexAt(s, from, &lc)
			if got != want {
				t.Fatalf("indexAt(%q, %d, %q) = %d, want %d", s, from, pat, got, want)
			}
			if lc.done > len(s) || lc.n != int64(bytes.Count(s[:lc.done], []byte{'\n'})) {
				t.Fatalf("indexAt(%q, %d, %q): counted %d newlines in s[:%d]", s, from, pat, lc.n, lc.done)
			}
			if got < 0 {
				break
			}
			from = got + 1 + rng.IntN(len(pat))
			if from > len(s) {
				break
			}
		}
	}
}

// indexPairCount keeps its contract: the first pair, or how far it tested
// (all but a tail shorter than a block), and the newlines before the hit's
// 32-byte block or in what it tested. indexPair agrees with it.
func TestIndexPairCountContract(t *testing.T) {
	if !hasPair {
		t.Skip("no AVX2")
	}
	rng := rand.New(rand.NewPCG(5, 6))
	alphabet := []byte("ab\nc")
	for range 50000 {
		s := make([]byte, rng.IntN(600))
		for i := range s {
			s[i] = alphabet[rng.IntN(len(alphabet))]
		}
		if rng.IntN(100) == 0 {
			// Long runs of newlines: every byte lane of the vector count
			// fills up, past where it must be folded (63 steps of 128).
			s = bytes.Repeat([]byte{'\n'}, 63*128+rng.IntN(4*63*128))
			if rng.IntN(2) == 0 {
				s[rng.IntN(len(s))] = 'a'
			}
		}
		b1, b2 := alphabet[rng.IntN(len(alphabet))], alphabet[rng.IntN(len(alphabet))]
		if rng.IntN(3) == 0 {
			b1, b2 = 'z', 'y' // mostly no hit: the whole loop and its tail
			if len(s) > 20 && rng.IntN(2) == 0 {
				p := rng.IntN(len(s) - 10)
				s[p], s[p+5] = 'z', 'y'
			}
		}
		d := rng.IntN(12)
		if d > len(s) {
			continue
		}
		pos, nl := indexPairCount(s, b1, b2, d)
		if p := indexPair(s, b1, b2, d); p != pos {
			t.Fatalf("indexPair(%q, %q, %q, %d) = %d, indexPairCount %d", s, b1, b2, d, p, pos)
		}
		first := -1
		for i := 0; i+d < len(s); i++ {
			if s[i] == b1 && s[i+d] == b2 {
				first = i
				break
			}
		}
		var q int
		if pos >= 0 {
			if pos != first {
				t.Fatalf("indexPairCount(%q, %q, %q, %d) = %d, want %d", s, b1, b2, d, pos, first)
			}
			q = pos &^ 31
		} else {
			q = -pos - 1
			if q%32 != 0 || q+32+d <= len(s) || (first >= 0 && first < q) {
				t.Fatalf("indexPairCount(%q, %q, %q, %d): tested %d (first pair %d)", s, b1, b2, d, q, first)
			}
		}
		if want := bytes.Count(s[:q], []byte{'\n'}); nl != want {
			t.Fatalf("indexPairCount(%q, %q, %q, %d) = %d: %d newlines before %d, want %d", s, b1, b2, d, pos, nl, q, want)
		}
	}
}
