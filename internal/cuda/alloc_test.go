package cuda

import (
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/raptor-infer/raptor/internal/status"
)

// fakeRaw is an in-memory raw allocator with a capacity.
type fakeRaw struct {
	capacity, used int64
	next           DevPtr
	sizes          map[DevPtr]int64
	allocs, frees  int
}

func newFakeRaw(capacity int64) *fakeRaw {
	return &fakeRaw{capacity: capacity, next: 1 << 20, sizes: map[DevPtr]int64{}}
}

func (f *fakeRaw) alloc(n int64) (DevPtr, error) {
	if f.used+n > f.capacity {
		return 0, callFailed(status.OutOfMemory, &CallError{Lib: "driver", Call: "cuMemAlloc_v2", Code: errOutOfMemory, Name: "CUDA_ERROR_OUT_OF_MEMORY"})
	}
	p := f.next
	f.next += DevPtr((n + 4095) &^ 4095)
	f.used += n
	f.sizes[p] = n
	f.allocs++
	return p, nil
}

func (f *fakeRaw) free(p DevPtr) error {
	n, ok := f.sizes[p]
	if !ok {
		panic("fakeRaw: double free")
	}
	delete(f.sizes, p)
	f.used -= n
	f.frees++
	return nil
}

func (f *fakeRaw) memInfo() (int64, int64, error) { return f.capacity - f.used, f.capacity, nil }
func (f *fakeRaw) kind() string                   { return "device" }

func TestSizeClass(t *testing.T) {
	prev := int64(0)
	for n := int64(1); n < 1<<34; n = n*5/4 + 1 {
		c := sizeClass(n)
		if c < n {
			t.Fatalf("sizeClass(%d) = %d < n", n, c)
		}
		if c%128 != 0 {
			t.Fatalf("sizeClass(%d) = %d is not a multiple of 128", n, c)
		}
		if n > minClass {
			limit := 1.25
			if n > 1<<28 {
				limit = 1.125
			}
			if float64(c) > float64(n)*limit+1 {
				t.Fatalf("sizeClass(%d) = %d wastes more than %.0f%%", n, c, (limit-1)*100)
			}
		}
		if c < prev {
			t.Fatalf("sizeClass not monotonic at %d", n)
		}
		prev = c
		if sizeClass(c) != c {
			t.Fatalf("sizeClass(%d) = %d is not a fixed point", c, sizeClass(c))
		}
	}
}

func TestPoolWarmNoRawAlloc(t *testing.T) {
	raw := newFakeRaw(1 << 40)
	p := newPool[DevPtr](raw)
	rng := rand.New(rand.NewPCG(1, 2))
	sizes := make([]int64, 200)
	for i := range sizes {
		sizes[i] = 1 + rng.Int64N(64<<20)
	}
	run := func() {
		var live []DevPtr
		for _, n := range sizes {
			b, err := p.alloc(n)
			if err != nil {
				t.Fatal(err)
			}
			if c, _ := p.classOf(b); c < n {
				t.Fatalf("block of class %d for %d bytes", c, n)
			}
			live = append(live, b)
		}
		for _, b := range live {
			if err := p.release(b); err != nil {
				t.Fatal(err)
			}
		}
	}
	run()
	cold := raw.allocs
	if cold == 0 || p.stats.Misses != int64(cold) {
		t.Fatalf("cold run: %d raw allocs, %d misses", cold, p.stats.Misses)
	}
	for i := 0; i < 3; i++ {
		rng.Shuffle(len(sizes), func(i, j int) { sizes[i], sizes[j] = sizes[j], sizes[i] })
		run()
	}
	if raw.allocs != cold {
		t.Fatalf("warm runs made %d raw allocations", raw.allocs-cold)
	}
	if p.stats.InUse != 0 || p.stats.Cached != raw.used {
		t.Fatalf("stats %+v, raw holds %d", p.stats, raw.used)
	}
	if err := p.freeAll(); err != nil {
		t.Fatal(err)
	}
	if raw.used != 0 || len(raw.sizes) != 0 {
		t.Fatalf("freeAll left %d bytes", raw.used)
	}
}

func TestPoolOOMTrimsAndRetries(t *testing.T) {
	raw := newFakeRaw(100 << 20)
	p := newPool[DevPtr](raw)
	a, err := p.alloc(60 << 20)
	if err != nil {
		t.Fatal(err)
	}
	p.release(a) // 60 MiB cached
	b, err := p.alloc(70 << 20)
	if err != nil {
		t.Fatalf("alloc after trim: %v", err)
	}
	if p.stats.Cached != 0 || raw.frees != 1 {
		t.Fatalf("cache not trimmed: %+v", p.stats)
	}
	_, err = p.alloc(50 << 20)
	if status.CodeOf(err) != status.OutOfMemory {
		t.Fatalf("want OutOfMemory, got %v", err)
	}
	msg := err.Error()
	for _, want := range []string{"requested 52428800 bytes", "free of 100.00 MiB", "80.00 MiB in use", "size class 56.00 MiB", "CUDA_ERROR_OUT_OF_MEMORY"} {
		if !strings.Contains(msg, want) {
			t.Errorf("OOM message %q lacks %q", msg, want)
		}
	}
	if p.stats.OOMs != 1 {
		t.Fatalf("OOMs = %d", p.stats.OOMs)
	}
	// Still usable.
	if err := p.release(b); err != nil {
		t.Fatal(err)
	}
	if _, err := p.alloc(90 << 20); err != nil {
		t.Fatalf("pool unusable after OOM: %v", err)
	}
}

func TestPoolBadRelease(t *testing.T) {
	p := newPool[DevPtr](newFakeRaw(1 << 30))
	b, _ := p.alloc(1000)
	if err := p.release(b); err != nil {
		t.Fatal(err)
	}
	if err := p.release(b); status.CodeOf(err) != status.Internal {
		t.Fatalf("double free: %v", err)
	}
	if err := p.release(12345); status.CodeOf(err) != status.Internal {
		t.Fatalf("foreign free: %v", err)
	}
	if _, err := p.alloc(0); status.CodeOf(err) != status.InvalidArgument {
		t.Fatalf("alloc(0): %v", err)
	}
}
