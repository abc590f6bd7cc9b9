package cuda

import (
	"fmt"
	"math/bits"
	"sort"

	"github.com/raptor-infer/raptor/internal/status"
)

// The caching allocator. Every block's size is rounded up to a size class;
// a freed block goes onto its class's free list and the next request of that
// class reuses it, so once a workload has run once (warm) its allocations
// never reach cuMemAlloc or cuMemHostAlloc again. Blocks are never split or
// merged, which keeps every operation O(1) and the pool free of
// fragmentation bookkeeping, at the price of at most 25% rounding waste (12.5%
// for blocks of 256 MiB and more).
//
// When the raw allocator runs out of memory the pool gives every cached
// block back and tries once more; if that fails too, the request fails with
// status.OutOfMemory naming the requested size, the device's free and total
// memory and what the pool holds. Nothing is left half-done: the pool stays
// usable.
//
// A pool is owned by the device worker and is not safe for concurrent use.
// Device blocks are reused in stream order: a block freed after work was
// enqueued on the compute stream may be handed out again at once, because
// any later use of it is enqueued on the same stream. Work on the copy
// stream must be ordered with events before its blocks are freed.

// rawAllocator is what a pool takes memory from: cuMemAlloc/cuMemFree for
// device memory, cuMemHostAlloc/cuMemFreeHost for pinned host memory, a
// fake in tests.
type rawAllocator[P comparable] interface {
	alloc(size int64) (P, error) // an OutOfMemory *status.Error when exhausted
	free(p P) error
	memInfo() (free, total int64, err error)
	kind() string // "device" or "pinned host", for messages
}

// MemStats describes a pool.
type MemStats struct {
	InUse     int64 // bytes in live blocks (by size class)
	Cached    int64 // bytes in free blocks kept for reuse
	Peak      int64 // highest InUse+Cached seen
	RawAllocs int64 // calls into the raw allocator (cuMemAlloc, cuMemHostAlloc)
	RawFrees  int64
	Hits      int64 // requests served from a free list
	Misses    int64 // requests that needed a raw allocation
	OOMs      int64 // requests that failed for lack of memory
}

type pool[P comparable] struct {
	raw   rawAllocator[P]
	free  map[int64][]P // size class -> free blocks
	live  map[P]int64   // block -> size class
	stats MemStats
}

func newPool[P comparable](raw rawAllocator[P]) *pool[P] {
	return &pool[P]{raw: raw, free: map[int64][]P{}, live: map[P]int64{}}
}

// minClass is the smallest block; every block is at least this aligned by
// the raw allocators (cuMemAlloc aligns to 256 bytes or more).
const minClass = 512

// sizeClass rounds n up to its size class: 512 bytes for small requests;
// otherwise, with 2^k < n <= 2^(k+1), the next multiple of 2^(k-2) (four
// classes per power of two), or of 2^(k-3) from 256 MiB on.
func sizeClass(n int64) int64 {
	if n <= minClass {
		return minClass
	}
	k := bits.Len64(uint64(n-1)) - 1 // 2^k < n <= 2^(k+1)
	shift := k - 2
	if k >= 28 {
		shift = k - 3
	}
	step := int64(1) << shift
	return (n + step - 1) &^ (step - 1)
}

// alloc returns a block of at least n bytes (n > 0).
func (p *pool[P]) alloc(n int64) (P, error) {
	var zero P
	if n <= 0 {
		return zero, status.Errorf(status.InvalidArgument, "cuda: allocation of %d bytes", n)
	}
	c := sizeClass(n)
	if fl := p.free[c]; len(fl) > 0 {
		b := fl[len(fl)-1]
		p.free[c] = fl[:len(fl)-1]
		p.stats.Cached -= c
		p.stats.InUse += c
		p.stats.Hits++
		p.live[b] = c
		return b, nil
	}
	b, err := p.raw.alloc(c)
	if err != nil && status.CodeOf(err) == status.OutOfMemory && p.stats.Cached > 0 {
		p.trim()
		b, err = p.raw.alloc(c)
	}
	if err != nil {
		if status.CodeOf(err) != status.OutOfMemory {
			return zero, err
		}
		p.stats.OOMs++
		free, total, ierr := p.raw.memInfo()
		where := ""
		if ierr == nil {
			where = fmt.Sprintf("; %s has %s free of %s", p.raw.kind(), fmtBytes(free), fmtBytes(total))
		}
		return zero, &status.Error{
			Code: status.OutOfMemory,
			Msg: fmt.Sprintf("cuda: out of %s memory: requested %d bytes (%s, size class %s)%s; raptor holds %s in use, %s cached",
				p.raw.kind(), n, fmtBytes(n), fmtBytes(c), where, fmtBytes(p.stats.InUse), fmtBytes(p.stats.Cached)),
			Err: err,
		}
	}
	p.stats.RawAllocs++
	p.stats.Misses++
	p.stats.InUse += c
	p.live[b] = c
	if t := p.stats.InUse + p.stats.Cached; t > p.stats.Peak {
		p.stats.Peak = t
	}
	return b, nil
}

// release returns block b to its free list. Releasing a block the pool did
// not hand out (or twice) is an Internal error and changes nothing.
func (p *pool[P]) release(b P) error {
	c, ok := p.live[b]
	if !ok {
		return status.Errorf(status.Internal, "cuda: free of a %s block this pool does not hold (%v)", p.raw.kind(), b)
	}
	delete(p.live, b)
	p.free[c] = append(p.free[c], b)
	p.stats.InUse -= c
	p.stats.Cached += c
	return nil
}

// trim gives every cached block back to the raw allocator.
func (p *pool[P]) trim() error {
	var first error
	classes := make([]int64, 0, len(p.free))
	for c := range p.free {
		classes = append(classes, c)
	}
	sort.Slice(classes, func(i, j int) bool { return classes[i] > classes[j] })
	for _, c := range classes {
		for _, b := range p.free[c] {
			if err := p.raw.free(b); err != nil && first == nil {
				first = err
			}
			p.stats.RawFrees++
			p.stats.Cached -= c
		}
		delete(p.free, c)
	}
	return first
}

// freeAll gives back every block, live ones included (at device close).
func (p *pool[P]) freeAll() error {
	first := p.trim()
	for b, c := range p.live {
		if err := p.raw.free(b); err != nil && first == nil {
			first = err
		}
		p.stats.RawFrees++
		p.stats.InUse -= c
		delete(p.live, b)
	}
	return first
}

// classOf returns the size class of live block b.
func (p *pool[P]) classOf(b P) (int64, bool) {
	c, ok := p.live[b]
	return c, ok
}

func fmtBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.2f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.2f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
