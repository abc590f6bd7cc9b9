package engine

import (
	"context"
	"math/rand/v2"
	"testing"

	"github.com/raptor-infer/raptor/internal/status"
	"github.com/raptor-infer/raptor/internal/testmodel"
	"github.com/raptor-infer/raptor/loader"
)

func TestWarmupCPU(t *testing.T) {
	e := newCPUTestEngine(t, "", 1, []int{0, 1}) // two CPU replicas: one batch each
	cfg := tinyConfig(loader.FamilyBERT, 16, 2, false)
	cfg.Pooler = false
	m, err := e.Load(testmodel.Random(cfg, 1, 0.2))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	for _, tc := range []struct {
		name string
		o    WarmupOptions
		code status.Code
	}{
		{"pooled mean", WarmupOptions{Pooled: true, Pooling: PoolMean}, status.OK},
		{"hidden, types and seeds", WarmupOptions{Hidden: true, TokenTypes: true, Seeds: true, MaxTokens: 10}, status.OK},
		{"negative max tokens", WarmupOptions{Pooled: true, MaxTokens: -1}, status.InvalidArgument},
		{"no output", WarmupOptions{TokenTypes: true}, status.InvalidArgument},
		{"pooler without a pooler", WarmupOptions{Pooled: true, Pooling: PoolPooler}, status.InvalidArgument},
		{"unknown pooling", WarmupOptions{Pooled: true, Pooling: 7}, status.InvalidArgument},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, err := m.Warmup(context.Background(), tc.o)
			if got := status.CodeOf(err); got != tc.code {
				t.Fatalf("Warmup: %v (code %v), want code %v", err, got, tc.code)
			}
			if err == nil && (st.Batches != 2 || st.Classes != 0) {
				t.Fatalf("stats %+v, want 2 batches (one per CPU replica), 0 classes", st)
			}
		})
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := m.Warmup(ctx, WarmupOptions{Pooled: true}); status.CodeOf(err) != status.Cancelled {
		t.Fatalf("Warmup with a cancelled context: %v", err)
	}
	m.Close()
	if _, err := m.Warmup(context.Background(), WarmupOptions{Pooled: true}); status.CodeOf(err) != status.InvalidHandle {
		t.Fatalf("Warmup of a closed model: %v", err)
	}
	var nilModel *Model
	if _, err := nilModel.Warmup(context.Background(), WarmupOptions{Pooled: true}); status.CodeOf(err) != status.InvalidHandle {
		t.Fatalf("Warmup of a nil model: %v", err)
	}
}

// TestWarmupDeviceFailure: a device that fails during the warm-up is
// skipped and the others are warmed; with every device failed the warm-up
// answers DeviceFailed.
func TestWarmupDeviceFailure(t *testing.T) {
	e := newCPUTestEngine(t, "", 1, []int{0, 1, 2})
	m, err := e.Load(testmodel.Random(tinyConfig(loader.FamilyBERT, 16, 2, false), 1, 0.2))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	e.SetDeviceFault(1, func() error { return status.Errorf(status.DeviceFailed, "injected") })
	st, err := m.Warmup(context.Background(), WarmupOptions{Pooled: true})
	if err != nil || st.Batches != 2 {
		t.Fatalf("one device failing: %+v, %v; want 2 batches (devices 0 and 2)", st, err)
	}
	for _, i := range []int{0, 2} {
		e.SetDeviceFault(i, func() error { return status.Errorf(status.DeviceFailed, "injected") })
	}
	if st, err := m.Warmup(context.Background(), WarmupOptions{Pooled: true}); status.CodeOf(err) != status.DeviceFailed {
		t.Fatalf("every device failing: %+v, %v; want DeviceFailed", st, err)
	}
}

func TestWarmupBatch(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 1))
	for _, s := range [][2]int{{64, 1}, {72, 5}, {4096, 8}, {100, 100}} {
		b := warmupBatch(rng, s[0], s[1], 30, WarmupOptions{TokenTypes: true, Seeds: true})
		if len(b.Tokens) != s[0] || b.NumSeqs() != s[1] || len(b.TokenTypes) != s[0] || len(b.Seeds) != s[1] {
			t.Fatalf("shape %v: %d tokens, %d sequences, %d types, %d seeds", s, len(b.Tokens), b.NumSeqs(), len(b.TokenTypes), len(b.Seeds))
		}
		lo, hi := s[0], 0
		for i := 0; i < b.NumSeqs(); i++ {
			n := int(b.CuSeqlens[i+1] - b.CuSeqlens[i])
			lo, hi = min(lo, n), max(hi, n)
		}
		if hi-lo > 1 || lo < 1 {
			t.Fatalf("shape %v: sequence lengths %d..%d", s, lo, hi)
		}
		for _, id := range b.Tokens {
			if id < 0 || id >= 30 {
				t.Fatalf("token id %d", id)
			}
		}
	}
}
