package main

import (
	"sync"
	"testing"

	"github.com/raptor-infer/raptor/internal/status"
)

func TestHandleTable(t *testing.T) {
	var tab handleTable
	objA, objB := new(int), new(int)
	a, err := tab.add(kindEngine, objA)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := tab.add(kindModel, objB)

	tests := []struct {
		name string
		h    handle
		k    kind
		want status.Code
	}{
		{"live engine", a, kindEngine, status.OK},
		{"live model", b, kindModel, status.OK},
		{"NULL", 0, kindEngine, status.InvalidHandle},
		{"wrong kind", a, kindModel, status.InvalidHandle},
		{"foreign pointer", handle(0x7ffd12345678), kindEngine, status.InvalidHandle},
		{"tag but slot out of range", handle(handleTag | 1<<32 | 99), kindEngine, status.InvalidHandle},
		{"tag but generation 0", handle(handleTag | uint64(uint32(a))), kindEngine, status.InvalidHandle},
		{"all ones", ^handle(0), kindRequest, status.InvalidHandle},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tab.get(tc.h, tc.k)
			if got := status.CodeOf(err); got != tc.want {
				t.Fatalf("get(%#x, %v) = %v, want %v", tc.h, tc.k, err, tc.want)
			}
			if tc.want != status.OK && err.Error() == "" {
				t.Fatal("empty message")
			}
		})
	}

	if obj, err := tab.remove(a, kindEngine); err != nil || obj != objA {
		t.Fatalf("remove: %v %v", obj, err)
	}
	if _, err := tab.remove(a, kindEngine); status.CodeOf(err) != status.InvalidHandle {
		t.Fatalf("double remove: %v", err)
	}
	// The slot is reused with a new generation: the stale handle stays dead.
	c, _ := tab.add(kindEngine, new(int))
	if c == a || uint32(c) != uint32(a) {
		t.Fatalf("reuse: old %#x new %#x", a, c)
	}
	if _, err := tab.get(a, kindEngine); status.CodeOf(err) != status.InvalidHandle {
		t.Fatalf("stale handle after reuse: %v", err)
	}
	if tab.count() != 2 {
		t.Fatalf("count %d", tab.count())
	}
}

// Concurrent adds, lookups and removes: each handle is removed exactly once.
func TestHandleTableConcurrent(t *testing.T) {
	var tab handleTable
	var wg sync.WaitGroup
	var mu sync.Mutex
	removed := 0
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 2000; i++ {
				h, err := tab.add(kindRequest, i)
				if err != nil {
					t.Error(err)
					return
				}
				if v, err := tab.get(h, kindRequest); err != nil || v.(int) != i {
					t.Errorf("lookup: %v %v", v, err)
				}
				var inner sync.WaitGroup
				for k := 0; k < 2; k++ {
					inner.Add(1)
					go func() {
						defer inner.Done()
						if _, err := tab.remove(h, kindRequest); err == nil {
							mu.Lock()
							removed++
							mu.Unlock()
						}
					}()
				}
				inner.Wait()
			}
		}()
	}
	wg.Wait()
	if removed != 8*2000 || tab.count() != 0 {
		t.Fatalf("removed %d, live %d", removed, tab.count())
	}
}
