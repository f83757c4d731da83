package prober

import (
	"cmp"
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
	return &parityKeys{seed: maphash.MakeSeed()}
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
