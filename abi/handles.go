package main

import (
	"sync"

	"github.com/raptor-infer/raptor/internal/status"
)

// A handle is what a host holds for an engine, a model or a request: a
// number, cast to the opaque pointer type, never a Go or C pointer.
//
//	bits 63..56  tag 0xA5 (a non-canonical address: no real pointer has it)
//	bits 55..32  generation of the slot (1..2^24-1, bumped on every free)
//	bits 31..0   slot index
//
// A lookup checks the tag, the slot, the generation and the kind, so NULL,
// freed, foreign and wrong-kind handles are detected without dereferencing
// anything. A slot's generation wraps after 2^24-1 reuses of that slot.
type handle = uintptr

type kind uint8

const (
	kindEngine kind = iota + 1
	kindModel
	kindRequest
)

// article is the kind with its indefinite article, for messages.
func (k kind) article() string {
	if k == kindEngine {
		return "an engine"
	}
	return "a " + k.String()
}

func (k kind) String() string {
	switch k {
	case kindEngine:
		return "engine"
	case kindModel:
		return "model"
	case kindRequest:
		return "request"
	}
	return "unknown"
}

const (
	handleTag  = uint64(0xA5) << 56
	tagMask    = uint64(0xFF) << 56
	genBits    = 24
	genMask    = 1<<genBits - 1
	maxHandles = 1 << 24 // live handles at once; beyond, creation fails with OUT_OF_MEMORY
)

type slot struct {
	gen  uint32 // current generation; the slot is live iff obj != nil
	kind kind
	obj  any
}

type handleTable struct {
	mu    sync.RWMutex
	slots []slot
	free  []uint32
	live  int
}

var handles handleTable

// add stores obj and returns its new handle.
func (t *handleTable) add(k kind, obj any) (handle, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	var i uint32
	if n := len(t.free); n > 0 {
		i = t.free[n-1]
		t.free = t.free[:n-1]
	} else {
		if len(t.slots) >= maxHandles {
			return 0, status.Errorf(status.OutOfMemory, "too many live raptor handles (%d); free some", t.live)
		}
		i = uint32(len(t.slots))
		t.slots = append(t.slots, slot{gen: 1})
	}
	s := &t.slots[i]
	s.kind, s.obj = k, obj
	t.live++
	return handle(handleTag | uint64(s.gen)<<32 | uint64(i)), nil
}

// check returns the slot index of h if h is a live handle of kind k.
// t.mu must be held.
func (t *handleTable) check(h handle, k kind) (uint32, error) {
	v := uint64(h)
	if v == 0 {
		return 0, status.Errorf(status.InvalidHandle, "%s handle is NULL", k)
	}
	i, gen := uint32(v), uint32(v>>32)&genMask
	if v&tagMask != handleTag || int(i) >= len(t.slots) || gen == 0 {
		return 0, status.Errorf(status.InvalidHandle, "%#x is not a raptor %s handle", v, k)
	}
	s := &t.slots[i]
	if s.gen != gen || s.obj == nil {
		return 0, status.Errorf(status.InvalidHandle, "%s handle %#x was freed", k, v)
	}
	if s.kind != k {
		return 0, status.Errorf(status.InvalidHandle, "handle %#x is %s handle, not %s handle", v, s.kind.article(), k.article())
	}
	return i, nil
}

// get returns the object behind h.
func (t *handleTable) get(h handle, k kind) (any, error) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	i, err := t.check(h, k)
	if err != nil {
		return nil, err
	}
	return t.slots[i].obj, nil
}

// remove invalidates h and returns its object. Exactly one of several
// concurrent removes of the same handle succeeds.
func (t *handleTable) remove(h handle, k kind) (any, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	i, err := t.check(h, k)
	if err != nil {
		return nil, err
	}
	s := &t.slots[i]
	obj := s.obj
	s.obj = nil
	s.gen++
	if s.gen > genMask {
		s.gen = 1
	}
	t.free = append(t.free, i)
	t.live--
	return obj, nil
}

// count is the number of live handles.
func (t *handleTable) count() int {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.live
}

func lookup[T any](h handle, k kind) (T, error) {
	obj, err := handles.get(h, k)
	if err != nil {
		var zero T
		return zero, err
	}
	return obj.(T), nil
}
