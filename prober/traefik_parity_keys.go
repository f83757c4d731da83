package prober

import (
	"cmp"
	"context"
	"hash/maphash"
	"slices"
	"sync"
)

// parityKeys interns the router identities of one probe. Every replica's
// table becomes a sorted list of small ids, so 50 replicas of 20,000
// routers cost one string per distinct router rather than one per router
// per replica, and comparing two tables compares integers. Replicas are
// read concurrently, hence the shards: one lock per probe would be the
// bottleneck of a 50-replica fetch.
type parityKeys struct {
	seed   maphash.Seed
	shards [parityKeyShards]parityKeyShard
	pages  *parityPageSeen
}

const (
	parityKeyShardBits = 6
	parityKeyShards    = 1 << parityKeyShardBits
)

type parityKeyShard struct {
	mu    sync.Mutex
	ids   map[string]uint32
	names []string
	_     [64]byte // keeps neighbouring shards' locks off one cache line
}

func newParityKeys() *parityKeys {
	return &parityKeys{seed: maphash.MakeSeed(), pages: newParityPageSeen()}
}

// id returns the identity's id, allocating its string only the first time
// any replica lists it. key may be reused by the caller afterwards.
func (k *parityKeys) id(key []byte) uint32 {
	shard := uint32(maphash.Bytes(k.seed, key) & (parityKeyShards - 1))
	s := &k.shards[shard]
	s.mu.Lock()
	id, ok := s.ids[string(key)]
	if !ok {
		if s.ids == nil {
			s.ids = map[string]uint32{}
		}
		name := string(key)
		id = uint32(len(s.names))<<parityKeyShardBits | shard
		s.names = append(s.names, name)
		s.ids[name] = id
	}
	s.mu.Unlock()
	return id
}

// names returns the identities of ids, sorted: what logs and the
// by-provider summary show. Call it once the fetches are done.
func (k *parityKeys) names(ids []uint32) []string {
	if len(ids) == 0 {
		return nil
	}
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = k.shards[id&(parityKeyShards-1)].names[id>>parityKeyShardBits]
	}
	slices.Sort(out)
	return out
}

// parityUnion merges two sorted, duplicate-free lists.
func parityUnion[T cmp.Ordered](a, b []T) []T {
	out := make([]T, 0, max(len(a), len(b)))
	i, j := 0, 0
	for i < len(a) && j < len(b) {
		switch {
		case a[i] < b[j]:
			out = append(out, a[i])
			i++
		case a[i] > b[j]:
			out = append(out, b[j])
			j++
		default:
			out = append(out, a[i])
			i++
			j++
		}
	}
	out = append(out, a[i:]...)
	return append(out, b[j:]...)
}

// parityDiff returns what ref has and got lacks, and the reverse; both
// inputs are sorted and duplicate-free.
func parityDiff[T cmp.Ordered](ref, got []T) (missing, extra []T) {
	i, j := 0, 0
	for i < len(ref) && j < len(got) {
		switch {
		case ref[i] < got[j]:
			missing = append(missing, ref[i])
			i++
		case ref[i] > got[j]:
			extra = append(extra, got[j])
			j++
		default:
			i++
			j++
		}
	}
	missing = append(missing, ref[i:]...)
	extra = append(extra, got[j:]...)
	return missing, extra
}

// parityPageSeen remembers, within one probe, what each distinct page of
// a router list held. Replicas with the same table send byte-identical
// pages, so a page is parsed once and the other replicas that send it
// take the result: hashing a page is a small fraction of scanning it.
// Pages are told apart by length and a 64-bit hash under a seed chosen
// per probe, which a replica cannot aim a collision at.
type parityPageSeen struct {
	seed  maphash.Seed
	mu    sync.Mutex
	pages map[parityPageKey]*parityPageRouters
}

type parityPageKey struct {
	kind string
	n    int
	hash uint64
}

// parityPageRouters is what a page added to a replica. done is closed once the
// replica that claimed the page has parsed it; ok says whether it could.
type parityPageRouters struct {
	done      chan struct{}
	ok        bool
	ids       []uint32
	providers map[string]int
	broken    int
	dropped   int
}

func newParityPageSeen() *parityPageSeen {
	return &parityPageSeen{seed: maphash.MakeSeed(), pages: map[parityPageKey]*parityPageRouters{}}
}

// claim returns the page's entry and whether the caller is to parse it
// (then it must call publish). Otherwise it waits for the parse by the
// replica that claimed it first, and returns nil if that failed or ctx
// ended, leaving the caller to parse the page itself.
func (s *parityPageSeen) claim(ctx context.Context, kind string, body []byte) (*parityPageRouters, bool) {
	key := parityPageKey{kind, len(body), maphash.Bytes(s.seed, body)}
	s.mu.Lock()
	p, seen := s.pages[key]
	if !seen {
		p = &parityPageRouters{done: make(chan struct{}), providers: map[string]int{}}
		s.pages[key] = p
	}
	s.mu.Unlock()
	if !seen {
		return p, true
	}
	select {
	case <-p.done:
	case <-ctx.Done():
		return nil, false
	}
	if !p.ok {
		return nil, false
	}
	return p, false
}

// publish ends the claimed page's parse.
func (p *parityPageRouters) publish(ok bool) {
	p.ok = ok
	close(p.done)
}

// addTo applies the page to a replica.
func (p *parityPageRouters) addTo(r *parityReplica) {
	r.ids = append(r.ids, p.ids...)
	for k, n := range p.providers {
		r.providers[k] += n
	}
	r.broken += p.broken
	r.dropped += p.dropped
}
