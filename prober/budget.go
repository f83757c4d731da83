package prober

import (
	"errors"
	"fmt"
	"io"

	"golang.org/x/sync/semaphore"
)

// BodyBudget bounds the response bytes all probes in flight may hold in
// memory at once (an http body checked by regexps, Traefik's API pages, a
// /token answer). body_size_limit bounds one probe; without this, a
// hundred probes of targets that answer large bodies would each hold
// theirs. A probe that would pass the budget fails with ErrBodyBudget
// rather than wait: waiting would hold its slot and what it already read.
type BodyBudget struct {
	sem  *semaphore.Weighted
	size int64
}

// DefaultBodyMemory is --probes.max-body-memory's default.
const DefaultBodyMemory = 64 << 20

// NewBodyBudget returns a budget of size bytes.
func NewBodyBudget(size int64) *BodyBudget {
	return &BodyBudget{sem: semaphore.NewWeighted(size), size: size}
}

// ErrBodyBudget: the budget is spent by the probes in flight.
var ErrBodyBudget = errors.New("response bodies held by the probes in flight have reached --probes.max-body-memory")

// Lease is what one reader holds of the budget; a nil budget leases
// without limit (probers called outside the handler, in tests).
type Lease struct {
	b    *BodyBudget
	held int64
}

// Lease starts an empty lease.
func (b *BodyBudget) Lease() *Lease { return &Lease{b: b} }

// grow takes n more bytes.
func (l *Lease) grow(n int64) error {
	if l == nil || l.b == nil {
		return nil
	}
	if !l.b.sem.TryAcquire(n) {
		return fmt.Errorf("%w (%d MiB)", ErrBodyBudget, l.b.size>>20)
	}
	l.held += n
	return nil
}

// Release gives back everything the lease holds.
func (l *Lease) Release() {
	if l == nil || l.b == nil || l.held == 0 {
		return
	}
	l.b.sem.Release(l.held)
	l.held = 0
}

// readInto is io.ReadAll appending to buf, whose growth beyond its
// current capacity is taken from lease first. Callers bound r.
func readInto(buf []byte, r io.Reader, lease *Lease) ([]byte, error) {
	for {
		if len(buf) == cap(buf) {
			grown := append(buf, 0)[:len(buf)]
			if err := lease.grow(int64(cap(grown) - cap(buf))); err != nil {
				return buf, err
			}
			buf = grown
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
}
